package handoff

// tableflip v1.2.3 builds its errors with errors.New, or with fmt.Errorf
// and %s (only ErrNotSupported is wrapped with %w): they have no type to
// match and no cause to unwrap, so their text is all there is. This
// package starts new generations itself (spawn.go) and makes its own
// typed errors for that; what is left of tableflip's is its New, which
// reads what the previous generation handed over. This file is the one
// place that knows New's texts and turns them into errors callers can
// branch on. contract_test.go drives a real tableflip into every text
// recognised here; a release that rewords one fails that test instead of
// quietly turning a typed error into an unrecognised one.

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cloudflare/tableflip"
)

// ErrSingleton is returned by New when another handoff exists in this
// process: tableflip allows one Upgrader per process, and keeps it for the
// life of the process.
var ErrSingleton = errors.New("handoff: only one may exist per process")

// ErrNotSupported is returned by New on platforms where tableflip cannot
// pass descriptors to a new process (tableflip.ErrNotSupported: Windows).
var ErrNotSupported = errors.New("handoff: hitless upgrades are not supported on this platform")

var (
	// errInProgress: Start was called while another Start ran; nothing
	// was started.
	errInProgress = errors.New("handoff: an upgrade is already in progress")

	// errUnrecognised marks a tableflip error whose text is none of those
	// below: most likely a tableflip release reworded one.
	errUnrecognised = errors.New("handoff: unrecognised tableflip error (not a text of tableflip v1.2.3)")
	// errMarkerWithoutFds: the environment says tableflip started this
	// process, but the descriptors it passes along are not there: the
	// variable was set by hand, or inherited through a program that
	// started this one without them.
	errMarkerWithoutFds = errors.New("handoff: the environment carries tableflip's marker (" + tableflipMarker +
		"=yes), which says a previous generation started this process, but the descriptors that generation passes (3 and 4) are not from one; unset it if this process was not started by an upgrade")
	// errNoWorkingDir: tableflip reads the working directory when the
	// program starts, to start every new generation there, and could not.
	errNoWorkingDir = errors.New("handoff: the working directory could not be read when the program started (was it removed?), and new generations are started in it")
)

// The texts of tableflip.New in v1.2.3 recognised here, with where
// tableflip makes each (file:line in its module).
const (
	// New, a second time in a process (upgrader.go:68).
	tfSingleton = "tableflip: only a single Upgrader allowed"
	// New, when the marker is set but descriptor 4 does not carry the
	// parent's gob-encoded names (parent.go:34); the decoder's error
	// follows.
	tfDecodeNamesPrefix = "can't decode names from parent process: "
	// New, when os.Getwd failed at package initialisation (upgrader.go:80).
	tfNoWorkingDir = "couldn't determine initial working directory"
)

// classifyNew turns an error of tableflip.New into one of ours:
// ErrNotSupported, ErrSingleton, or an error that says in words what went
// wrong (wrapping tableflip's, for its detail). A text it does not know is
// wrapped with errUnrecognised.
func classifyNew(err error) error {
	if err == nil {
		return nil
	}
	// The one error tableflip wraps with %w (upgrader.go:64).
	if errors.Is(err, tableflip.ErrNotSupported) {
		return ErrNotSupported
	}
	msg := err.Error()
	switch {
	case msg == tfSingleton:
		return ErrSingleton
	case strings.HasPrefix(msg, tfDecodeNamesPrefix):
		return fmt.Errorf("%w: %w", errMarkerWithoutFds, err)
	case msg == tfNoWorkingDir:
		return fmt.Errorf("%w: %w", errNoWorkingDir, err)
	}
	return fmt.Errorf("%w, from New: %w", errUnrecognised, err)
}

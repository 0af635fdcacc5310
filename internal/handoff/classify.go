package handoff

// tableflip v1.2.3 builds its errors with errors.New, or with fmt.Errorf
// and %s (only ErrNotSupported is wrapped with %w): they have no type to
// match and no cause to unwrap, so their text is all there is. This file
// is the one place that knows those texts and turns them into errors
// callers can branch on. contract_test.go drives a real tableflip into
// every text recognised here; a release that rewords one fails that test
// instead of quietly turning a typed error into an unrecognised one (and,
// for the loop above this package, a child failure into something it does
// not count, or a retryable refusal into a final one).

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/hitlessgo/hitless/control"
)

// ErrSingleton is returned by New when another handoff exists in this
// process: tableflip allows one Upgrader per process, and keeps it for the
// life of the process.
var ErrSingleton = errors.New("handoff: only one may exist per process")

// ErrNotSupported is returned by New on platforms where tableflip cannot
// pass descriptors to a new process (tableflip.ErrNotSupported: Windows).
var ErrNotSupported = errors.New("handoff: hitless upgrades are not supported on this platform")

var (
	// errParentNotExited: tableflip refuses an upgrade until its own loop
	// has noticed the previous generation exit, which it does a moment
	// after WaitForParent has returned. Nothing was started, so asking
	// again shortly is not a retry of a failed upgrade.
	errParentNotExited = errors.New("handoff: tableflip has not yet seen the previous generation exit; nothing was started")
	// errInProgress: another Upgrade was running; nothing was started.
	errInProgress = errors.New("handoff: an upgrade is already in progress")

	// errUnrecognised marks a tableflip error whose text is none of those
	// below: most likely a tableflip release reworded one. It is never a
	// *control.ChildError, so that such a change shows instead of being
	// taken for a failed child.
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

// The texts of tableflip v1.2.3 recognised here, with where tableflip
// makes each (file:line in its module).
const (
	// New, a second time in a process (upgrader.go:68).
	tfSingleton = "tableflip: only a single Upgrader allowed"
	// New, when the marker is set but descriptor 4 does not carry the
	// parent's gob-encoded names (parent.go:34); the decoder's error
	// follows.
	tfDecodeNamesPrefix = "can't decode names from parent process: "
	// New, when os.Getwd failed at package initialisation (upgrader.go:80).
	tfNoWorkingDir = "couldn't determine initial working directory"

	// Upgrade after Stop (upgrader.go:186), or Stop while an upgrade
	// waits for its child (upgrader.go:267).
	tfTerminating = "terminating"
	// Upgrade after a successful one (upgrader.go:188).
	tfUpgraded = "already upgraded"
	// Upgrade before Ready (upgrader.go:195).
	tfNotReady = "process is not ready yet"
	// Upgrade before tableflip's loop has seen the parent exit
	// (upgrader.go:228).
	tfParentNotExited = "parent hasn't exited"
	// Upgrade while another one runs (upgrader.go:257).
	tfInProgress = "upgrade in progress"
	// Upgrade, when the child could not be started (upgrader.go:250); the
	// cause follows: "pipe failed: …" (child.go:23, 30), or "can't start
	// process <argv0>: …" (child.go:59) with exec.LookPath's error,
	// "fork/exec: …" or "find pid …" (process.go:48, 56).
	tfStartFailedPrefix = "can't start child: "
)

var (
	// "child pid=N exited" when the child exited with status 0
	// (upgrader.go:261), "child pid=N exited: <how>" otherwise
	// (upgrader.go:263). "pid=N" is the child's String (process.go:81);
	// <how> is the error of its Wait (child.go:90, process.go:62-77),
	// normally an *exec.ExitError, which says what os.ProcessState.String
	// says.
	tfChildExited = regexp.MustCompile(`^child pid=([0-9]+) exited(: .*)?$`)
	// The child was not ready within UpgradeTimeout and was sent SIGKILL
	// (upgrader.go:271).
	tfTimedOut = regexp.MustCompile(`^new child pid=([0-9]+) timed out$`)
	// os.ProcessState.String for an exit (os/exec_posix.go).
	exitStatusText = regexp.MustCompile(`^exit status ([0-9]+)$`)
)

const (
	// What os.ProcessState.String says for a signal: "signal: " and the
	// signal's String ("killed", "segmentation fault"), and " (core
	// dumped)" when a core was written.
	signalPrefix   = "signal: "
	coreDumpSuffix = " (core dumped)"
	// maxSignal bounds the search for a signal by its text; 128 covers
	// the real-time signals of every Unix (Linux on MIPS goes up to 127).
	maxSignal = 128
)

// classifyNew turns an error of tableflip.New into one of ours:
// ErrNotSupported, ErrSingleton, or an error that says in words what went
// wrong (wrapping tableflip's, for its detail).
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

// classify turns an error of (*tableflip.Upgrader).Upgrade into one of
// ours. timeout is the UpgradeTimeout tableflip was given, which its text
// does not repeat.
//
// It returns nil for nil; control.ErrStopped, control.ErrUpgraded and
// control.ErrNotReady for refusals callers act on; errParentNotExited and
// errInProgress for refusals this package handles; a *control.ChildError
// when a new generation was attempted and failed (it is gone by then); and
// otherwise an error wrapping errUnrecognised and tableflip's error, which
// is never a *control.ChildError.
func classify(err error, timeout time.Duration) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch msg {
	case tfTerminating:
		return control.ErrStopped
	case tfUpgraded:
		return control.ErrUpgraded
	case tfNotReady:
		return control.ErrNotReady
	case tfParentNotExited:
		return errParentNotExited
	case tfInProgress:
		return errInProgress
	}
	if rest, ok := strings.CutPrefix(msg, tfStartFailedPrefix); ok && rest != "" {
		// The cause's type is lost to %s; its text is kept.
		return &control.ChildError{Reason: control.ReasonStartFailed, Err: errors.New(rest)}
	}
	if m := tfTimedOut.FindStringSubmatch(msg); m != nil {
		if pid, ok := parsePID(m[1]); ok {
			return &control.ChildError{Reason: control.ReasonTimedOut, PID: pid, Timeout: timeout}
		}
	}
	if m := tfChildExited.FindStringSubmatch(msg); m != nil {
		if ce := childExited(m[1], strings.TrimPrefix(m[2], ": "), m[2] == ""); ce != nil {
			return ce
		}
	}
	return fmt.Errorf("%w: %w", errUnrecognised, err)
}

// childExited makes the error of a child that exited before it was ready:
// clean (status 0), with a status, or killed by a signal. It returns nil
// when how is none of those (a Wait that failed, say), so that the text
// counts as unrecognised.
func childExited(pidText, how string, clean bool) *control.ChildError {
	pid, ok := parsePID(pidText)
	if !ok {
		return nil
	}
	if clean {
		return &control.ChildError{Reason: control.ReasonExited, PID: pid}
	}
	if m := exitStatusText.FindStringSubmatch(how); m != nil {
		status, err := strconv.Atoi(m[1])
		if err != nil {
			return nil
		}
		return &control.ChildError{Reason: control.ReasonExited, PID: pid, ExitStatus: status}
	}
	if name, ok := strings.CutPrefix(how, signalPrefix); ok {
		if sig, ok := signalNamed(strings.TrimSuffix(name, coreDumpSuffix)); ok {
			return &control.ChildError{Reason: control.ReasonCrashed, PID: pid, Signal: sig}
		}
	}
	return nil
}

func parsePID(s string) (int, bool) {
	pid, err := strconv.Atoi(s)
	return pid, err == nil && pid > 0
}

// signalNamed returns the signal whose String is name: os.ProcessState
// prints a signal's description ("killed"), not its name (SIGKILL), and
// "signal N" for one without a description.
func signalNamed(name string) (syscall.Signal, bool) {
	for s := syscall.Signal(1); s <= maxSignal; s++ {
		if s.String() == name {
			return s, true
		}
	}
	return 0, false
}

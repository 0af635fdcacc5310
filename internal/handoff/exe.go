package handoff

// Rollback: every generation keeps its own executable open, and hands it
// to the generation it starts, which can then start it again even after
// the deploy replaced (or removed) the file at os.Args[0]. The kernel
// runs an open file through /proc/self/fd/N.

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hitlessgo/hitless/control"
)

// ErrNoRollback matches the error of a rollback that cannot be made; the
// error says why.
var ErrNoRollback = control.ErrNoRollback

// previousExeName is the name under which a generation hands its own
// executable to the next one (with its build in the message).
const previousExeName = "hitless.previous-exe"

// executable is a binary held open.
type executable struct {
	f     *os.File
	build string
	size  int64
	mtime time.Time
}

// openSelf opens the executable this process runs, or returns why it
// cannot be kept (no /proc, or a script, which the kernel cannot start
// from a descriptor closed on exec: its interpreter opens the path).
func openSelf(build string) (*executable, error) {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("this process's executable cannot be kept open: %w", err)
	}
	e, err := newExecutable(f, build)
	if err != nil {
		f.Close()
		return nil, err
	}
	return e, nil
}

func newExecutable(f *os.File, build string) (*executable, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("the executable is not a regular file")
	}
	var magic [2]byte
	if n, _ := f.ReadAt(magic[:], 0); n == 2 && string(magic[:]) == "#!" {
		return nil, errors.New("the executable is a script, which cannot be started again from an open file")
	}
	return &executable{f: f, build: build, size: fi.Size(), mtime: fi.ModTime()}, nil
}

// check says whether e is still the file it was: a deploy that wrote a
// new binary into the same file (instead of replacing it) changed what
// would run.
func (e *executable) check() error {
	fi, err := e.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != e.size || !fi.ModTime().Equal(e.mtime) {
		return fmt.Errorf("the previous executable (build %q) was overwritten in place since it ran (size %d → %d, modified %s): what would run is not that build",
			e.build, e.size, fi.Size(), fi.ModTime().Format(time.RFC3339))
	}
	return nil
}

func (e *executable) close() {
	if e != nil {
		e.f.Close()
	}
}

// execPath returns a path that runs e in a process about to be started,
// and a function that releases it afterwards. The descriptor is copied
// above every descriptor the new process is given (minFD), so that
// setting those up before the exec does not overwrite it; it is closed on
// exec, after the kernel has opened the file.
func (e *executable) execPath(minFD int) (string, func(), error) {
	f, err := dupAbove(e.f, minFD)
	if err != nil {
		return "", nil, fmt.Errorf("copying the previous executable's descriptor: %w", err)
	}
	var fd int
	ctl(f, func(d int) { fd = d })
	return "/proc/self/fd/" + strconv.Itoa(fd), func() { f.Close() }, nil
}

// PreviousBuild is the build of the executable a rollback would start
// (the generation before this one), and false if there is none.
func (h *Handoff) PreviousBuild() (string, bool) {
	if h.previous == nil {
		return "", false
	}
	return h.previous.build, true
}

// noRollback says why a rollback cannot be made.
func (h *Handoff) noRollback() error {
	switch {
	case h.previousErr != nil:
		return fmt.Errorf("%w: %w", ErrNoRollback, h.previousErr)
	case !h.HasParent():
		return fmt.Errorf("%w: this is the first generation", ErrNoRollback)
	case h.rolledBack:
		return fmt.Errorf("%w: this generation was started by a rollback, and nothing older is kept", ErrNoRollback)
	case h.ho.peer < 3:
		return fmt.Errorf("%w: the previous generation (handoff version %d) did not hand its executable over", ErrNoRollback, h.ho.peer)
	}
	return fmt.Errorf("%w: the previous generation handed no executable over (it could not keep its own)", ErrNoRollback)
}

package upgrade

import (
	"fmt"
	"io"
	"os"
	"time"
)

// OfferFile hands f to every later generation under name, which takes it
// with File. The Upgrader keeps its own copy of the descriptor (until
// Stop, or the end of Run), so the caller may close f at once.
//
// The new generation gets the same open file, not a file opened anew: its
// offset, its flags and, for a memfd, its contents are shared with this
// generation, which goes on using its copy while it drains. That is what
// an open log file or a counter mapped from a memfd needs. A file the new
// generation does not take by Ready is closed there.
//
// name is 1 to 64 of A-Z a-z 0-9 . _ - and is shared with OfferState; a
// name offered already fails with ErrNameTaken. A generation that took a
// file offers it again if the generation after it should have it too.
func (u *Upgrader) OfferFile(name string, f *os.File) error {
	if err := u.h.OfferFile(name, f); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	return nil
}

// OfferState hands the bytes snapshot returns to every later generation
// under name, which takes them with State. snapshot is called at the start
// of each upgrade, before the new process is started (from the goroutine
// that carries out the upgrade, while this generation serves on); if it
// fails, returns more than Options.StateLimit bytes, or takes longer than
// Options.UpgradeTimeout, that upgrade fails with a ChildError that names
// the state (nothing is started), and this generation serves on.
//
// The snapshot is a copy: whatever this generation changes after it, while
// it drains, the new generation does not see. State that both must keep
// changing, such as a counter, belongs in a memory file (memfd) both map,
// handed over with OfferFile.
//
// Names are shared with OfferFile (ErrNameTaken).
func (u *Upgrader) OfferState(name string, snapshot func() ([]byte, error)) error {
	if snapshot == nil {
		return fmt.Errorf("upgrade: state %q: nil snapshot function", name)
	}
	limit, timeout := u.opts.StateLimit, u.opts.UpgradeTimeout
	checked := func() ([]byte, error) {
		// A snapshot stuck on a lock would hold up this upgrade, every
		// later one and Stop: it gets as long as a new generation has to
		// become ready, and is left behind after that.
		type result struct {
			b   []byte
			err error
		}
		done := make(chan result, 1)
		go func() {
			b, err := snapshot()
			done <- result{b, err}
		}()
		t := time.NewTimer(timeout)
		defer t.Stop()
		var b []byte
		select {
		case r := <-done:
			if r.err != nil {
				return nil, fmt.Errorf("its snapshot failed: %w", r.err)
			}
			b = r.b
		case <-t.C:
			return nil, fmt.Errorf("its snapshot did not return within %v (Options.UpgradeTimeout)", timeout)
		case <-u.exitC():
			return nil, fmt.Errorf("its snapshot was abandoned: %w", ErrStopped)
		}
		if len(b) > limit {
			return nil, &stateSizeError{size: int64(len(b)), limit: limit, where: "the snapshot"}
		}
		return b, nil
	}
	if err := u.h.OfferState(name, checked); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	return nil
}

// File returns the file the previous generation offered under name
// (OfferFile). It is the caller's to close. It can be taken once, any time
// from New until Ready: what is not taken by then is closed. Without such
// a file (no previous generation, or one that offered none under name, or
// that runs a release of hitless without the handover) the error matches
// ErrNotHandedOver and says which.
func (u *Upgrader) File(name string) (*os.File, error) {
	f, err := u.h.TakeFile(name)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	return f, nil
}

// State returns the bytes the previous generation's snapshot returned for
// name (OfferState), taken at the start of the upgrade that started this
// generation. Like File, it can be taken once, from New until Ready, and
// fails with ErrNotHandedOver if there is none. A state larger than this
// generation's Options.StateLimit is refused with ErrStateTooLarge before
// a byte of it is read.
func (u *Upgrader) State(name string) ([]byte, error) {
	f, size, err := u.h.TakeState(name)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	defer f.Close()
	fail := func(err error) ([]byte, error) {
		return nil, fmt.Errorf("upgrade: state %q: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if fi.Size() > int64(u.opts.StateLimit) {
		return fail(&stateSizeError{size: fi.Size(), limit: u.opts.StateLimit, where: "what was handed over"})
	}
	if fi.Size() != size {
		return fail(fmt.Errorf("the file holding it has %d bytes, the previous generation sent %d", fi.Size(), size))
	}
	b := make([]byte, size)
	// ReadAt: the file's offset is wherever the writer left it.
	if _, err := f.ReadAt(b, 0); err != nil && !(err == io.EOF && size == 0) {
		return fail(fmt.Errorf("reading it: %w", err))
	}
	return b, nil
}

// stateSizeError is a state over Options.StateLimit.
type stateSizeError struct {
	size  int64
	limit int
	where string
}

func (e *stateSizeError) Error() string {
	return fmt.Sprintf("%s is %d bytes, over the limit of %d (Options.StateLimit)", e.where, e.size, e.limit)
}

func (e *stateSizeError) Is(target error) bool { return target == ErrStateTooLarge }

package handoff

import (
	"os"

	"golang.org/x/sys/unix"
)

// newStateFile returns a memory file (memfd) holding b, sealed against any
// change: the new generation checks its size before it reads, and what it
// reads is what was checked.
func newStateFile(name string, b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("hitless-state-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "state "+name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	// Sealing is a courtesy to the reader, not something to fail the
	// upgrade over (a kernel or seccomp filter may refuse it).
	unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL)
	return f, nil
}

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// newCounterFile returns a memory file of size bytes, all zero: it lives as
// long as some process has it open or mapped, and never touches a disk.
func newCounterFile(size int64) (*os.File, error) {
	fd, err := unix.MemfdCreate("stateful-counter", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "counter")
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

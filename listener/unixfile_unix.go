//go:build unix

package listener

import (
	"os"
	"syscall"
)

// unixFile identifies the file of a unix socket by device and inode, so that
// Unlink never removes a file another process created at the same path.
type unixFile struct{ dev, ino uint64 }

func statUnixFile(path string) *unixFile {
	if isAbstract(path) {
		return nil
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &unixFile{dev: uint64(st.Dev), ino: uint64(st.Ino)}
}

func (f *unixFile) stillThere(path string) bool {
	now := statUnixFile(path)
	return now != nil && *now == *f
}

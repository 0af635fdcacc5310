//go:build unix

package listener

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// fdNotOpen is what fdKind says of a descriptor number that is not open.
const fdNotOpen = "not open"

// fdKind reports whether fd is an open socket, as sd_is_socket(3) does
// (fstat and S_ISSOCK), and otherwise what it is, in words, with the path
// the kernel gives for it where there is one (/proc/self/fd on Linux).
func fdKind(fd int) (socket bool, what string) {
	var st syscall.Stat_t
	err := syscall.Fstat(fd, &st)
	if err == syscall.EBADF {
		return false, fdNotOpen
	}
	if err != nil {
		return false, fmt.Sprintf("not examinable (fstat: %v)", err)
	}
	switch uint32(st.Mode) & syscall.S_IFMT {
	case syscall.S_IFSOCK:
		return true, "a socket"
	case syscall.S_IFREG:
		what = "a regular file"
	case syscall.S_IFDIR:
		what = "a directory"
	case syscall.S_IFCHR:
		what = "a character device"
	case syscall.S_IFBLK:
		what = "a block device"
	case syscall.S_IFIFO:
		what = "a pipe or FIFO"
	case syscall.S_IFLNK:
		what = "a symbolic link"
	default:
		// epoll, eventfd, signalfd, timerfd, pidfd: anonymous inodes.
		what = "a descriptor of no file type"
	}
	if path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err == nil {
		what += " (" + path + ")"
	}
	return false, what
}

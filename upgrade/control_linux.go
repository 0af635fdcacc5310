package upgrade

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// chmodSocket changes the mode of the inode at path if it is want. It
// pins that inode with an O_PATH descriptor (which opens a symbolic link
// itself, never its target), compares it, and changes the mode through
// the descriptor, so that nothing put at the path meanwhile is touched.
func chmodSocket(path string, want socketID, mode uint32) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("control socket %s: %w: %v", path, errSocketReplaced, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if got, err := socketIDOf(path, &st); err != nil || got != want {
		if err == nil {
			err = fmt.Errorf("%s is another socket (device %d, inode %d)", path, got.dev, got.ino)
		}
		return fmt.Errorf("control socket %s: %w: %v", path, errSocketReplaced, err)
	}
	// fchmodat2 with AT_EMPTY_PATH (Linux 6.6) changes the descriptor's
	// inode; before it, the descriptor's /proc magic link leads to that
	// same inode (not to a path). fchmod would not do: on a socket's
	// descriptor it changes the socket, not its file.
	err = unix.Fchmodat(fd, "", mode, unix.AT_EMPTY_PATH)
	if err != nil {
		if perr := unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), mode, 0); perr != nil {
			return fmt.Errorf("control socket %s: chmod: %w (through /proc: %v)", path, err, perr)
		}
	}
	return nil
}

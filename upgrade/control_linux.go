package upgrade

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// statSocket identifies the socket file at path, without following a
// symbolic link, if it is a socket owned by this process's user.
func statSocket(path string) (socketID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return socketID{}, err
	}
	return socketIDOf(path, &st)
}

func socketIDOf(path string, st *unix.Stat_t) (socketID, error) {
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return socketID{}, fmt.Errorf("%s is not a socket (mode %#o)", path, st.Mode)
	}
	id := socketID{dev: uint64(st.Dev), ino: uint64(st.Ino), uid: int(st.Uid)}
	if me := os.Geteuid(); id.uid != me {
		return socketID{}, fmt.Errorf("%s is owned by uid %d, not by this process's uid %d", path, id.uid, me)
	}
	return id, nil
}

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

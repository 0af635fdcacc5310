//go:build unix && !linux

package upgrade

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// statSocket identifies the socket file at path, without following a
// symbolic link, if it is a socket owned by this process's user.
func statSocket(path string) (socketID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return socketID{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return socketID{}, fmt.Errorf("%s is not a socket (mode %#o)", path, st.Mode)
	}
	id := socketID{dev: uint64(st.Dev), ino: uint64(st.Ino), uid: int(st.Uid)}
	if me := os.Geteuid(); id.uid != me {
		return socketID{}, fmt.Errorf("%s is owned by uid %d, not by this process's uid %d", path, id.uid, me)
	}
	return id, nil
}

// chmodSocket changes the mode of the file at path if it is want, never
// following a symbolic link (fchmodat with AT_SYMLINK_NOFOLLOW, which
// these systems have). Without Linux's O_PATH there is no way to pin the
// inode: between the second look and the change the path could still be
// swapped for a hard link to another socket file of this user; a
// symbolic link to a victim is never followed.
func chmodSocket(path string, want socketID, mode uint32) error {
	got, err := statSocket(path)
	if err == nil && got != want {
		err = fmt.Errorf("%s is another socket (device %d, inode %d)", path, got.dev, got.ino)
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w: %v", path, errSocketReplaced, err)
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, path, mode, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("control socket %s: chmod: %w", path, err)
	}
	return nil
}

//go:build unix && !linux

package upgrade

import (
	"fmt"

	"golang.org/x/sys/unix"
)

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

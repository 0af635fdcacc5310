//go:build unix

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

//go:build unix

package drain

import (
	"net"
	"os"
	"syscall"
)

// sendNow sends msg as one record without waiting: a previous generation
// too slow to take it loses it (QUIC sends it again), rather than holding
// up the reads of the generation that serves.
func sendNow(c *net.UnixConn, msg []byte) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = syscall.Sendmsg(int(fd), msg, nil, nil, syscall.MSG_DONTWAIT)
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

func setsockoptInt(fd uintptr, opt, value int) error {
	return os.NewSyscallError("setsockopt", syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, value))
}

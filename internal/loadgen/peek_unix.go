//go:build unix

package loadgen

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// PeerClosed reports whether the peer has closed c or sent bytes nobody
// asked for, without blocking. It peeks with recv(MSG_PEEK|MSG_DONTWAIT)
// on the raw fd, under Control: a Read with an expired deadline would not
// do, since Go returns the timeout before making the system call, and
// Control does not take the conn's read lock, so it also works while
// another goroutine is blocked reading c.
func PeerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var b [1]byte
	rc.Control(func(fd uintptr) {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// EAGAIN (which EWOULDBLOCK equals on every unix Go supports)
		// means nothing to read: the connection looks alive. Anything
		// else is a reset (an error), a FIN (0 bytes), or unsolicited
		// bytes (a server that says something, such as 408, before it
		// closes): the connection is not fit for a new request.
		closed = err != unix.EAGAIN && err != unix.EINTR
	})
	return closed
}

//go:build unix

package main

import (
	"net"
	"syscall"
)

// pending reports whether c's socket holds bytes not read yet, without
// blocking and without taking c's read lock (another goroutine is blocked
// reading it): recv(MSG_PEEK|MSG_DONTWAIT) on the raw fd, under Control.
// A FIN or a reset counts too: something has arrived.
func pending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	arrived := false
	var b [1]byte
	rc.Control(func(fd uintptr) {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		arrived = err != syscall.EAGAIN && err != syscall.EINTR
	})
	return arrived
}

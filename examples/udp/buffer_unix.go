//go:build unix

package main

import (
	"errors"
	"net"
	"syscall"
)

// setReadBuffer sets SO_RCVBUF on the socket under pc: the gate that
// upgrade.ListenPacket returns is not a *net.UDPConn, but it exposes the
// socket through syscall.Conn. The socket is shared by the generations, so
// each setting it again changes nothing.
func setReadBuffer(pc net.PacketConn, bytes int) error {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return errors.New("the conn does not expose its socket (syscall.Conn)")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, bytes)
	}); err != nil {
		return err
	}
	return serr
}

//go:build unix

package upgrade

import (
	"os"
	"syscall"
)

// channelBuffer is what the channel between two generations' Routers asks
// the kernel to buffer: a burst of a few hundred full-size QUIC packets
// for a draining generation busy elsewhere.
const channelBuffer = 1 << 20

// seqpacketPair returns a connected pair of unix SOCK_SEQPACKET sockets,
// close-on-exec: the handover passes one on explicitly.
func seqpacketPair() (ours, theirs *os.File, err error) {
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	for _, fd := range fds {
		// Best effort: the kernel caps it at net.core.wmem_max.
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, channelBuffer)
	}
	return os.NewFile(uintptr(fds[0]), "router-channel"), os.NewFile(uintptr(fds[1]), "router-channel"), nil
}

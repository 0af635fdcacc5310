package listener

import (
	"context"
	"fmt"
	"net"
)

// ListenPacket returns the datagram socket named name, bound to addr on
// network ("udp", "udp4", "udp6" or "unixgram"), exactly as Listen
// provides a listener: inherited from the previous generation if it handed
// one over under that name bound to the same address, else the one systemd
// passed under that name (ListenDatagram=, or the fd store) bound there,
// else bound anew. Names are shared with Listen: a name is a stream or a
// datagram socket, not both (ErrDuplicateName). Addresses compare as they
// do for Listen ("localhost:5353" is "127.0.0.1:5353"), and a unixgram
// path follows the same unlink discipline as a unix one: a stale file is
// removed at a cold start only if no socket is bound there, a live one is
// never taken (ErrLiveSocket), a file that is not a socket is left alone
// (ErrNotSocket), and only Unlink removes the file. Errors are of type
// *Error.
//
// Both generations hold the same socket while they overlap, and the
// kernel gives each datagram to whichever reads first: share only
// protocols whose datagrams stand alone (a DNS query, a syslog line), not
// ones whose packets belong to a connection one generation holds (QUIC).
//
// ctx bounds only the binding of a new socket.
func (s *Set) ListenPacket(ctx context.Context, name, network, addr string) (net.PacketConn, error) {
	if !datagram(network) {
		return nil, &Error{Name: name, Network: network, Addr: addr,
			Err: fmt.Errorf("%w %q for ListenPacket: want udp, udp4, udp6 or unixgram (for tcp, tcp4, tcp6 and unix, use Listen)", ErrUnsupportedNetwork, network)}
	}
	e, err := s.provide(ctx, name, network, addr)
	if err != nil {
		return nil, err
	}
	return e.pc, nil
}

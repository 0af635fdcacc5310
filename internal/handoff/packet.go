package handoff

import (
	"fmt"
	"net"

	"syscall"
)

// PacketConn returns the datagram socket the previous generation handed
// over under name, or nil.
//
// Datagram sockets are keyed by name under listenerNetwork, like
// listeners (tableflip keeps the two kinds apart). Keyed "unixgram" with
// the path, tableflip would remove the socket's file when a generation
// does not take it or stops without an upgrade (fds.go, isUnix), which is
// for Set.Unlink alone to decide.
func (h *Handoff) PacketConn(name string) (net.PacketConn, error) {
	if h.isTakenBack() {
		f := h.res.get(packetKey(name))
		if f == nil {
			return nil, nil
		}
		return filePacketConn(f)
	}
	pc, err := h.tf.Fds.PacketConn(listenerNetwork, name)
	if pc == nil || err != nil {
		return pc, err
	}
	if err := h.AddPacketConn(name, pc); err != nil {
		pc.Close()
		return nil, err
	}
	return pc, nil
}

// AddPacketConn hands pc to the next generation under name.
func (h *Handoff) AddPacketConn(name string, pc net.PacketConn) error {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return fmt.Errorf("handoff: %T has no descriptor to hand over", pc)
	}
	return h.res.keep(packetKey(name), sc)
}

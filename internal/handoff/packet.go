package handoff

import (
	"fmt"
	"net"

	"github.com/cloudflare/tableflip"
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
	return h.tf.Fds.PacketConn(listenerNetwork, name)
}

// AddPacketConn hands pc to the next generation under name.
func (h *Handoff) AddPacketConn(name string, pc net.PacketConn) error {
	tc, ok := pc.(tableflip.PacketConn)
	if !ok {
		return fmt.Errorf("handoff: %T has no descriptor to hand over", pc)
	}
	return h.tf.Fds.AddPacketConn(listenerNetwork, name, tc)
}

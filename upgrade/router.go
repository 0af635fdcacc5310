package upgrade

import (
	"context"
	"errors"
	"fmt"

	"github.com/hitlessgo/hitless/drain"
)

// ListenRouted is ListenPacket for a protocol that keeps connections over
// a datagram socket, such as QUIC: it returns the socket named name (on
// "udp", "udp4" or "udp6") as a drain.Router, which passes each datagram
// to the generation that owns its connection, as classify says (see
// drain.Router). The Router is connected to the previous generation's, if
// that one routed the same name, and offers a channel to the next
// generation's (a file named "hitless.router.<name>": see OfferFile, whose
// name rules apply). Pass it to Run as a Drainer, after setting its
// Shutdown.
//
// ReadFrom on the Router returns nothing until this generation is ready
// and the previous one has handed the socket over, which it does when its
// drain begins; until then the previous generation reads every datagram
// and passes on none.
func (u *Upgrader) ListenRouted(ctx context.Context, name, network, addr string, classify func(datagram []byte) drain.Route) (*drain.Router, error) {
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("upgrade: routed socket %q: network %q is not one of udp, udp4, udp6", name, network)
	}
	key := "hitless.router." + name
	pc, err := u.ListenPacket(ctx, name, network, addr)
	if err != nil {
		return nil, err
	}
	pred, err := u.File(key)
	if err != nil && !errors.Is(err, ErrNotHandedOver) {
		pc.Close()
		return nil, err
	}
	ours, theirs, err := seqpacketPair()
	if err != nil {
		pc.Close()
		if pred != nil {
			pred.Close()
		}
		return nil, fmt.Errorf("upgrade: routed socket %q: %w", name, err)
	}
	err = u.OfferFile(key, theirs)
	theirs.Close()
	if err != nil {
		pc.Close()
		ours.Close()
		if pred != nil {
			pred.Close()
		}
		return nil, err
	}
	return drain.NewRouter(pc, classify, drain.RouterOptions{
		Name: name, Predecessor: pred, Successor: ours, HandedOver: u.upgraded.Load,
	})
}

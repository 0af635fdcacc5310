package upgrade

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// ListenPacket is Listen for datagram sockets: it returns the socket named
// name on network "udp", "udp4", "udp6" or "unixgram", inherited from the
// previous generation if it handed one over for the same address, taken
// from systemd (ListenDatagram=, or the fd store), or bound anew. See
// listener.Set.ListenPacket for the details and errors; names are shared
// with Listen.
//
// ReadFrom on the returned conn blocks until Ready has told the previous
// generation that this one takes over (the same gate as Accept's), so that
// a generation that fails before that never reads a datagram: they wait in
// the socket's receive buffer meanwhile, and the previous generation,
// which reads the same socket, answers them. ReadFrom honours Close (it
// returns an error wrapping net.ErrClosed) and a read deadline set on the
// conn (an error wrapping os.ErrDeadlineExceeded) while it waits. WriteTo
// is not held. The conn implements syscall.Conn. With Options.FDStore it
// is also put in systemd's fd store under its name, like listeners.
func (u *Upgrader) ListenPacket(ctx context.Context, name, network, addr string) (net.PacketConn, error) {
	pc, err := u.listeners.ListenPacket(ctx, name, network, addr)
	if err != nil {
		return nil, err
	}
	u.record(name, pc)
	sc, _ := pc.(syscall.Conn)
	return &gatedPacketConn{
		PacketConn: pc, sc: sc, ready: u.readyC,
		closed: make(chan struct{}), moved: make(chan struct{}),
	}, nil
}

// gatedPacketConn holds ReadFrom until the generation is ready, for the
// reason gatedListener holds Accept: a datagram read by a generation that
// then dies unready is lost with it, while one left in the socket's
// receive buffer is read by the previous generation.
type gatedPacketConn struct {
	net.PacketConn
	sc        syscall.Conn // the socket's, or nil
	ready     <-chan struct{}
	closed    chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	deadline time.Time     // read deadline set on the conn; zero: none
	moved    chan struct{} // closed and replaced when deadline changes
}

func (c *gatedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		open, err := c.wait()
		if err != nil {
			return 0, nil, err
		}
		if open {
			return c.PacketConn.ReadFrom(p)
		}
	}
}

// wait waits until the gate opens (true), the conn is closed or its read
// deadline passes (an error, as a read would give it), or the deadline is
// changed (false, nil: look again).
func (c *gatedPacketConn) wait() (bool, error) {
	select {
	case <-c.ready:
		// Past the gate, the socket itself applies Close and deadlines.
		return true, nil
	default:
	}
	c.mu.Lock()
	deadline, moved := c.deadline, c.moved
	c.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() {
		left := time.Until(deadline)
		if left <= 0 {
			return false, c.readError(os.ErrDeadlineExceeded)
		}
		t := time.NewTimer(left)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-c.ready:
		return true, nil
	case <-c.closed:
		return false, c.readError(net.ErrClosed)
	case <-expired:
		return false, c.readError(os.ErrDeadlineExceeded)
	case <-moved:
		return false, nil
	}
}

func (c *gatedPacketConn) readError(err error) error {
	op := &net.OpError{Op: "read", Err: err}
	if a := c.LocalAddr(); a != nil {
		op.Net, op.Addr = a.Network(), a
	}
	return op
}

func (c *gatedPacketConn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	c.deadline = t
	close(c.moved)
	c.moved = make(chan struct{})
	c.mu.Unlock()
}

func (c *gatedPacketConn) SetReadDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.PacketConn.SetReadDeadline(t)
}

func (c *gatedPacketConn) SetDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.PacketConn.SetDeadline(t)
}

func (c *gatedPacketConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.PacketConn.Close()
}

// SyscallConn gives the socket's descriptor, for the fd store and for
// socket options; reading through it is not held by the gate.
func (c *gatedPacketConn) SyscallConn() (syscall.RawConn, error) {
	if c.sc == nil {
		return nil, errors.New("upgrade: this datagram socket has no descriptor")
	}
	return c.sc.SyscallConn()
}

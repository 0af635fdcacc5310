package drain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	_ Drainer        = (*Packet)(nil)
	_ net.PacketConn = (*Packet)(nil)
	_ syscall.Conn   = (*Packet)(nil)
)

// DefaultMaxInFlight is the default for Packet.MaxInFlight.
const DefaultMaxInFlight = 1024

// maxDatagram is the size of Serve's read buffer: the largest UDP payload
// fits (65,507 bytes over IPv4, 65,527 over IPv6).
const maxDatagram = 64 << 10

// shutdownGrace is how long Drain waits past the deadline for a
// Packet.Shutdown that has not returned yet: a library's shutdown should
// return as soon as its ctx is done, and the socket is closed by then, so
// a longer wait would only hide a library that hangs. A variable for the
// tests.
var shutdownGrace = time.Second

// aLongTimeAgo is a read deadline that has passed for sure: setting it
// ends a read in progress at once and fails every later one.
var aLongTimeAgo = time.Unix(1, 0)

// errStopped tells Serve and ReadFrom that Drain has stopped reading. It
// never leaves the package.
var errStopped = errors.New("drain: reading stopped")

// Packet serves and drains one datagram socket (UDP or unixgram) shared
// with the other generation. During an upgrade both generations hold the
// same socket, each through its own descriptor, and each datagram reaches
// whichever of them reads it first. Draining therefore means: stop reading
// without closing (the next generation goes on reading the same socket, so
// no datagram waits for a reader that will never come), let the handlers of
// the datagrams already read finish and answer through the socket, and
// only then close it.
//
// Share a socket this way only for protocols whose datagrams stand alone:
// a request answered by one reply, or a one-way message (DNS, syslog,
// statsd, NTP, RADIUS). A protocol that keeps sessions over datagrams is
// not safe with a Packet: QUIC, DTLS or a game or VoIP session would have
// the packets of the old generation's sessions read by the new one, which
// does not know them. For QUIC, use a [Router].
//
// A Packet works in one of two ways:
//
//   - Serve mode: set Handler and call [Packet.Serve]. It reads the socket
//     and runs Handler for each datagram in a goroutine of its own, at most
//     MaxInFlight at once, and [Packet.Drain] waits for those handlers.
//   - Library mode: a server library reads the Packet itself (a *Packet is
//     a net.PacketConn: pass it where the library takes one) and Shutdown
//     is set to the library's graceful shutdown, such as
//     (*dns.Server).ShutdownContext of github.com/miekg/dns. Drain stops
//     reading itself first, so the moment is the Packet's and no read
//     deadline the library sets can undo it, then calls Shutdown, which
//     waits for the library's handlers.
//
// For example, with a plain handler:
//
//	p := &drain.Packet{Conn: conn, Handler: func(c net.PacketConn, b []byte, from net.Addr) {
//		c.WriteTo(answer(b), from)
//	}}
//	go p.Serve()
//	report, err := p.Drain(ctx)
//
// and with miekg/dns:
//
//	p := &drain.Packet{Conn: conn, Name: "dns"}
//	srv := &dns.Server{PacketConn: p, Handler: zone}
//	p.Shutdown = srv.ShutdownContext
//	go srv.ActivateAndServe()
//	report, err := p.Drain(ctx)
//
// miekg/dns reads a *Packet as any net.PacketConn: the control messages
// it uses on a *net.UDPConn to answer from the address a query was sent
// to are not used, which matters only for a socket bound to a wildcard
// address on a host with several addresses (bind to each address there).
//
// A Packet may not be reused after Drain. Close it, rather than its Conn,
// to end it without a drain.
type Packet struct {
	// Conn is the socket; required. It is typically a conn from
	// upgrade.ListenPacket or listener.Set.ListenPacket, whose descriptor
	// the other generation shares.
	Conn net.PacketConn
	// Name names the server in reports. Empty means "udp".
	Name string
	// Handler, with Serve, is run for each datagram read, each in its own
	// goroutine; p is the handler's to keep. It answers with conn.WriteTo:
	// conn is the Packet itself, so that answers are counted. A handler
	// that may run long should select on WrapUp.
	Handler func(conn net.PacketConn, p []byte, from net.Addr)
	// MaxInFlight is how many handlers Serve runs at once; while that many
	// run, Serve stops reading (datagrams wait in the socket's receive
	// buffer, or are read by the other generation). Zero or negative means
	// DefaultMaxInFlight.
	MaxInFlight int
	// Shutdown, for a server library that reads the Packet itself, is its
	// graceful shutdown: it must end the library's read loop (the Packet
	// has stopped reading by then: see ReadFrom for what the loop sees),
	// wait for the library's handlers until ctx is done, and may close
	// the Packet (Drain closes it after Shutdown returns in any case).
	// Drain calls it after it has stopped reading, and after the handlers
	// Serve started (if any) have ended.
	Shutdown func(ctx context.Context) error

	datagrams atomic.Int64
	answers   atomic.Int64
	// stopped is set once Drain has stopped reading; ReadFrom checks it
	// without the lock. It changes only while mu is held, so that a read
	// deadline set through the Packet is either applied to Conn before
	// the stop or not at all.
	stopped atomic.Bool
	wrap    wrapUp
	done    wrapUp // Close was called: ends a Serve waiting for a handler slot
	slots   chan struct{}
	once    sync.Once

	mu        sync.Mutex
	closed    bool
	deadline  time.Time     // the read deadline last set through the Packet
	changed   chan struct{} // once stopped: closed when deadline or closed changes
	draining  bool
	cutting   bool // handlers ending from now on are not counted as ended
	loops     int  // Serve calls running
	running   int  // handlers running
	drainedAt time.Time
	open      int
	ended     int
	cut       int
	lastEnded time.Duration
	idle      chan struct{} // signalled when loops and running reach zero during the drain
}

// Serve reads datagrams and runs Handler for each, in a goroutine of its
// own, until Drain stops reading; it then returns nil, without waiting for
// the handlers (Drain does). Every datagram it has read gets its handler
// run, even one read in the instant the drain began. If the Packet is
// closed, or reading fails otherwise, Serve returns the error (wrapping
// net.ErrClosed for a closed Packet). Datagrams longer than 64 KiB (only
// unixgram has them) are truncated. Serve may be called from several
// goroutines: they share MaxInFlight.
func (p *Packet) Serve() error {
	if p.Handler == nil {
		return fmt.Errorf("drain %s: Serve needs a Handler (use Shutdown for a library that reads the Packet itself)", p.name())
	}
	p.mu.Lock()
	if p.draining {
		p.mu.Unlock()
		return nil
	}
	p.loops++
	p.mu.Unlock()
	defer p.loopDone()

	p.once.Do(func() {
		n := p.MaxInFlight
		if n <= 0 {
			n = DefaultMaxInFlight
		}
		p.slots = make(chan struct{}, n)
	})
	slots, wrap, done := p.slots, p.wrap.channel(), p.done.channel()
	buf := make([]byte, maxDatagram)
	for {
		// A slot is taken before reading, so that a datagram read always
		// has a handler to run it.
		select {
		case slots <- struct{}{}:
		case <-wrap:
			return nil
		case <-done:
			return p.opError(net.ErrClosed)
		}
		n, from, err := p.read(buf)
		if err != nil {
			<-slots
			if errors.Is(err, errStopped) || p.stopped.Load() {
				// Stopped, or closed by Drain at its deadline.
				return nil
			}
			return fmt.Errorf("drain %s: read: %w", p.name(), err)
		}
		// The buffer is reused for the next read: the handler gets a copy
		// of its own.
		b := make([]byte, n)
		copy(b, buf[:n])
		p.mu.Lock()
		p.running++
		if p.draining {
			p.open++
			if p.cutting {
				// Read just before Drain closed the socket at its
				// deadline: its answer cannot be sent.
				p.cut++
			}
		}
		p.mu.Unlock()
		go p.handle(b, from)
	}
}

func (p *Packet) handle(b []byte, from net.Addr) {
	defer func() {
		<-p.slots
		p.handlerDone()
	}()
	p.Handler(p, b, from)
}

func (p *Packet) handlerDone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running--
	if p.draining && !p.cutting {
		p.ended++
		p.lastEnded = time.Since(p.drainedAt)
	}
	p.idleLocked()
}

func (p *Packet) loopDone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.loops--
	p.idleLocked()
}

// idleLocked wakes Drain if nothing it waits for runs any more. p.mu is
// held.
func (p *Packet) idleLocked() {
	if p.draining && p.loops == 0 && p.running == 0 {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
}

// WrapUp returns a channel that is closed when Drain begins: long-running
// handlers select on it to finish. Safe for concurrent use, at any time.
func (p *Packet) WrapUp() <-chan struct{} { return p.wrap.channel() }

// Drain stops reading the socket without closing it (it sets a read
// deadline in the past on Conn, which ends this descriptor's reads only:
// the other generation reads the same socket through its own), closes
// WrapUp, waits until the handlers Serve started have finished and
// answered, then calls Shutdown if it is set, and finally closes Conn. If
// ctx is done first, it closes Conn anyway (the handlers still running can
// no longer answer), counts them as cut, and returns an error wrapping
// ctx.Err() with the report; it does not wait for those handlers to
// return.
//
// The report counts, over the server's life, the datagrams read through
// the Packet (Datagrams) and the answers written through it (Answers). In
// serve mode Open is the number of handlers running when the drain began,
// plus those started for datagrams read in that instant; Ended those that
// finished during the drain; Cut those still running at the deadline. A
// library does not tell the Packet about its handlers, so in library mode
// Open and Ended are zero and Cut is 1 if Shutdown returned a context
// error (the library gave up on its handlers at the deadline, how many it
// does not say); any other error from Shutdown is returned as it is,
// named. If Shutdown has not returned a second after ctx is done, Drain
// returns without it, with an error saying so.
//
// Drain is not meant to be called twice.
func (p *Packet) Drain(ctx context.Context) (Report, error) {
	p.stop()
	p.wrap.fire()
	waitErr := p.waitHandlers(ctx)
	var shutErr error
	if p.Shutdown != nil {
		shutErr = p.shutdown(ctx)
	}
	// The library may have closed it already; an error then means only
	// that.
	p.Close()

	p.mu.Lock()
	r := Report{
		Name:      p.name(),
		Open:      p.open,
		Ended:     p.ended,
		Cut:       p.cut,
		Duration:  time.Since(p.drainedAt),
		LastEnded: p.lastEnded,
		Datagrams: int(p.datagrams.Load()),
		Answers:   int(p.answers.Load()),
	}
	p.mu.Unlock()
	libraryCut := errors.Is(shutErr, context.DeadlineExceeded) || errors.Is(shutErr, context.Canceled)
	if libraryCut {
		r.Cut++
	}
	var err error
	switch {
	case waitErr != nil || libraryCut:
		cause := ctx.Err()
		if cause == nil {
			cause = shutErr
		}
		err = fmt.Errorf("drain %s: %d handler(s) cut at the deadline: %w", r.Name, r.Cut, cause)
		// Unless Shutdown returned ctx.Err() itself, say what it did.
		if shutErr != nil && shutErr != cause {
			err = fmt.Errorf("drain %s: %d handler(s) cut at the deadline: %w (Shutdown: %w)", r.Name, r.Cut, cause, shutErr)
		}
	case shutErr != nil:
		err = fmt.Errorf("drain %s: Shutdown: %w", r.Name, shutErr)
	}
	return r, err
}

// stop stops reading: from now on ReadFrom never reads Conn again.
func (p *Packet) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return
	}
	p.draining = true
	p.drainedAt = time.Now()
	p.open = p.running
	p.idle = make(chan struct{}, 1)
	p.changed = make(chan struct{})
	p.stopped.Store(true)
	// Under mu, after stopped is set: a SetReadDeadline of the library's
	// either came before this one or will not reach Conn. An error means
	// that Conn is closed, or cannot have deadlines; reading has stopped
	// all the same for every later read, which checks stopped first.
	p.Conn.SetReadDeadline(aLongTimeAgo)
}

// waitHandlers waits until no Serve loop and no handler runs any more, or
// until ctx is done: it then closes the socket, counts the handlers still
// running as cut and returns ctx.Err().
func (p *Packet) waitHandlers(ctx context.Context) error {
	for {
		p.mu.Lock()
		if p.loops == 0 && p.running == 0 {
			p.mu.Unlock()
			return nil
		}
		idle := p.idle
		p.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			p.mu.Lock()
			p.cutting = true
			p.cut += p.running
			p.mu.Unlock()
			p.Close()
			return ctx.Err()
		}
	}
}

// shutdown runs p.Shutdown, bounded by ctx and shutdownGrace.
func (p *Packet) shutdown(ctx context.Context) error {
	res := make(chan error, 1)
	go func() { res <- p.Shutdown(ctx) }()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
	}
	// A library whose shutdown waits for its read loop before closing
	// needs the loop to end: a closed Packet ends its read at once.
	p.Close()
	t := time.NewTimer(shutdownGrace)
	defer t.Stop()
	select {
	case err := <-res:
		return err
	case <-t.C:
		return fmt.Errorf("did not return %v after the deadline: %w", shutdownGrace, ctx.Err())
	}
}

func (p *Packet) name() string {
	if p.Name == "" {
		return "udp"
	}
	return p.Name
}

// read reads one datagram from Conn, or returns errStopped once Drain has
// stopped reading.
func (p *Packet) read(b []byte) (int, net.Addr, error) {
	if p.stopped.Load() {
		return 0, nil, errStopped
	}
	n, from, err := p.Conn.ReadFrom(b)
	if err == nil {
		p.datagrams.Add(1)
		return n, from, nil
	}
	if p.stopped.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		// Drain's deadline in the past ended this read (or the library's
		// own deadline passed just as the drain began; waitStopped then
		// reports that).
		return 0, nil, errStopped
	}
	return n, from, err
}

// ReadFrom reads a datagram, for a library that reads the Packet itself,
// and counts it. Once Drain has stopped reading it reads no more, and
// behaves as a socket that no datagram reaches: it blocks until the read
// deadline last set through the Packet passes, then returns an error
// wrapping os.ErrDeadlineExceeded (a net.Error whose Timeout and Temporary
// are true, as a socket's), or until the Packet is closed, then returns an
// error wrapping net.ErrClosed. A read loop that retries on a timeout, as
// miekg/dns's does until its shutdown has begun, therefore waits out its
// own read timeout between tries instead of spinning, and one that sets a
// deadline in the past to end its reads (as (*dns.Server).ShutdownContext
// does) is woken at once.
func (p *Packet) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := p.read(b)
	if errors.Is(err, errStopped) {
		return 0, nil, p.waitStopped()
	}
	return n, from, err
}

// waitStopped is ReadFrom after the stop: see ReadFrom.
func (p *Packet) waitStopped() error {
	for {
		p.mu.Lock()
		closed, deadline, changed := p.closed, p.deadline, p.changed
		p.mu.Unlock()
		if closed {
			return p.opError(net.ErrClosed)
		}
		if deadline.IsZero() {
			<-changed
			continue
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return p.opError(os.ErrDeadlineExceeded)
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// changedLocked wakes the ReadFrom calls waiting in waitStopped. p.mu is
// held.
func (p *Packet) changedLocked() {
	if p.changed != nil {
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

func (p *Packet) opError(err error) error {
	return &net.OpError{Op: "read", Net: p.opNet(), Addr: p.Conn.LocalAddr(), Err: err}
}

// WriteTo writes a datagram (an answer) to addr, and counts it if it was
// written. It works during the drain until the socket is closed.
func (p *Packet) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := p.Conn.WriteTo(b, addr)
	if err == nil {
		p.answers.Add(1)
	}
	return n, err
}

// Close closes the socket at once, whatever is in flight, and ends the
// ReadFrom calls waiting after a stop and a Serve waiting for a handler
// slot. Drain closes it too, once its handlers are done.
func (p *Packet) Close() error {
	p.mu.Lock()
	p.closed = true
	p.changedLocked()
	p.mu.Unlock()
	p.done.fire()
	return p.Conn.Close()
}

// LocalAddr returns the socket's address.
func (p *Packet) LocalAddr() net.Addr { return p.Conn.LocalAddr() }

// SetDeadline sets the read and write deadlines, as SetReadDeadline and
// SetWriteDeadline do.
func (p *Packet) SetDeadline(t time.Time) error {
	return errors.Join(p.SetReadDeadline(t), p.SetWriteDeadline(t))
}

// SetReadDeadline sets the read deadline. Before the drain it is Conn's;
// once Drain has stopped reading it only bounds how long ReadFrom waits
// (see ReadFrom): reading stays stopped, whatever deadline a library sets
// before each read.
func (p *Packet) SetReadDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deadline = t
	if !p.stopped.Load() {
		return p.Conn.SetReadDeadline(t)
	}
	if p.closed {
		return &net.OpError{Op: "set", Net: p.opNet(), Addr: p.Conn.LocalAddr(), Err: net.ErrClosed}
	}
	p.changedLocked()
	return nil
}

func (p *Packet) opNet() string {
	if a := p.Conn.LocalAddr(); a != nil {
		return a.Network()
	}
	return ""
}

// SetWriteDeadline sets Conn's write deadline.
func (p *Packet) SetWriteDeadline(t time.Time) error { return p.Conn.SetWriteDeadline(t) }

// SyscallConn gives access to the socket (for options), if Conn does.
func (p *Packet) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := p.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

package drain

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Listener is a tracking listener for raw TCP (or unix) protocols: it
// counts the connections it accepts, tells their handlers to finish during
// the drain, one connection after another over Spread, and closes the ones
// still open at the deadline.
//
// Serve from it instead of from the listener it wraps; a connection ends
// for the drain when its handler (or anything else) closes it:
//
//	ln := &drain.Listener{Listener: inner}
//	go acceptLoop(ln) // the handler of c selects on ln.WrapUpConn(c)
//	report, err := ln.Drain(ctx)
//
// The handlers decide how to end at a clean protocol boundary: finish the
// message in progress, say goodbye in the protocol's own way, and close
// when the peer has understood (see examples/tcp). Listener also works for
// servers that only need the counting and the deadline, such as a gRPC
// server served through it (see [Stopper.Listener]).
//
// A Listener may not be reused after Drain.
type Listener struct {
	// Listener is the listener to accept from; required.
	Listener net.Listener
	// Name names the server in reports. Empty means "tcp".
	Name string
	// Spread is how long the drain takes to tell its connections'
	// handlers to finish, through WrapUpConn: one connection after another
	// at even intervals, so that their clients do not all reconnect to the
	// next generation in the same instant (see HTTP.Spread). It is capped
	// at half the time the drain's context leaves. Zero means
	// DefaultSpread; negative means all at once. WrapUp is closed at the
	// drain's start whatever Spread says.
	Spread time.Duration

	wrap      wrapUp
	closed    wrapUp // Close was called: ends an Accept that holdAccepts holds
	mu        sync.Mutex
	conns     map[*trackedConn]struct{}
	draining  bool
	holding   bool          // holdAccepts stopped accepting; Accept's error waits for Close
	cutting   bool          // closes from now on are cuts
	finished  bool          // Drain has returned; late connections are refused
	accepting int           // Accept calls waiting in, or just back from, the wrapped listener
	fresh     int           // connections Accept handed out that the server has not used yet
	handoff   chan struct{} // signalled when accepting or fresh goes down while holding
	drainedAt time.Time
	open      int
	ended     int
	cut       int
	lastEnded time.Duration
	empty     chan struct{} // signalled when the last connection closes during the drain
}

// Accept waits for and returns the next connection, tracked. After Drain
// has begun it returns the connections the wrapped listener still hands
// out, then net.ErrClosed (wrapped) once that listener is closed. While
// [Stopper.Drain] drains the Listener, that error waits until Close is
// called (grpc.Server.GracefulStop calls it first): see holdAccepts.
func (l *Listener) Accept() (net.Conn, error) {
	// Counted until the connection is tracked, so that handedOver cannot
	// miss one that the wrapped listener has returned but Accept has not
	// yet recorded.
	l.mu.Lock()
	l.accepting++
	l.mu.Unlock()
	c, err := l.Listener.Accept()
	if err != nil {
		l.mu.Lock()
		l.accepting--
		l.handoffLocked()
		holding := l.holding
		l.mu.Unlock()
		if holding {
			// Stopper closed the wrapped listener to stop accepting before
			// GracefulStop (see holdAccepts). The server must not learn of
			// it before it is itself stopping: grpc.Server.Serve would
			// return this error instead of nil. It learns when it closes
			// this Listener, as GracefulStop does first.
			<-l.closed.channel()
		}
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accepting--
	if l.finished {
		// Drain decided it was done before this connection was handed
		// out; nobody would ever close it.
		c.Close()
		return nil, &net.OpError{Op: "accept", Net: c.LocalAddr().Network(), Addr: c.LocalAddr(), Err: net.ErrClosed}
	}
	if l.conns == nil {
		l.conns = make(map[*trackedConn]struct{})
	}
	tc := &trackedConn{Conn: c, l: l, accepted: time.Now()}
	tc.fresh.Store(true)
	l.fresh++
	l.conns[tc] = struct{}{}
	if l.draining {
		// Accepted just before the listener closed: its turn is now.
		l.open++
		tc.wrap.fire()
	}
	return tc, nil
}

// Close closes the wrapped listener, and ends an Accept that
// [Stopper.Drain] holds; connections already accepted stay open. Drain
// closes it too.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	l.closed.fire()
	return err
}

// Addr returns the wrapped listener's address.
func (l *Listener) Addr() net.Addr { return l.Listener.Addr() }

// WrapUp returns a channel that is closed when Drain begins: handlers
// select on it to finish their work and close their connections. Safe for
// concurrent use, at any time.
func (l *Listener) WrapUp() <-chan struct{} { return l.wrap.channel() }

// WrapUpConn returns a channel that is closed when, during the drain, the
// turn of c, a connection this Listener accepted, comes to finish (see
// Spread); for any other connection it is WrapUp. Safe for concurrent use,
// at any time.
func (l *Listener) WrapUpConn(c net.Conn) <-chan struct{} {
	if tc, ok := c.(*trackedConn); ok && tc.l == l {
		return tc.wrap.channel()
	}
	return l.WrapUp()
}

// Conns returns the number of tracked connections open now.
func (l *Listener) Conns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Drain stops accepting (closes the wrapped listener), closes WrapUp,
// closes each connection's WrapUpConn in its turn over Spread, and waits
// until every tracked connection has been closed. If ctx is done first, it
// closes the connections left, counts them as cut and returns an error
// wrapping ctx.Err() with the report. Drain is not meant to be called
// twice.
func (l *Listener) Drain(ctx context.Context) (Report, error) {
	l.begin(spreadFor(ctx, l.Spread))
	// An error means the server closed it already: accepting has stopped
	// either way.
	l.Listener.Close()
	l.wrap.fire()
	return l.wait(ctx)
}

func (l *Listener) name() string {
	if l.Name == "" {
		return "tcp"
	}
	return l.Name
}

// begin marks the start of the drain and gives every connection its turn
// to be told to finish, at even intervals over spread (all at once if it
// is zero).
func (l *Listener) begin(spread time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.draining = true
	l.drainedAt = time.Now()
	l.open = len(l.conns)
	l.empty = make(chan struct{}, 1)
	k := 0
	for c := range l.conns {
		c.goAt = l.drainedAt.Add(time.Duration(int64(spread) * int64(k) / int64(len(l.conns))))
		if spread <= 0 {
			c.wrap.fire()
		}
		k++
	}
}

// turnsLocked closes the WrapUpConn of every connection whose turn has
// come, and returns when the next turn is due (zero if none is left).
// l.mu is held.
func (l *Listener) turnsLocked(now time.Time) (next time.Time) {
	for c := range l.conns {
		if isClosed(c.wrap.channel()) {
			continue
		}
		if !now.Before(c.goAt) {
			c.wrap.fire()
		} else if next.IsZero() || c.goAt.Before(next) {
			next = c.goAt
		}
	}
	return next
}

// wait gives the connections their turns and waits for them to end until
// ctx is done, then cuts.
func (l *Listener) wait(ctx context.Context) (Report, error) {
	turn := time.NewTimer(0)
	defer turn.Stop()
	for {
		l.mu.Lock()
		next := l.turnsLocked(time.Now())
		if len(l.conns) == 0 {
			l.finished = true
			r := l.reportLocked()
			l.mu.Unlock()
			return r, nil
		}
		empty := l.empty
		l.mu.Unlock()
		var due <-chan time.Time
		if !next.IsZero() {
			turn.Reset(time.Until(next))
			due = turn.C
		}
		select {
		case <-empty:
		case <-due:
		case <-ctx.Done():
			return l.cutAll(ctx.Err())
		}
	}
}

func (l *Listener) cutAll(cause error) (Report, error) {
	l.mu.Lock()
	l.cutting = true
	l.finished = true
	conns := make([]*trackedConn, 0, len(l.conns))
	for c := range l.conns {
		c.wrap.fire() // a turn still to come: it is over
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	l.mu.Lock()
	r := l.reportLocked()
	l.mu.Unlock()
	return r, cutError(r.Name, r.Cut, cause)
}

func (l *Listener) reportLocked() Report {
	return Report{
		Name:      l.name(),
		Open:      l.open,
		Ended:     l.ended,
		Cut:       l.cut,
		Duration:  time.Since(l.drainedAt),
		LastEnded: l.lastEnded,
	}
}

// usedLocked counts one fresh connection as used (or gone). l.mu is held.
func (l *Listener) usedLocked() {
	l.fresh--
	l.handoffLocked()
}

// handoffLocked wakes handedOver, if it waits. l.mu is held.
func (l *Listener) handoffLocked() {
	if l.handoff != nil {
		select {
		case l.handoff <- struct{}{}:
		default:
		}
	}
}

// holdAccepts stops accepting for [Stopper.Drain] without telling the
// server yet: it closes the wrapped listener (connections still queued in
// the kernel stay there for the next generation, which shares the socket),
// and makes the error that ends the server's Accept wait until the server
// closes this Listener itself.
func (l *Listener) holdAccepts() {
	l.mu.Lock()
	l.holding = true
	if l.handoff == nil {
		l.handoff = make(chan struct{}, 1)
	}
	l.mu.Unlock()
	// An error means it is closed already: accepting has stopped either
	// way.
	l.Listener.Close()
}

// releaseAccepts ends an Accept that holdAccepts holds, for a server that
// returned from GracefulStop without closing its listener.
func (l *Listener) releaseAccepts() { l.closed.fire() }

// noticeInTurn sends every tapped HTTP/2 connection's client the notice
// GOAWAY (see h2Tap.drain), one connection after another at even
// intervals over spread, and returns once every one has been through its
// first phase, or ctx is done. Each phase waits at most wait for each of
// the client's acknowledgements.
func (l *Listener) noticeInTurn(ctx context.Context, spread, wait time.Duration) {
	l.mu.Lock()
	var taps []*h2Tap
	for c := range l.conns {
		if t := c.tap.Load(); t != nil {
			taps = append(taps, t)
		}
	}
	l.mu.Unlock()
	start := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	turn := time.NewTimer(0)
	defer turn.Stop()
	for k, t := range taps {
		at := start.Add(time.Duration(int64(spread) * int64(k) / int64(len(taps))))
		turn.Reset(time.Until(at))
		select {
		case <-turn.C:
		case <-ctx.Done():
			return
		}
		wg.Go(func() { t.drain(ctx, wait) })
	}
}

// handoffWait is how long handedOver waits for a server to use a
// connection it has accepted. gRPC's accept loop hands each connection to
// a goroutine of its own, which uses it at once (its first act is
// SetDeadline); a connection left untouched for this long is one the
// server is not about to serve, and waiting longer would only delay the
// drain.
const handoffWait = time.Second

// handedOver waits, after holdAccepts, until every Accept in progress has
// returned and the server has used (or closed) every connection Accept
// handed out, or until ctx is done. It gives up on a connection
// handoffWait after its accept, and on an Accept in progress handoffWait
// after the call.
func (l *Listener) handedOver(ctx context.Context) {
	start := time.Now()
	for {
		l.mu.Lock()
		accepting, fresh := l.accepting, l.fresh
		// Wait until handoffWait after the latest of the call and the
		// accepts of the fresh connections.
		last := start
		if fresh > 0 {
			for c := range l.conns {
				if c.fresh.Load() && c.accepted.After(last) {
					last = c.accepted
				}
			}
		}
		l.mu.Unlock()
		wait := time.Until(last.Add(handoffWait))
		if (accepting == 0 && fresh == 0) || wait <= 0 {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-l.handoff:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// forget removes c and counts how it ended.
func (l *Listener) forget(c *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; !ok {
		return
	}
	delete(l.conns, c)
	if c.fresh.CompareAndSwap(true, false) {
		l.usedLocked()
	}
	if !l.draining {
		return
	}
	if l.cutting {
		l.cut++
	} else {
		l.ended++
		l.lastEnded = time.Since(l.drainedAt)
	}
	if len(l.conns) == 0 {
		select {
		case l.empty <- struct{}{}:
		default:
		}
	}
}

// trackedConn is a connection from a Listener; closing it ends it for the
// drain.
type trackedConn struct {
	net.Conn
	l        *Listener
	once     sync.Once
	accepted time.Time
	wrap     wrapUp    // see Listener.WrapUpConn
	goAt     time.Time // its turn during the drain; under l.mu
	// A connection that begins with the HTTP/2 client preface (gRPC
	// without TLS) passes through a tap, so that Stopper can tell its
	// client to go in its turn (see Stopper.Spread). sniff is the reading
	// goroutine's; wrote says the server has written to the connection.
	sniff prefaceSniffer
	tap   atomic.Pointer[h2Tap]
	wrote atomic.Bool
	// fresh is true until the server first uses the connection (a Read,
	// Write or deadline), or it is closed: see Listener.handedOver.
	fresh atomic.Bool
}

// use records that the server has begun serving c. After the first call
// it costs one atomic load.
func (c *trackedConn) use() {
	if c.fresh.Load() && c.fresh.CompareAndSwap(true, false) {
		c.l.mu.Lock()
		c.l.usedLocked()
		c.l.mu.Unlock()
	}
}

// Read reads from the connection.
func (c *trackedConn) Read(b []byte) (int, error) {
	c.use()
	n, err := c.Conn.Read(b)
	if t := c.tap.Load(); t != nil {
		t.read(b[:n])
	} else if h2, before := c.sniff.look(b[:n]); h2 {
		t := tapFrom(c.Conn, b[:n], before)
		if c.wrote.Load() {
			// A gRPC server writes its SETTINGS before it reads the
			// client's preface, and writes nothing more until it has:
			// the output stands between two frames.
			t.started = true
		}
		c.tap.Store(t)
	}
	return n, err
}

// Write writes to the connection.
func (c *trackedConn) Write(b []byte) (int, error) {
	c.use()
	if t := c.tap.Load(); t != nil {
		return t.write(b)
	}
	if !c.wrote.Load() {
		c.wrote.Store(true)
	}
	return c.Conn.Write(b)
}

// SetDeadline sets the connection's deadlines. A server that sets one has
// taken the connection up (gRPC does so first of all).
func (c *trackedConn) SetDeadline(t time.Time) error {
	c.use()
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the connection's read deadline.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.use()
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the connection's write deadline.
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	c.use()
	return c.Conn.SetWriteDeadline(t)
}

// Close closes the connection. Only the first call counts for the drain.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		if t := c.tap.Load(); t != nil {
			t.ended()
		}
		c.l.forget(c)
	})
	return err
}

// CloseWrite half-closes a TCP or unix connection, if the underlying one
// supports it; it does not end the connection for the drain.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return net.ErrClosed
}

// NetConn returns the underlying connection, like tls.Conn.NetConn.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// SyscallConn gives access to the socket (for options), if the underlying
// connection does.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

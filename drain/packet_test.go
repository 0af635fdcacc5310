package drain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// listenShared binds a datagram socket on network ("udp" on loopback, or
// "unixgram" in a temporary directory) and returns two conns on it, each
// with a descriptor of its own, as two generations hold it during an
// upgrade.
func listenShared(t testing.TB, network string) (a, b net.PacketConn) {
	t.Helper()
	var err error
	switch network {
	case "udp":
		a, err = net.ListenPacket("udp", "127.0.0.1:0")
	case "unixgram":
		a, err = net.ListenPacket("unixgram", filepath.Join(t.TempDir(), "s"))
	default:
		t.Fatalf("no network %q", network)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	f, err := a.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err = net.FilePacketConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// packetClient sends numbered requests and counts the answers to each.
type packetClient struct {
	conn net.PacketConn
	mu   sync.Mutex
	got  map[int]int // answers per request number
}

func newPacketClient(t *testing.T, network string) *packetClient {
	t.Helper()
	var conn net.PacketConn
	var err error
	if network == "unixgram" {
		// A unixgram client needs an address of its own to be answered.
		conn, err = net.ListenPacket("unixgram", filepath.Join(t.TempDir(), "c"))
	} else {
		conn, err = net.ListenPacket("udp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	c := &packetClient{conn: conn, got: make(map[int]int)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return // closed by the cleanup
			}
			id, err := strconv.Atoi(strings.TrimPrefix(string(buf[:n]), "a "))
			if err != nil {
				t.Errorf("client: bad answer %q", buf[:n])
				continue
			}
			c.mu.Lock()
			c.got[id]++
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return c
}

func (c *packetClient) send(t *testing.T, to net.Addr, kind string, id int) {
	t.Helper()
	if _, err := c.conn.WriteTo(fmt.Appendf(nil, "%s %d", kind, id), to); err != nil {
		t.Fatalf("client: send %d: %v", id, err)
	}
}

// answered returns how many distinct requests were answered.
func (c *packetClient) answered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// waitAnswered waits until n distinct requests were answered, or timeout.
func (c *packetClient) waitAnswered(n int, timeout time.Duration) {
	for end := time.Now().Add(timeout); c.answered() < n && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
}

// check fails the test unless each of the requests 0..n-1 was answered
// exactly once.
func (c *packetClient) check(t *testing.T, n int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var lost, dup []int
	for i := range n {
		switch c.got[i] {
		case 1:
		case 0:
			lost = append(lost, i)
		default:
			dup = append(dup, i)
		}
	}
	if len(lost) > 0 || len(dup) > 0 {
		t.Errorf("of %d requests, %d lost %v, %d answered more than once %v", n, len(lost), lost, len(dup), dup)
	}
}

// answer is a handler that answers "a <n>" to "<kind> <n>" after delay.
func answer(delay time.Duration) func(net.PacketConn, []byte, net.Addr) {
	return func(c net.PacketConn, b []byte, from net.Addr) {
		time.Sleep(delay)
		_, id, _ := strings.Cut(string(b), " ")
		c.WriteTo([]byte("a "+id), from)
	}
}

func serveAsync(p *Packet) <-chan error {
	res := make(chan error, 1)
	go func() { res <- p.Serve() }()
	return res
}

// drainedWithin waits for a drainAsync's result, failing the test after 5 s.
func drainedWithin(t *testing.T, c <-chan drainResult, what string) drainResult {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return", what)
	}
	return drainResult{}
}

func recvWithin(t *testing.T, c <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// Two generations share one socket: a client sends numbered requests at a
// steady rate while A serves, then B starts serving and A drains. Every
// request is answered exactly once: A stops reading without closing, and
// answers what it has read before it closes.
func TestPacketTwoGenerations(t *testing.T) {
	for _, network := range []string{"udp", "unixgram"} {
		t.Run(network, func(t *testing.T) {
			connA, connB := listenShared(t, network)
			// The handlers take longer than the gap between requests, so
			// that several run when A's drain begins.
			a := &Packet{Conn: connA, Name: "A", Handler: answer(5 * time.Millisecond)}
			b := &Packet{Conn: connB, Name: "B", Handler: answer(5 * time.Millisecond)}
			client := newPacketClient(t, network)
			to := connA.LocalAddr()

			const n, bStarts, aDrains = 300, 100, 150
			serveA := serveAsync(a)
			var serveB <-chan error
			var drainedA <-chan drainResult
			for i := range n {
				switch i {
				case bStarts:
					serveB = serveAsync(b)
				case aDrains:
					drainedA = drainAsync(a, 5*time.Second)
				}
				client.send(t, to, "q", i)
				time.Sleep(time.Millisecond)
			}
			client.waitAnswered(n, 3*time.Second)

			ra := drainedWithin(t, drainedA, "A's drain")
			if err := recvWithin(t, serveA, "A's Serve"); err != nil {
				t.Errorf("A's Serve after Drain: %v, want nil", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			rb, err := b.Drain(ctx)
			if err != nil {
				t.Errorf("B's drain: %v", err)
			}
			if err := recvWithin(t, serveB, "B's Serve"); err != nil {
				t.Errorf("B's Serve after Drain: %v, want nil", err)
			}
			t.Logf("A: %v (err %v); B: %v", ra.r, ra.err, rb)

			client.check(t, n)
			if ra.err != nil || ra.r.Cut != 0 || ra.r.Open != ra.r.Ended {
				t.Errorf("A's drain: %v, %v; want every handler ended, none cut", ra.r, ra.err)
			}
			if got := ra.r.Datagrams + rb.Datagrams; got != n {
				t.Errorf("A read %d and B read %d datagrams, %d in all; want %d", ra.r.Datagrams, rb.Datagrams, got, n)
			}
			if ra.r.Answers != ra.r.Datagrams || rb.Answers != rb.Datagrams {
				t.Errorf("answers A %d of %d, B %d of %d; want one per datagram", ra.r.Answers, ra.r.Datagrams, rb.Answers, rb.Datagrams)
			}
			if ra.r.Datagrams == 0 || ra.r.Datagrams == n {
				t.Errorf("A read %d of %d datagrams; want it to have served a share", ra.r.Datagrams, n)
			}
			if _, err := connA.WriteTo([]byte("x"), client.conn.LocalAddr()); !errors.Is(err, net.ErrClosed) {
				t.Errorf("A's socket after its drain: write error %v, want it closed", err)
			}
		})
	}
}

// Handlers running when the drain begins finish and their answers arrive;
// at the deadline the ones left are cut, and Drain says so.
func TestPacketDrainCuts(t *testing.T) {
	conn, _ := listenShared(t, "udp")
	started := make(chan struct{}, 3)
	release := make(chan struct{})
	var handlers sync.WaitGroup
	t.Cleanup(func() { close(release); handlers.Wait() })
	var p *Packet
	p = &Packet{Conn: conn, Handler: func(c net.PacketConn, b []byte, from net.Addr) {
		handlers.Add(1)
		defer handlers.Done()
		started <- struct{}{}
		kind, id, _ := strings.Cut(string(b), " ")
		if kind == "stuck" {
			<-release
		} else {
			// Answered only after the drain began.
			<-p.WrapUp()
			time.Sleep(50 * time.Millisecond)
		}
		c.WriteTo([]byte("a "+id), from)
	}}
	serve := serveAsync(p)
	client := newPacketClient(t, "udp")
	client.send(t, conn.LocalAddr(), "slow", 0)
	client.send(t, conn.LocalAddr(), "slow", 1)
	client.send(t, conn.LocalAddr(), "stuck", 2)
	for range 3 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("handlers did not start")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	r, err := p.Drain(ctx)
	t.Logf("%v; %v", r, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain: %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if err := recvWithin(t, serve, "Serve"); err != nil {
		t.Errorf("Serve after Drain: %v, want nil", err)
	}
	if r.Open != 3 || r.Ended != 2 || r.Cut != 1 || r.Datagrams != 3 || r.Answers != 2 {
		t.Errorf("report %v; want open=3 ended=2 cut=1 datagrams=3 answers=2", r)
	}
	if r.Duration < 350*time.Millisecond || r.LastEnded < 50*time.Millisecond || r.LastEnded > r.Duration {
		t.Errorf("took %v, last ended after %v; want the deadline's 400ms, and 50ms+", r.Duration, r.LastEnded)
	}
	client.waitAnswered(2, 2*time.Second)
	client.mu.Lock()
	got := fmt.Sprint(client.got)
	client.mu.Unlock()
	if got != "map[0:1 1:1]" {
		t.Errorf("answers %s, want map[0:1 1:1]", got)
	}
}

// MaxInFlight bounds how many handlers run at once; the datagrams beyond
// wait and are all answered.
func TestPacketMaxInFlight(t *testing.T) {
	conn, _ := listenShared(t, "udp")
	var now, most atomic.Int32
	p := &Packet{Conn: conn, MaxInFlight: 3, Handler: func(c net.PacketConn, b []byte, from net.Addr) {
		n := now.Add(1)
		defer now.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		answer(20*time.Millisecond)(c, b, from)
	}}
	serve := serveAsync(p)
	client := newPacketClient(t, "udp")
	const n = 15
	for i := range n {
		client.send(t, conn.LocalAddr(), "q", i)
	}
	client.waitAnswered(n, 3*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.Drain(ctx); err != nil {
		t.Error(err)
	}
	recvWithin(t, serve, "Serve")
	client.check(t, n)
	if m := most.Load(); m != 3 {
		t.Errorf("at most %d handlers ran at once, want MaxInFlight's 3", m)
	}
}

// libServer reads a net.PacketConn the way miekg/dns's server reads one
// that is not a *net.UDPConn (serveUDP and ShutdownContext, without
// depending on that module): a read deadline before every read; on a read
// error it returns nil once shut down, retries a temporary error, and
// returns any other; it waits for its handlers, then closes the conn.
type libServer struct {
	conn    net.PacketConn
	handle  func(net.PacketConn, []byte, net.Addr)
	timeout time.Duration // miekg/dns's default read timeout is 2s

	mu       sync.Mutex
	started  bool
	finished chan struct{} // serve has returned
	reads    atomic.Int64  // ReadFrom calls
}

func newLibServer(conn net.PacketConn, handle func(net.PacketConn, []byte, net.Addr)) *libServer {
	return &libServer{conn: conn, handle: handle, timeout: 2 * time.Second, started: true, finished: make(chan struct{})}
}

func (s *libServer) isStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

func (s *libServer) serve() error {
	defer close(s.finished)
	defer s.conn.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for s.isStarted() {
		s.conn.SetReadDeadline(time.Now().Add(s.timeout))
		b := make([]byte, 512)
		s.reads.Add(1)
		n, from, err := s.conn.ReadFrom(b)
		if err != nil {
			if !s.isStarted() {
				return nil
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				continue
			}
			return err
		}
		wg.Go(func() { s.handle(s.conn, b[:n], from) })
	}
	return nil
}

func (s *libServer) shutdownContext(ctx context.Context) error {
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return errors.New("server not started")
	}
	s.started = false
	s.conn.SetReadDeadline(time.Unix(1, 0)) // ends the read in progress
	s.mu.Unlock()
	var err error
	select {
	case <-s.finished:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.conn.Close()
	return err
}

// A library that reads the Packet itself (library mode), drained while the
// other generation serves: nothing is lost, the library's read loop does
// not spin after the Packet stopped reading, the deadlines it sets do not
// resume reading, and its shutdown's deadline in the past ends the drain
// at once rather than after its read timeout.
func TestPacketLibrary(t *testing.T) {
	for _, tc := range []struct {
		name string
		late time.Duration // how long the library takes to begin its shutdown
	}{{"prompt", 0}, {"slow-shutdown", 300 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			connA, connB := listenShared(t, "udp")
			a := &Packet{Conn: connA, Name: "dns"}
			lib := newLibServer(a, answer(5*time.Millisecond))
			a.Shutdown = func(ctx context.Context) error {
				time.Sleep(tc.late)
				return lib.shutdownContext(ctx)
			}
			served := make(chan error, 1)
			go func() { served <- lib.serve() }()
			b := &Packet{Conn: connB, Name: "B", Handler: answer(5 * time.Millisecond)}
			client := newPacketClient(t, "udp")

			// What A's library does once A has stopped reading.
			type after struct{ reads, datagrams int64 }
			atStop := make(chan after, 1)
			go func() {
				<-a.WrapUp()
				atStop <- after{lib.reads.Load(), a.datagrams.Load()}
			}()

			const n, bStarts, aDrains = 250, 50, 80
			var serveB <-chan error
			var drainedA <-chan drainResult
			for i := range n {
				switch i {
				case bStarts:
					serveB = serveAsync(b)
				case aDrains:
					drainedA = drainAsync(a, 5*time.Second)
				}
				client.send(t, connA.LocalAddr(), "q", i)
				time.Sleep(time.Millisecond)
			}
			client.waitAnswered(n, 3*time.Second)
			ra := drainedWithin(t, drainedA, "A's drain")
			if err := recvWithin(t, served, "the library's serve"); err != nil {
				t.Errorf("the library's serve: %v, want nil", err)
			}
			stop := <-atStop
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			rb, _ := b.Drain(ctx)
			recvWithin(t, serveB, "B's Serve")
			t.Logf("A: %v (err %v); B: %v; library reads: %d before the stop, %d in all",
				ra.r, ra.err, rb, stop.reads, lib.reads.Load())

			client.check(t, n)
			if ra.err != nil || ra.r.Cut != 0 {
				t.Errorf("A's drain: %v, %v; want nothing cut", ra.r, ra.err)
			}
			if got := ra.r.Datagrams + rb.Datagrams; got != n || ra.r.Answers != ra.r.Datagrams {
				t.Errorf("A read %d datagrams and answered %d, B read %d; want %d read in all, each answered once",
					ra.r.Datagrams, ra.r.Answers, rb.Datagrams, n)
			}
			// The read in progress at the stop, and at most one more.
			if extra := lib.reads.Load() - stop.reads; extra > 2 {
				t.Errorf("the library called ReadFrom %d times after the stop; want at most 2 (no spinning)", extra)
			}
			if extra := int64(ra.r.Datagrams) - stop.datagrams; extra > 1 {
				t.Errorf("A read %d datagrams after it stopped reading", extra)
			}
			// Woken by the shutdown's deadline in the past, not by its 2s
			// read timeout.
			if limit := tc.late + time.Second; ra.r.Duration > limit {
				t.Errorf("A's drain took %v, want under %v", ra.r.Duration, limit)
			}
		})
	}
}

// A library's read loop, once the Packet has stopped reading, sees what an
// idle socket gives: a timeout at its own deadline, and net.ErrClosed once
// closed. The deadline it sets does not resume reading: a datagram that
// arrives meanwhile stays for the other generation.
func TestPacketReadFromAfterStop(t *testing.T) {
	conn, other := listenShared(t, "udp")
	p := &Packet{Conn: conn}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.stop()

	p.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	client := newPacketClient(t, "udp")
	client.send(t, conn.LocalAddr(), "q", 1)
	start := time.Now()
	n, _, err := p.ReadFrom(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ReadFrom after the stop: %d bytes, %v; want a timeout", n, err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("ReadFrom returned after %v, before its deadline", d)
	}
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := other.ReadFrom(make([]byte, 10)); err != nil || n != 3 {
		t.Errorf("the other generation's read: %d bytes, %v; want the datagram", n, err)
	}

	p.SetReadDeadline(time.Time{})
	res := make(chan error, 1)
	go func() {
		_, _, err := p.ReadFrom(make([]byte, 10))
		res <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if _, err := p.Drain(ctx); err != nil {
		t.Errorf("Drain: %v", err)
	}
	if err := recvWithin(t, res, "ReadFrom"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrom after Drain: %v, want net.ErrClosed", err)
	}
	if err := p.Serve(); err == nil || !strings.Contains(err.Error(), "Handler") {
		t.Errorf("Serve without a Handler: %v", err)
	}
}

// Close without a drain ends Serve with an error wrapping net.ErrClosed.
func TestPacketClose(t *testing.T) {
	conn, _ := listenShared(t, "udp")
	p := &Packet{Conn: conn, Handler: answer(0)}
	serve := serveAsync(p)
	time.Sleep(20 * time.Millisecond)
	p.Close()
	if err := recvWithin(t, serve, "Serve"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close: %v, want net.ErrClosed", err)
	}
}

// The report line of a server that is not a datagram server is unchanged.
func TestReportDatagrams(t *testing.T) {
	r := Report{Name: "x", Open: 1, Ended: 1}
	if s := r.String(); strings.Contains(s, "datagrams") || !strings.HasPrefix(s, "x: open=1 ended=1 cut=0 took=0s last-ended=0s") {
		t.Errorf("String: %q", s)
	}
	r.Datagrams, r.Answers = 7, 5
	if s := r.String(); !strings.HasSuffix(s, " datagrams=7 answers=5") {
		t.Errorf("String: %q", s)
	}
	if v := r.LogValue().String(); !strings.Contains(v, "datagrams=7 answers=5") {
		t.Errorf("LogValue: %q", v)
	}
}

// instantConn is a socket whose read in progress returns a datagram in
// the very instant Drain sets its read deadline in the past: the datagram
// was read, so it must be handled.
type instantConn struct {
	net.PacketConn
	from net.Addr
	past chan struct{} // closed by the first deadline in the past
	once sync.Once
	used atomic.Bool
}

func (c *instantConn) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		c.once.Do(func() { close(c.past) })
	}
	return c.PacketConn.SetReadDeadline(t)
}

func (c *instantConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.used.CompareAndSwap(false, true) {
		<-c.past
		return copy(b, "q 7"), c.from, nil
	}
	return c.PacketConn.ReadFrom(b)
}

// A datagram read in the instant the drain began is handled and answered,
// and counted among the drain's handlers.
func TestPacketReadInTheStopInstant(t *testing.T) {
	conn, _ := listenShared(t, "udp")
	client := newPacketClient(t, "udp")
	ic := &instantConn{PacketConn: conn, from: client.conn.LocalAddr(), past: make(chan struct{})}
	p := &Packet{Conn: ic, Handler: answer(0)}
	serve := serveAsync(p)
	for end := time.Now().Add(5 * time.Second); !ic.used.Load() && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := p.Drain(ctx)
	if err != nil {
		t.Error(err)
	}
	recvWithin(t, serve, "Serve")
	client.waitAnswered(1, 2*time.Second)
	client.mu.Lock()
	got := fmt.Sprint(client.got)
	client.mu.Unlock()
	if got != "map[7:1]" {
		t.Errorf("answers %s, want map[7:1]", got)
	}
	if r.Open != 1 || r.Ended != 1 || r.Datagrams != 1 || r.Answers != 1 {
		t.Errorf("report %v; want open=1 ended=1 datagrams=1 answers=1", r)
	}
}

// In library mode, a library that gives up on its handlers at the
// deadline is reported as a cut, and a Shutdown that does not return at
// all does not hold Drain past the deadline for more than shutdownGrace.
func TestPacketLibraryCut(t *testing.T) {
	defer func(d time.Duration) { shutdownGrace = d }(shutdownGrace)
	shutdownGrace = 100 * time.Millisecond
	for _, tc := range []struct {
		name string
		hang bool // Shutdown ignores ctx
		want string
	}{
		{"ctx-error", false, "drain dns: 1 handler(s) cut at the deadline: context deadline exceeded"},
		{"hung-shutdown", true, "drain dns: 1 handler(s) cut at the deadline: context deadline exceeded (Shutdown: did not return 100ms after the deadline: context deadline exceeded)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, _ := listenShared(t, "udp")
			p := &Packet{Conn: conn, Name: "dns"}
			started, release := make(chan struct{}), make(chan struct{})
			lib := newLibServer(p, func(net.PacketConn, []byte, net.Addr) {
				close(started)
				<-release // a handler that never ends by itself
			})
			p.Shutdown = lib.shutdownContext
			if tc.hang {
				p.Shutdown = func(context.Context) error { <-release; return nil }
			}
			served := make(chan error, 1)
			go func() { served <- lib.serve() }()
			t.Cleanup(func() {
				close(release)
				recvWithin(t, served, "the library's serve")
			})
			client := newPacketClient(t, "udp")
			client.send(t, conn.LocalAddr(), "q", 0)
			select {
			case <-started:
			case <-time.After(5 * time.Second):
				t.Fatal("the handler did not start")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			r, err := p.Drain(ctx)
			t.Logf("%v; %v", r, err)
			if !errors.Is(err, context.DeadlineExceeded) || err.Error() != tc.want {
				t.Errorf("Drain: %v\nwant %s", err, tc.want)
			}
			if r.Cut != 1 || r.Datagrams != 1 || r.Answers != 0 {
				t.Errorf("report %v; want cut=1 datagrams=1 answers=0", r)
			}
			if limit := 200*time.Millisecond + 2*shutdownGrace; r.Duration > limit {
				t.Errorf("Drain took %v, want under %v", r.Duration, limit)
			}
		})
	}
}

package drain

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/h2watch"
)

// The drain tells its connections to go away over HTTP.Spread, not all at
// once, so that their clients do not all reconnect to the next generation
// in the same instant. These tests look at when each connection was told,
// from the client's side, relative to the drain's start.

// spreadConns is how many connections the spread tests use: enough that
// "all at once" and "over the spread" cannot be confused.
const spreadConns = 12

// checkSpread fails unless the times at which the connections were told
// (offsets from the drain's start) cover the spread: the first within a
// tenth of it, the last after half of it, and no more than a third of them
// in any tenth of it. All at once (the mechanism off) fails all but the
// first.
func checkSpread(t *testing.T, told []time.Duration, spread time.Duration) {
	t.Helper()
	slices.Sort(told)
	t.Logf("told after %v", told)
	if len(told) != spreadConns {
		t.Fatalf("%d connections were told, want %d", len(told), spreadConns)
	}
	if told[0] > spread/10+50*time.Millisecond {
		t.Errorf("the first connection was told %v after the drain began; its turn is at once", told[0])
	}
	if last := told[len(told)-1]; last < spread/2 {
		t.Errorf("every connection was told within %v of the drain's start; want them spread over %v", last, spread)
	}
	tenths := map[time.Duration]int{}
	for _, d := range told {
		tenths[d/(spread/10)]++
	}
	for tenth, n := range tenths {
		if n > spreadConns/3 {
			t.Errorf("%d of %d connections were told in the same tenth (%d) of the spread", n, spreadConns, tenth)
		}
	}
}

// h2cConns opens spreadConns h2c connections to addr, each used once, and
// returns them and the Dialer that watches their frames; they close at the
// end of the test.
func h2cConns(t *testing.T, addr string) ([]*http.ClientConn, *h2watch.Dialer) {
	t.Helper()
	tr, watchers := h2Client(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ccs := make([]*http.ClientConn, spreadConns)
	for i := range ccs {
		cc, err := tr.NewClientConn(ctx, "http", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		if _, err := h2Get(cc, "http", addr, "/"); err != nil {
			t.Fatal(err)
		}
		ccs[i] = cc
	}
	return ccs, watchers
}

func TestSpreadKeepAliveConnectionClose(t *testing.T) {
	const spread = 600 * time.Millisecond
	h := &HTTP{Server: &http.Server{Handler: handler()}, Spread: spread, IdleTimeout: 5 * time.Second}
	addr, served := serve(t, h)
	clients := make([]*client, spreadConns)
	for i := range clients {
		clients[i] = dial(t, addr)
		clients[i].get("/")
	}
	var (
		mu    sync.Mutex
		told  []time.Duration
		start = make(chan time.Time, 1)
		wg    sync.WaitGroup
	)
	res := drainAsync(h, 10*time.Second)
	begun := time.Now()
	start <- begun
	for _, c := range clients {
		// Each client keeps using its connection, a request every 10 ms,
		// until a response says Connection: close; every response is a
		// 200 (client.get fails the test otherwise).
		wg.Go(func() {
			for n := 0; n < 300; n++ {
				if resp := c.get("/"); resp.Close {
					mu.Lock()
					told = append(told, time.Since(begun))
					mu.Unlock()
					if !c.closedByServer() {
						t.Error("the server kept a connection after Connection: close")
					}
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Error("a connection was never told to close")
		})
	}
	wg.Wait()
	r := <-res
	if r.err != nil || r.r.Ended != spreadConns || r.r.Cut != 0 {
		t.Fatalf("Drain = %v, %v; want %d ended, 0 cut", r.r, r.err, spreadConns)
	}
	<-served
	checkSpread(t, told, spread)
}

func TestSpreadHTTP2GoAway(t *testing.T) {
	const spread = 600 * time.Millisecond
	h, addr := h2Server(t, false)
	h.Spread = spread
	ccs, watchers := h2cConns(t, addr)
	begun := time.Now()
	res := drainIn(h, 10*time.Second)
	// Until its GOAWAY, each connection still serves: keep one request
	// going on each, as a client would.
	var wg sync.WaitGroup
	for _, cc := range ccs {
		wg.Go(func() {
			for cc.Available() > 0 && time.Since(begun) < 5*time.Second {
				if _, err := h2Get(cc, "http", addr, "/"); err != nil && cc.Available() > 0 {
					t.Errorf("request before the connection's GOAWAY: %v", err)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	got := <-res
	if got.err != nil || got.r.Ended != spreadConns || got.r.Cut != 0 {
		t.Fatalf("Drain = %v, %v; want %d ended, 0 cut", got.r, got.err, spreadConns)
	}
	var told []time.Duration
	for _, w := range watchers.Conns() {
		if _, first := w.GoAways(); !first.IsZero() {
			told = append(told, first.Sub(begun))
		}
	}
	checkSpread(t, told, spread)
}

// byes dials spreadConns connections of the goodbye-aware line echo with
// dial, begins a drain with begin (which returns when it began it), and
// returns how long after that each connection's server said BYE; each
// connection closes then.
func byes(t *testing.T, dial func() (net.Conn, *bufio.Reader), begin func() time.Time) []time.Duration {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var told []time.Duration
	begun := make(chan time.Time)
	for range spreadConns {
		c, r := dial()
		wg.Go(func() {
			start := <-begun
			if l, _ := r.ReadString('\n'); l != "BYE\n" {
				t.Errorf("got %q, want BYE", l)
				return
			}
			mu.Lock()
			told = append(told, time.Since(start))
			mu.Unlock()
			c.Close()
		})
	}
	now := begin()
	for range spreadConns {
		begun <- now
	}
	wg.Wait()
	return told
}

// hijackedTurns drains an HTTP serving spreadConns hijacked connections
// with the given Spread, within timeout, and returns how long after the
// drain's start each was told to wrap up (its BYE).
func hijackedTurns(t *testing.T, spread, timeout time.Duration) []time.Duration {
	t.Helper()
	var handlers sync.WaitGroup
	defer handlers.Wait()
	h := &HTTP{Server: &http.Server{Handler: hijackHandler(&handlers, false)}, Spread: spread}
	addr, served := serve(t, h)
	var res <-chan struct {
		r   Report
		err error
	}
	told := byes(t, func() (net.Conn, *bufio.Reader) { return dialHijack(t, addr) }, func() time.Time {
		now := time.Now()
		res = drainIn(h, timeout)
		return now
	})
	if got := <-res; got.err != nil || got.r.Ended != spreadConns {
		t.Fatalf("Drain = %v, %v; want %d ended", got.r, got.err, spreadConns)
	}
	<-served
	return told
}

func TestSpreadHijackedWrapUp(t *testing.T) {
	const spread = 600 * time.Millisecond
	checkSpread(t, hijackedTurns(t, spread, 10*time.Second), spread)
}

// A spread longer than the drain's deadline allows is cut to half of
// what the deadline leaves, and a negative one tells every connection at
// once.
func TestSpreadBounds(t *testing.T) {
	for _, tc := range []struct {
		name            string
		spread, timeout time.Duration
		within          time.Duration
	}{
		{"capped by the deadline", time.Minute, 800 * time.Millisecond, 400 * time.Millisecond},
		{"negative is at once", -1, 10 * time.Second, 60 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			told := hijackedTurns(t, tc.spread, tc.timeout)
			if last := slices.Max(told); last > tc.within {
				t.Errorf("the last connection was told after %v, want within %v", last, tc.within)
			}
		})
	}
}

func TestSpreadListenerWrapUpConn(t *testing.T) {
	const spread = 600 * time.Millisecond
	ln := listen(t)
	ln.Spread = spread
	lineServer(t, ln)
	var res <-chan struct {
		r   Report
		err error
	}
	dial := func() (net.Conn, *bufio.Reader) { return dialLine(t, ln.Addr().String()) }
	begin := func() time.Time {
		for ln.Conns() != spreadConns {
			time.Sleep(time.Millisecond)
		}
		now := time.Now()
		res = drainIn(ln, 10*time.Second)
		return now
	}
	told := byes(t, dial, begin)
	if got := <-res; got.err != nil || got.r.Ended != spreadConns {
		t.Fatalf("Drain = %v, %v; want %d ended", got.r, got.err, spreadConns)
	}
	select {
	case <-ln.WrapUp():
	default:
		t.Error("WrapUp is still open after the drain")
	}
	checkSpread(t, told, spread)
}

// shutdowner is an http.Server as a GracefulStopper, so that the test can
// watch a Stopper's notices with an HTTP/2 client that shows its frames.
type shutdowner struct{ *http.Server }

func (s shutdowner) GracefulStop() { s.Shutdown(context.Background()) }
func (s shutdowner) Stop()         { s.Close() }

func TestSpreadStopperNotices(t *testing.T) {
	const spread = 600 * time.Millisecond
	srv := &http.Server{Handler: handler(), Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln := listen(t)
	st := &Stopper{Server: shutdowner{srv}, Listener: ln, Spread: spread}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	_, watchers := h2cConns(t, ln.Addr().String())
	begun := time.Now()
	res := drainIn(st, 10*time.Second)
	if got := <-res; got.err != nil || got.r.Ended != spreadConns || got.r.Cut != 0 {
		t.Fatalf("Drain = %v, %v; want %d ended, 0 cut", got.r, got.err, spreadConns)
	}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	var told []time.Duration
	for _, w := range watchers.Conns() {
		if _, first := w.GoAways(); !first.IsZero() {
			told = append(told, first.Sub(begun))
		}
	}
	checkSpread(t, told, spread)
}

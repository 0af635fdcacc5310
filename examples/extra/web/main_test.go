//go:build unix

//lint:file-ignore SA1019 x/net's deprecated http2.ClientConn runs over any net.Conn, so the test can read the frames under TLS; net/http's ClientConn needs a *tls.Conn from its TLS dialer, whose frames nobody outside can see.

package main

// TestUpgradesUnderLoad builds this program (with -race) and upgrades it 20
// times while WebSocket, h2c and HTTP/2-over-TLS clients talk to it at
// once, each kind counting its own failures with clients that never
// resend; TestWebSocketUpgradesLoseNothing does the same with WebSocket
// clients alone, at a higher rate.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"

	"github.com/hitlessgo/hitless/internal/h2watch"
	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

var serverBin string

func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./web", true, &serverBin)) }

// stats is what the clients of one kind saw.
type stats struct {
	kind string
	mu   sync.Mutex
	ok   int64 // requests or messages answered correctly
	// failed: requests or messages lost, or connections that ended other
	// than cleanly. Must be 0.
	failed int64
	// cleanEnds: connections the server ended with the protocol's clean
	// end (BYE, then the client's close handshake; GOAWAY NO_ERROR then
	// EOF).
	cleanEnds int64
	// lost: WebSocket messages sent and never echoed (also in failed).
	lost int64
	// afterBye: WebSocket messages outstanding when the server's BYE
	// arrived, echoed after it: those a close frame in its place would
	// have lost.
	afterBye int64
	// unsent: HTTP/2 requests the client connection refused to send
	// because a GOAWAY had just arrived; never on the wire.
	unsent  int64
	samePID int64 // reconnections to the generation that just ended them: must be 0
	pids    map[int]int
	errs    []string
	lat     loadgen.Recorder // round trips answered correctly
}

func newStats(kind string) *stats { return &stats{kind: kind, pids: make(map[int]int)} }

func (s *stats) add(f func(s *stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *stats) fail(format string, args ...any) {
	s.add(func(s *stats) {
		s.failed++
		if len(s.errs) < 20 {
			s.errs = append(s.errs, time.Now().Format("15:04:05.000000 ")+fmt.Sprintf(format, args...))
		}
	})
}

func (s *stats) String() string {
	if s.kind == "websocket" {
		return fmt.Sprintf("%s: %d ok, %d failed (%d messages never echoed), %d clean connection ends, %d echoed after BYE, %d generations",
			s.kind, s.ok, s.failed, s.lost, s.cleanEnds, s.afterBye, len(s.pids))
	}
	return fmt.Sprintf("%s: %d ok, %d failed, %d clean connection ends, %d not sent (GOAWAY had arrived), %d generations",
		s.kind, s.ok, s.failed, s.cleanEnds, s.unsent, len(s.pids))
}

// wsClient keeps one WebSocket open at a time, sends a message every pace
// and checks its echo, never sending a message twice. A read goroutine
// sees the server's BYE as soon as it arrives: read while idle, the client
// leaves at once; read while it waits for an echo, it waits on (the echo
// still comes) and leaves after it. Leaving is the close handshake (1000),
// then a new connection, which must reach a newer generation. A message
// never echoed is a failure, and so is a connection that ended any other
// way, a close 1001 included: the server owes a client that knows BYE its
// BYE, then every echo.
func wsClient(ctx context.Context, addr string, id int, pace time.Duration, st *stats) {
	byePID := 0
	n := 0
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, _, err := websocket.Dial(dctx, "ws://"+addr+"/ws", &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		})
		cancel()
		if err != nil {
			st.fail("ws %d: dial: %v", id, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		type read struct {
			data []byte
			err  error
		}
		reads := make(chan read, 1)
		go func() {
			defer close(reads)
			for {
				_, data, err := c.Read(context.Background())
				reads <- read{data, err}
				if err != nil {
					return
				}
			}
		}()
		// finish closes the connection at once and waits for the reader,
		// which then returns.
		finish := func() {
			c.CloseNow()
			for range reads {
			}
		}
		next := func() read {
			select {
			case r, ok := <-reads:
				if !ok {
					return read{err: net.ErrClosed}
				}
				return r
			case <-time.After(10 * time.Second):
				return read{err: errors.New("no message within 10s")}
			}
		}
		r := next()
		pid, perr := strconv.Atoi(strings.TrimPrefix(string(r.data), "HELLO "))
		if r.err != nil || perr != nil {
			st.fail("ws %d: hello %q: %v", id, r.data, r.err)
			finish()
			continue
		}
		st.add(func(s *stats) {
			s.pids[pid]++
			if pid == byePID {
				s.samePID++
			}
		})
		bye := "BYE " + strconv.Itoa(pid)
		// idle handles what arrived while nothing was owed: only BYE or
		// the end of the connection may.
		var end error
		sawBye := false
		idle := func(r read) {
			switch {
			case r.err != nil:
				end = r.err
			case string(r.data) == bye:
				sawBye = true
			default:
				end = fmt.Errorf("unexpected message %q", r.data)
			}
		}
	conn:
		for ctx.Err() == nil && end == nil && !sawBye {
			select {
			case r := <-reads:
				idle(r)
				break conn
			default:
			}
			n++
			msg := fmt.Appendf(nil, "ws %d message %d", id, n)
			sent := time.Now()
			if err := c.Write(context.Background(), websocket.MessageText, msg); err != nil {
				end = fmt.Errorf("writing %q: %w", msg, err)
				st.add(func(s *stats) { s.lost++ })
				break
			}
			byeFirst := false
			for {
				r := next()
				if r.err == nil && string(r.data) == string(msg) {
					break
				}
				if r.err == nil && !sawBye && string(r.data) == bye {
					sawBye, byeFirst = true, true
					continue
				}
				if r.err == nil {
					r.err = fmt.Errorf("got %q", r.data)
				}
				end = fmt.Errorf("%q never echoed: %w", msg, r.err)
				st.add(func(s *stats) { s.lost++ })
				break conn
			}
			st.lat.Record(sent, time.Since(sent))
			st.add(func(s *stats) {
				s.ok++
				if byeFirst {
					s.afterBye++
				}
			})
			if sawBye {
				break
			}
			select {
			case r := <-reads:
				idle(r)
			case <-time.After(pace):
			case <-ctx.Done():
			}
		}
		switch {
		case end != nil:
			st.fail("ws %d to %d: connection ended with %v, want BYE", id, pid, end)
			finish()
		case sawBye:
			// Leave as the protocol asks: the close handshake, which the
			// server must answer.
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				st.fail("ws %d to %d: close after BYE: %v", id, pid, err)
			} else {
				st.add(func(s *stats) { s.cleanEnds++ })
			}
			byePID = pid
			finish()
		default: // the test is over
			c.Close(websocket.StatusNormalClosure, "done")
			finish()
		}
	}
}

// h2Burst is how many streams an h2Client keeps in flight at once.
const h2Burst = 4

// h2Client sends bursts of h2Burst concurrent GET / on one HTTP/2
// connection at a time (never a pool, never a retry of its own). When the connection can take
// no new request it checks that the server said GOAWAY (NO_ERROR) and that
// nothing was reset, closes it and dials the next one.
func h2Client(ctx context.Context, addr string, useTLS bool, id int, st *stats) {
	tr := &http2.Transport{AllowHTTP: true}
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	var (
		cc       *http2.ClientConn
		w        *h2watch.Conn
		connPID  int
		lastPIDs []int // generations that sent this client a GOAWAY
	)
	retire := func() {
		w.Closing()
		goAways, _ := w.GoAways()
		end := w.End()
		cc.Close()
		switch {
		case len(goAways) == 0 || goAways[0] != 0:
			st.fail("%s %d to %d: connection unusable without a graceful GOAWAY (GOAWAY codes %v, read error %v)", scheme, id, connPID, goAways, end)
		case end != nil && !errors.Is(end, io.EOF) && !errors.Is(end, net.ErrClosed):
			// net.ErrClosed: the client connection closed itself, idle
			// after the GOAWAY, as x/net's ClientConn does.
			st.fail("%s %d to %d: connection ended with %v after GOAWAY", scheme, id, connPID, end)
		default:
			st.add(func(s *stats) { s.cleanEnds++ })
			lastPIDs = append(lastPIDs, connPID)
		}
		cc, w, connPID = nil, nil, 0
	}
	for ctx.Err() == nil {
		if cc != nil && !cc.CanTakeNewRequest() {
			retire()
		}
		if cc == nil {
			raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				st.fail("%s %d: dial: %v", scheme, id, err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			c := raw
			if useTLS {
				tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
				if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
					st.fail("%s %d: TLS handshake: %v (ALPN %q)", scheme, id, err, tc.ConnectionState().NegotiatedProtocol)
					raw.Close()
					continue
				}
				c = tc
			}
			w = &h2watch.Conn{Conn: c}
			if cc, err = tr.NewClientConn(w); err != nil {
				st.fail("%s %d: new client conn: %v", scheme, id, err)
				c.Close()
				cc = nil
				continue
			}
		}
		// A burst of concurrent streams, as browsers and proxies send
		// them: a GOAWAY that names only the streams the server has seen
		// would refuse those still on the wire.
		type result struct {
			resp *http.Response
			err  error
			sent time.Time
			took time.Duration
		}
		results := make([]result, h2Burst)
		var burst sync.WaitGroup
		for i := range results {
			burst.Go(func() {
				r := &results[i]
				req, _ := http.NewRequest("GET", scheme+"://"+addr+"/", nil)
				rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				r.sent = time.Now()
				r.resp, r.err = cc.RoundTrip(req.WithContext(rctx))
				if r.err == nil {
					_, r.err = io.Copy(io.Discard, r.resp.Body)
					r.resp.Body.Close()
				}
				r.took = time.Since(r.sent)
			})
		}
		burst.Wait()
		broken := false
		for _, r := range results {
			switch err, resp := r.err, r.resp; {
			case err != nil && strings.Contains(err.Error(), "graceful shutdown GOAWAY"):
				// The server never processed it (its GOAWAY said so). The
				// protocol lets a client send it again, but many do not
				// (h2load, proxies): with the drain's two GOAWAYs no stream
				// the client opened before it knew is refused, so this is a
				// failure.
				st.fail("%s %d to %d: refused by the GOAWAY: %v", scheme, id, connPID, err)
				broken = true
			case err != nil && strings.Contains(err.Error(), "client conn not usable"):
				// The GOAWAY arrived before this stream was opened: the
				// request never left the client.
				st.add(func(s *stats) { s.unsent++ })
			case err != nil:
				st.fail("%s %d to %d: %v", scheme, id, connPID, err)
				broken = true
			case resp.StatusCode != 200 || resp.ProtoMajor != 2:
				st.fail("%s %d: %s %s", scheme, id, resp.Proto, resp.Status)
			default:
				pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
				st.lat.Record(r.sent, r.took)
				st.add(func(s *stats) {
					s.ok++
					if connPID == 0 {
						s.pids[pid]++
						if slices.Contains(lastPIDs, pid) {
							s.samePID++
						}
					}
				})
				connPID = pid
			}
		}
		if broken {
			cc.Close()
			cc, w = nil, nil
		}
	}
	if cc != nil {
		w.Closing()
		cc.Close()
	}
}

func TestUpgradesUnderLoad(t *testing.T) {
	const upgrades = 20
	dir := t.TempDir()
	addr, err := harness.FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	tlsAddr, err := harness.FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "web.pid")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, logPath := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-tls-addr", tlsAddr, "-pidfile", pidFile}, PIDFile: pidFile})

	ws, h2c, h2tls := newStats("websocket"), newStats("h2c"), newStats("h2 over TLS")
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { wsClient(loadCtx, addr, i, 5*time.Millisecond, ws) })
		wg.Go(func() { h2Client(loadCtx, addr, false, i, h2c) })
		wg.Go(func() { h2Client(loadCtx, tlsAddr, true, i, h2tls) })
	}
	time.Sleep(300 * time.Millisecond)
	var exits []time.Duration
	var signalled []time.Time
	for i := range upgrades {
		u, err := s.Upgrade(ctx)
		if err != nil {
			stopLoad()
			wg.Wait()
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		exits = append(exits, u.OldExited.Sub(u.Ready))
		signalled = append(signalled, u.Signalled)
		if u.OldReaped && (!u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0) {
			t.Errorf("upgrade %d: old generation ended with %v", i+1, u.OldStatus)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	wg.Wait()
	slices.Sort(exits)
	t.Logf("%d upgrades; old generation gone after the new one was ready: median %v, max %v", upgrades,
		exits[len(exits)/2].Round(time.Millisecond), exits[len(exits)-1].Round(time.Millisecond))
	for _, st := range []*stats{ws, h2c, h2tls} {
		t.Log(st)
		t.Logf("%s: %s", st.kind, st.lat.Summary(signalled, 500*time.Millisecond))
		if st.failed != 0 {
			t.Errorf("%s: %d failures: %s", st.kind, st.failed, strings.Join(st.errs, "\n"))
		}
		if st.cleanEnds < upgrades*4*9/10 {
			t.Errorf("%s: %d clean connection ends, want about %d (every connection at every upgrade)", st.kind, st.cleanEnds, upgrades*4)
		}
		if st.samePID != 0 {
			t.Errorf("%s: %d reconnections reached the generation that ended them", st.kind, st.samePID)
		}
		if len(st.pids) < upgrades {
			t.Errorf("%s: connections reached %d generations, want %d", st.kind, len(st.pids), upgrades+1)
		}
	}
	stctx, stcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stcancel()
	if st, err := s.Stop(stctx); err != nil || st.ExitStatus() != 0 {
		t.Errorf("stop: %v, %v; want exit status 0", st, err)
	}
	b, _ := os.ReadFile(logPath)
	var reports []string
	for l := range strings.Lines(string(b)) {
		if i := strings.Index(l, "report.open="); i >= 0 {
			reports = append(reports, strings.TrimSpace(l[i:]))
		}
	}
	if len(reports) > 1 {
		t.Logf("%d drain reports, e.g. %s", len(reports), reports[len(reports)/2])
	}
}

// TestWebSocketPastDeadlineIsCut holds a WebSocket whose client reads
// nothing once greeted, so it answers neither the BYE nor the close frame
// that follows it after the grace, and checks that the drain cuts it at
// the deadline (not at coder/websocket's own 5 s close-handshake timeout)
// and reports it.
func TestWebSocketPastDeadlineIsCut(t *testing.T) {
	dir := t.TempDir()
	addr, err := harness.FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "web.pid")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, logPath := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile, "-drain-timeout", "700ms"}, PIDFile: pidFile})
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, hello, err := c.Read(ctx); err != nil || !strings.HasPrefix(string(hello), "HELLO ") {
		t.Fatalf("hello %q, %v", hello, err)
	}
	// From now on the client reads nothing: the BYE goes unheeded, and
	// the close frame after the grace (a quarter of 700ms) unanswered.
	pid := s.PID()
	begin := time.Now()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := s.WaitExit(ctx, pid)
	took := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server exited %v after SIGTERM (deadline 700ms), status %d", took.Round(time.Millisecond), st.ExitStatus())
	if took < 650*time.Millisecond || took > 1500*time.Millisecond {
		t.Errorf("exited %v after SIGTERM, want right after the 700ms deadline", took)
	}
	b, _ := os.ReadFile(logPath)
	if !strings.Contains(string(b), "drain web: 1 connection(s) cut at the deadline") ||
		!strings.Contains(string(b), "report.cut=1") {
		t.Errorf("log does not report the cut:\n%s", b)
	}
	if st.ExitStatus() != 1 {
		t.Errorf("exit status %d, want 1 when a connection was cut", st.ExitStatus())
	}
}

// TestWebSocketUpgradesLoseNothing upgrades the server 20 times while
// WebSocket clients that never resend exchange messages as fast as their
// echoes come back, and asserts that no message went unechoed, that every
// connection ended with BYE and the client's close, and that every
// upgrade produced a generation that serves, both HTTP and the WebSocket
// clients' next connections.
func TestWebSocketUpgradesLoseNothing(t *testing.T) {
	const (
		upgrades = 20
		clients  = 8
	)
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "web.pid")
	s, _ := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile}, PIDFile: pidFile})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ws := newStats("websocket")
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { wsClient(loadCtx, addr, i, time.Millisecond, ws) })
	}
	time.Sleep(300 * time.Millisecond)
	prev := s.PID()
	var ups []harness.Upgrade
	for i := range upgrades {
		u, err := s.Upgrade(ctx)
		if err != nil {
			stopLoad()
			wg.Wait()
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		checkGeneration(t, i+1, prev, u, addr)
		prev = u.New
		ups = append(ups, u)
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	wg.Wait()
	t.Log(ws)
	if ws.failed != 0 {
		t.Errorf("%d failures: %s", ws.failed, strings.Join(ws.errs, "\n"))
	}
	if ws.cleanEnds < upgrades*clients*9/10 {
		t.Errorf("%d connections ended with BYE and the client's close, want about %d (every connection at every upgrade)", ws.cleanEnds, upgrades*clients)
	}
	if ws.samePID != 0 {
		t.Errorf("%d reconnections reached the generation that had sent them BYE", ws.samePID)
	}
	for i, u := range ups {
		if ws.pids[u.New] == 0 {
			t.Errorf("upgrade %d: no WebSocket reached the new generation %d", i+1, u.New)
		}
	}
}

// TestWebSocketByeGrace holds a WebSocket whose client ignores BYE, and
// checks that the server goes on echoing after the BYE, then closes with
// 1001 about -bye-grace after it, and that the generation then exits
// cleanly, long before the drain's deadline.
func TestWebSocketByeGrace(t *testing.T) {
	const grace = 400 * time.Millisecond
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "web.pid")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, _ := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile, "-bye-grace", grace.String(), "-drain-timeout", "20s"}, PIDFile: pidFile})
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	pid := s.PID()
	if _, hello, err := c.Read(ctx); err != nil || string(hello) != "HELLO "+strconv.Itoa(pid) {
		t.Fatalf("hello %q, %v; want HELLO %d", hello, err, pid)
	}
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, bye, err := c.Read(ctx); err != nil || string(bye) != "BYE "+strconv.Itoa(pid) {
		t.Fatalf("after SIGTERM: %q, %v; want BYE %d", bye, err, pid)
	}
	byeAt := time.Now()
	// Ignoring BYE: one more message, which is owed its echo.
	if err := c.Write(ctx, websocket.MessageText, []byte("after BYE")); err != nil {
		t.Fatal(err)
	}
	if _, echo, err := c.Read(ctx); err != nil || string(echo) != "after BYE" {
		t.Fatalf("echo after BYE: %q, %v", echo, err)
	}
	// The next read sees the server's close frame, and answers it.
	_, data, err := c.Read(ctx)
	took := time.Since(byeAt)
	t.Logf("close %v %v after BYE (grace %v)", websocket.CloseStatus(err), took.Round(time.Millisecond), grace)
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("after the echo: %q, %v; want close 1001", data, err)
	}
	// The server starts its timer once the BYE is written, a moment
	// before the client reads it: took can fall short of the grace by
	// that moment, and exceed it by the close frame's way here.
	if took < grace-100*time.Millisecond || took > grace+time.Second {
		t.Errorf("close 1001 %v after BYE was read, want about the %v grace", took, grace)
	}
	st, err := s.WaitExit(ctx, pid)
	if err != nil {
		t.Fatal(err)
	}
	if exited := time.Since(byeAt); !st.Exited() || st.ExitStatus() != 0 || exited > 5*time.Second {
		t.Errorf("server ended with wait status %#x %v after BYE; want exit status 0, well before the 20s deadline", uint32(st), exited.Round(time.Millisecond))
	}
}

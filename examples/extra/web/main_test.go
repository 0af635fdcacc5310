//go:build unix

//lint:file-ignore SA1019 x/net's deprecated http2.ClientConn runs over any net.Conn, so the test can read the frames under TLS; net/http's ClientConn needs a *tls.Conn from its TLS dialer, whose frames nobody outside can see.

package main

// TestUpgradesUnderLoad builds this program (with -race) and upgrades it 20
// times while WebSocket, h2c and HTTP/2-over-TLS clients talk to it at
// once, each kind counting its own failures with clients that never retry
// silently.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
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
	// close (close frame 1001; GOAWAY NO_ERROR then EOF).
	cleanEnds int64
	// resent: WebSocket messages that crossed the server's close frame;
	// the protocol lets the client send them again, and it did, to the
	// next generation. Counted, not hidden. (An HTTP/2 request the
	// server's GOAWAY left unprocessed is a failure.)
	resent int64
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
	return fmt.Sprintf("%s: %d ok, %d failed, %d clean connection ends, %d resent after the server said it had not processed them, %d not sent (GOAWAY had arrived), %d generations",
		s.kind, s.ok, s.failed, s.cleanEnds, s.resent, s.unsent, len(s.pids))
}

// wsClient keeps one WebSocket open at a time, sends a message every pace
// and checks its echo. A read goroutine sees the server's close frame as
// soon as it arrives, so the client sends nothing after it, except a
// message that crossed it on the wire, which it resends.
func wsClient(ctx context.Context, addr string, id int, pace time.Duration, st *stats) {
	byePID := 0
	var pending []byte
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
			for {
				_, data, err := c.Read(context.Background())
				reads <- read{data, err}
				if err != nil {
					return
				}
			}
		}()
		next := func() read {
			select {
			case r := <-reads:
				return r
			case <-time.After(10 * time.Second):
				return read{err: errors.New("no message within 10s")}
			}
		}
		r := next()
		pid, perr := strconv.Atoi(strings.TrimPrefix(string(r.data), "HELLO "))
		if r.err != nil || perr != nil {
			st.fail("ws %d: hello %q: %v", id, r.data, r.err)
			c.CloseNow()
			for r.err == nil {
				r = next()
			}
			continue
		}
		st.add(func(s *stats) {
			s.pids[pid]++
			if pid == byePID {
				s.samePID++
			}
		})
		var end error
	conn:
		for ctx.Err() == nil {
			select {
			case r := <-reads: // nothing is owed: only a close can come
				end = r.err
				break conn
			default:
			}
			msg := pending
			if msg == nil {
				n++
				msg = fmt.Appendf(nil, "ws %d message %d", id, n)
			}
			sent := time.Now()
			if err := c.Write(context.Background(), websocket.MessageText, msg); err != nil {
				pending = msg
				end = next().err // the reason is the read side's
				st.add(func(s *stats) { s.resent++ })
				break
			}
			r := next()
			if r.err != nil {
				pending = msg
				end = r.err
				st.add(func(s *stats) { s.resent++ })
				break
			}
			if string(r.data) != string(msg) {
				st.fail("ws %d to %d: got %q for %q", id, pid, r.data, msg)
				end = errors.New("mismatch")
				break
			}
			pending = nil
			st.lat.Record(sent, time.Since(sent))
			st.add(func(s *stats) { s.ok++ })
			select {
			case r := <-reads:
				end = r.err
				break conn
			case <-time.After(pace):
			case <-ctx.Done():
			}
		}
		switch {
		case end == nil: // the test is over
			c.Close(websocket.StatusNormalClosure, "done")
			for next().err == nil {
			}
		case websocket.CloseStatus(end) == websocket.StatusGoingAway:
			st.add(func(s *stats) { s.cleanEnds++ })
			byePID = pid
			c.CloseNow()
		default:
			st.fail("ws %d to %d: connection ended with %v, want close 1001", id, pid, end)
			c.CloseNow()
		}
	}
}

// frameWatcher parses the HTTP/2 frames the client reads (after TLS, if
// any), to see GOAWAY, and how the connection ended.
type frameWatcher struct {
	net.Conn
	mu      sync.Mutex
	buf     []byte
	goAways []uint32
	end     error
	closing bool
}

func (w *frameWatcher) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p[:n]...)
	for len(w.buf) >= 9 {
		length := int(w.buf[0])<<16 | int(w.buf[1])<<8 | int(w.buf[2])
		if len(w.buf) < 9+length {
			break
		}
		if w.buf[3] == 0x7 && length >= 8 {
			w.goAways = append(w.goAways, binary.BigEndian.Uint32(w.buf[13:17]))
		}
		w.buf = w.buf[9+length:]
	}
	if err != nil && w.end == nil && !w.closing {
		w.end = err
	}
	return n, err
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
		w        *frameWatcher
		connPID  int
		lastPIDs []int // generations that sent this client a GOAWAY
	)
	retire := func() {
		w.mu.Lock()
		w.closing = true
		goAways, end := slices.Clone(w.goAways), w.end
		w.mu.Unlock()
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
			w = &frameWatcher{Conn: c}
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
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
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

// TestWebSocketPastDeadlineIsCut holds a WebSocket whose client never
// answers the close frame, and checks that the drain cuts it at the
// deadline (not at coder/websocket's own 5 s close-handshake timeout) and
// reports it.
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
	// From now on the client reads nothing: the close frame goes unanswered.
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

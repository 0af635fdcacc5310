package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testPID is what the test servers put in X-Pid; any constant would do.
const testPID = 4242

// handler serves the same routes as the real servers: / (with ?sleep=) and
// /stream?dur=, 10 ms per line here so that tests stay short.
func handler(pid int) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", strconv.Itoa(pid))
		if s := r.URL.Query().Get("sleep"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			time.Sleep(d)
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("dur"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n := int(d / (10 * time.Millisecond))
		w.Header().Set("X-Pid", strconv.Itoa(pid))
		w.Header().Set("X-Lines", strconv.Itoa(n))
		for i := range n {
			fmt.Fprintf(w, "line %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond)
		}
	})
	return mux
}

// countingServer is an httptest server that counts the connections it
// accepted.
type countingServer struct {
	*httptest.Server
	conns atomic.Int64
}

func startHTTP(t *testing.T, h http.Handler) *countingServer {
	t.Helper()
	s := &countingServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func addrOf(s *httptest.Server) string { return s.Listener.Addr().String() }

// rawServer runs handle on every accepted connection, to misbehave in ways
// net/http never does.
type rawServer struct {
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startRaw(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() {
				defer c.Close()
				handle(c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Pid: 7\r\n\r\nok\n"

// run runs cfg with a bounded context and fails the test on a config
// error.
func run(t *testing.T, cfg Config) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Requests != res.OK+res.Failed() {
		t.Errorf("Requests %d != OK %d + Failed %d", res.Requests, res.OK, res.Failed())
	}
	if res.Latency.Count() != res.Requests {
		t.Errorf("Latency.Count() = %d, want %d", res.Latency.Count(), res.Requests)
	}
	t.Log(res)
	for _, e := range res.Errors {
		t.Log("  ", e)
	}
	return res
}

// wantOnly checks that every failure is of class c and that there are n.
func wantOnly(t *testing.T, res Result, c Class, n int64) {
	t.Helper()
	if res.Failures[c] != n || res.Failed() != n {
		t.Errorf("failures %v, want exactly %d of class %s", res.Failures, n, c)
	}
}

func TestHealthyServer(t *testing.T) {
	for _, tc := range []struct {
		cfg       Config
		wantConns func(requests int64) int64
	}{
		{Config{Kind: KeepAlive, Workers: 4, MaxRequests: 400}, func(int64) int64 { return 4 }},
		{Config{Kind: NewConn, Workers: 4, MaxRequests: 200}, func(n int64) int64 { return n }},
		{Config{Kind: Slow, Workers: 4, MaxRequests: 12, Sleep: 20 * time.Millisecond}, func(int64) int64 { return 4 }},
		{Config{Kind: Stream, Workers: 2, MaxRequests: 6, StreamDur: 50 * time.Millisecond}, func(int64) int64 { return 2 }},
	} {
		t.Run(string(tc.cfg.Kind), func(t *testing.T) {
			srv := startHTTP(t, handler(testPID))
			tc.cfg.Addr = addrOf(srv.Server)
			res := run(t, tc.cfg)
			if res.Requests != tc.cfg.MaxRequests || res.OK != res.Requests || res.Failed() != 0 {
				t.Errorf("requests %d ok %d failed %d, want %d all ok", res.Requests, res.OK, res.Failed(), tc.cfg.MaxRequests)
			}
			if len(res.PIDs) != 1 || res.PIDs[testPID] != res.Requests || res.Generations() != 1 {
				t.Errorf("PIDs = %v, want {%d: %d}", res.PIDs, testPID, res.Requests)
			}
			if res.FirstSeen[testPID].IsZero() || res.LastSeen[testPID].Before(res.FirstSeen[testPID]) {
				t.Errorf("FirstSeen %v LastSeen %v", res.FirstSeen, res.LastSeen)
			}
			if res.Errors != nil {
				t.Errorf("Errors = %q", res.Errors)
			}
			if got, want := srv.conns.Load(), tc.wantConns(res.Requests); got != want {
				t.Errorf("server accepted %d connections, want %d", got, want)
			}
			if tc.cfg.Kind == Slow && res.Latency.Quantile(0.5) < 20*time.Millisecond {
				t.Errorf("slow p50 %v < requested sleep", res.Latency.Quantile(0.5))
			}
		})
	}
}

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler(testPID))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	for _, k := range []Kind{KeepAlive, NewConn} {
		res := run(t, Config{Kind: k, Network: "unix", Addr: path, MaxRequests: 100})
		if res.OK != 100 || res.PIDs[testPID] != 100 {
			t.Errorf("%s over unix: %v", k, res)
		}
	}
}

// A response with Connection: close ends the connection; the next request
// dials anew and nothing fails.
func TestConnectionCloseIsNotAFailure(t *testing.T) {
	var n atomic.Int64
	srv := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("X-Pid", "1")
	}))
	res := run(t, Config{Kind: KeepAlive, Addr: addrOf(srv.Server), Workers: 1, MaxRequests: 30})
	wantOnly(t, res, EOF, 0)
	if res.OK != 30 {
		t.Errorf("OK = %d, want 30", res.OK)
	}
	if got := srv.conns.Load(); got != 10 {
		t.Errorf("server accepted %d connections, want 10", got)
	}
}

// The server answers one request, then closes the connection without
// saying Connection: close when the next request arrives: the race an
// upgrade causes on keep-alive connections. The next request fails with
// EOF, is not retried, and the one after dials again.
func TestEOFOnReusedConnection(t *testing.T) {
	srv := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, okResponse)
		// Read the whole second request before closing: unread data would
		// make the kernel send a reset instead of a FIN.
		http.ReadRequest(br)
	})
	res := run(t, Config{Kind: KeepAlive, Addr: srv.addr(), Workers: 1, MaxRequests: 4})
	wantOnly(t, res, EOF, 2)
	if res.OK != 2 || srv.accepted.Load() != 2 {
		t.Errorf("OK %d, server accepted %d; want 2 and 2 (no retry)", res.OK, srv.accepted.Load())
	}
	if len(res.Errors) != 2 || !strings.Contains(res.Errors[0], "request 2 on connection") {
		t.Errorf("Errors = %q, want 2 naming the reused request", res.Errors)
	}
}

func TestReset(t *testing.T) {
	srv := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		c.(*net.TCPConn).SetLinger(0) // close sends RST
		c.Close()
	})
	res := run(t, Config{Kind: KeepAlive, Addr: srv.addr(), Workers: 2, MaxRequests: 6})
	wantOnly(t, res, Reset, 6)
}

func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	res := run(t, Config{Kind: NewConn, Addr: addr, Workers: 2, MaxRequests: 5})
	wantOnly(t, res, Refused, 5)
	if len(res.PIDs) != 0 {
		t.Errorf("PIDs = %v, want none", res.PIDs)
	}
}

func TestStatus(t *testing.T) {
	var n atomic.Int64
	srv := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", "9")
		if n.Add(1)%2 == 0 {
			http.Error(w, "boom", http.StatusInternalServerError)
		}
	}))
	res := run(t, Config{Kind: KeepAlive, Addr: addrOf(srv.Server), Workers: 1, MaxRequests: 10})
	wantOnly(t, res, Status, 5)
	if res.PIDs[9] != 10 {
		t.Errorf("PIDs = %v: failed responses must count too", res.PIDs)
	}
	if !strings.Contains(res.Errors[0], "500") {
		t.Errorf("Errors[0] = %q, want the status", res.Errors[0])
	}
}

func TestShortStream(t *testing.T) {
	t.Run("too few lines", func(t *testing.T) {
		srv := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Lines", "5")
			io.WriteString(w, "a\nb\n")
		}))
		res := run(t, Config{Kind: Stream, Addr: addrOf(srv.Server), Workers: 1, MaxRequests: 3})
		wantOnly(t, res, ShortStream, 3)
		if !strings.Contains(res.Errors[0], "got 2 of 5 lines") {
			t.Errorf("Errors[0] = %q", res.Errors[0])
		}
	})
	t.Run("cut", func(t *testing.T) {
		srv := startRaw(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Lines: 5\r\n\r\n4\r\na\nb\n\r\n")
			// Return without the last chunk: the body ends early.
		})
		res := run(t, Config{Kind: Stream, Addr: srv.addr(), Workers: 1, MaxRequests: 3})
		wantOnly(t, res, ShortStream, 3)
		if !strings.Contains(res.Errors[0], "read body") {
			t.Errorf("Errors[0] = %q", res.Errors[0])
		}
	})
	t.Run("too many lines", func(t *testing.T) {
		srv := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Lines", "1")
			io.WriteString(w, "a\nb\n")
		}))
		res := run(t, Config{Kind: Stream, Addr: addrOf(srv.Server), Workers: 1, MaxRequests: 2})
		wantOnly(t, res, Other, 2)
	})
}

func TestTimeout(t *testing.T) {
	srv := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		// Read and never answer, until the client or the cleanup closes.
		io.Copy(io.Discard, br)
	})
	res := run(t, Config{Kind: KeepAlive, Addr: srv.addr(), Workers: 2, MaxRequests: 4, Timeout: 100 * time.Millisecond})
	wantOnly(t, res, Timeout, 4)
	if res.Elapsed < 200*time.Millisecond {
		t.Errorf("Elapsed %v, want >= 2 timeouts in a row", res.Elapsed)
	}
}

// Requests in flight when ctx ends complete and count as OK; no new one
// starts.
func TestStopLetsInFlightFinish(t *testing.T) {
	arrived := make(chan struct{}, 3)
	srv := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("X-Pid", "1")
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() {
		res, err := Run(ctx, Config{Kind: Slow, Addr: addrOf(srv.Server), Workers: 3})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	for range 3 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
			t.Fatal("requests did not arrive")
		}
	}
	stopped := time.Now()
	cancel()
	res := <-done
	t.Log(res)
	if res.Requests != 3 || res.OK != 3 {
		t.Errorf("requests %d ok %d, want 3 and 3", res.Requests, res.OK)
	}
	if time.Since(stopped) > 5*time.Second {
		t.Errorf("Run took %v after the stop", time.Since(stopped))
	}
}

func TestPace(t *testing.T) {
	srv := startHTTP(t, handler(testPID))
	res := run(t, Config{Kind: KeepAlive, Addr: addrOf(srv.Server), Workers: 1, MaxRequests: 5, Pace: 50 * time.Millisecond})
	if res.OK != 5 || res.Elapsed < 200*time.Millisecond {
		t.Errorf("%v: want 5 requests with 4 pauses of 50ms between them", res)
	}
}

func TestSamples(t *testing.T) {
	srv := startHTTP(t, handler(testPID))
	res := run(t, Config{Kind: KeepAlive, Addr: addrOf(srv.Server), Workers: 3, MaxRequests: 50, Samples: true})
	if len(res.Samples) != 50 {
		t.Fatalf("%d samples, want 50", len(res.Samples))
	}
	for i, s := range res.Samples {
		if s.PID != testPID || s.Class != "" || s.Latency <= 0 {
			t.Errorf("sample %d = %+v", i, s)
		}
		if i > 0 && s.Start.Before(res.Samples[i-1].Start) {
			t.Errorf("samples not in start order at %d", i)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: "bogus", Addr: "127.0.0.1:1"},
		{Kind: KeepAlive, Addr: "10.1.2.3:80"},
		{Kind: KeepAlive, Addr: "example.com:80"},
		{Kind: KeepAlive, Addr: "127.0.0.1"},
		{Kind: KeepAlive, Network: "udp", Addr: "127.0.0.1:1"},
		{Kind: KeepAlive, Network: "unix"},
		{Kind: KeepAlive, Addr: "127.0.0.1:1", Workers: -1},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded, want a config error", cfg)
		}
	}
}

func TestClassify(t *testing.T) {
	op := func(err error) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
	}
	for _, tc := range []struct {
		err  error
		want Class
	}{
		{op(syscall.ECONNREFUSED), Refused},
		{op(syscall.ECONNRESET), Reset},
		{fmt.Errorf("write: %w", op(syscall.EPIPE)), Reset},
		{io.EOF, EOF},
		{fmt.Errorf("body: %w", io.ErrUnexpectedEOF), EOF},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, Timeout},
		{op(syscall.EMFILE), Other},
		{errors.New("malformed HTTP response"), Other},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 {
		t.Error("empty histogram quantile != 0")
	}
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	h.Record(-1)
	within := func(got, want time.Duration) bool {
		return got >= want && float64(got) <= float64(want)*1.0625
	}
	if got := h.Quantile(0.5); !within(got, 500*time.Millisecond) {
		t.Errorf("p50 = %v", got)
	}
	if got := h.Quantile(0.99); !within(got, 990*time.Millisecond) {
		t.Errorf("p99 = %v", got)
	}
	if got := h.Quantile(1); got != time.Second || h.Max() != time.Second {
		t.Errorf("p100 = %v max %v, want 1s", got, h.Max())
	}
	for _, d := range []time.Duration{0, 1, 15, 16, 17, 31, 32, 1<<40 + 12345, 1<<63 - 1} {
		if i := bucketOf(d); bucketMax(i) < d || (i > 0 && bucketMax(i-1) >= d) {
			t.Errorf("%d falls in bucket %d = (%d, %d]", d, i, bucketMax(i-1), bucketMax(i))
		}
	}
	var m Histogram
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 2*h.Count() || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Errorf("merge: count %d p50 %v", m.Count(), m.Quantile(0.5))
	}
}

func TestMergeAndString(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	a := newResult(KeepAlive)
	a.Requests, a.OK, a.Failures[EOF] = 10, 9, 1
	a.Errors = []string{"12:00:02.000000 eof worker 0: x"}
	a.PIDs[100], a.FirstSeen[100], a.LastSeen[100] = 10, t0, t0.Add(time.Second)
	a.Latency.Record(time.Millisecond)
	b := newResult(KeepAlive)
	b.Requests, b.OK, b.Failures[Reset] = 5, 4, 1
	b.Errors = []string{"12:00:01.000000 reset worker 1: y"}
	b.PIDs[100], b.FirstSeen[100], b.LastSeen[100] = 2, t0.Add(-time.Second), t0
	b.PIDs[200], b.FirstSeen[200], b.LastSeen[200] = 3, t0.Add(2*time.Second), t0.Add(3*time.Second)
	b.Latency.Record(3 * time.Millisecond)
	b.Elapsed = time.Second

	m := Merge(a, b)
	if m.Requests != 15 || m.OK != 13 || m.Failed() != 2 || m.Kind != KeepAlive {
		t.Errorf("merged %+v", m)
	}
	if m.PIDs[100] != 12 || !m.FirstSeen[100].Equal(t0.Add(-time.Second)) || !m.LastSeen[100].Equal(t0.Add(time.Second)) {
		t.Errorf("merged PIDs %v first %v last %v", m.PIDs, m.FirstSeen, m.LastSeen)
	}
	if got := m.SortedPIDs(); len(got) != 2 || got[0] != 100 || got[1] != 200 {
		t.Errorf("SortedPIDs = %v", got)
	}
	if len(m.Errors) != 2 || !strings.Contains(m.Errors[0], "reset") {
		t.Errorf("merged errors not in time order: %q", m.Errors)
	}
	want := "keepalive: 15 requests in 1.00s, 2 failed (refused 0, reset 1, eof 1, timeout 0, status 0, short-stream 0, other 0), p50 1.02ms p99 3.00ms max 3.00ms, 2 generations"
	if got := m.String(); got != want {
		t.Errorf("String() =\n%s\nwant\n%s", got, want)
	}
	if k := Merge(a, newResult(Stream)).Kind; k != "mixed" {
		t.Errorf("kind of a mixed merge = %q", k)
	}
}

// A server that closes every connection after one response, without
// saying Connection: close. With pauses between requests its FIN arrives
// before the next request: ReuseCheck sees it and dials anew; without the
// check every reuse fails.
func TestReuseCheck(t *testing.T) {
	srv := startRaw(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, okResponse)
	})
	cfg := Config{Kind: KeepAlive, Addr: srv.addr(), Workers: 1, MaxRequests: 6, Pace: 20 * time.Millisecond}
	res := run(t, cfg)
	if res.Failed() != 3 || res.Failures[EOF]+res.Failures[Reset] != 3 || res.ClosedIdle != 0 {
		t.Errorf("without ReuseCheck: %v, want every second request to fail with eof or reset", res)
	}
	cfg.ReuseCheck = true
	res = run(t, cfg)
	if res.Failed() != 0 || res.ClosedIdle != 5 {
		t.Errorf("with ReuseCheck: %v, want 0 failed and 5 closed idle connections", res)
	}
}

func TestNearAndRecorder(t *testing.T) {
	t0 := time.Now()
	var r Recorder
	r.Record(t0, time.Millisecond)                        // at the upgrade
	r.Record(t0.Add(2*time.Second), 100*time.Millisecond) // far from it
	near := Near(r.samples, []time.Time{t0.Add(100 * time.Millisecond)}, 500*time.Millisecond)
	if near.Count() != 1 || near.Max() > 2*time.Millisecond {
		t.Fatalf("near: %d samples, max %v", near.Count(), near.Max())
	}
	if s := r.Summary([]time.Time{t0}, 500*time.Millisecond); !strings.Contains(s, "within ±500ms of an upgrade") {
		t.Fatal(s)
	}
}

func TestClientPort(t *testing.T) {
	// The text a worker writes (loadgen.go), with a real cause.
	e := fmt.Errorf("request %d on connection from %s: %s: %w", 2, "127.0.0.1:41234", "read", io.ErrUnexpectedEOF).Error()
	if p, ok := ClientPort(e); !ok || p != 41234 {
		t.Fatalf("ClientPort(%q) = %d, %v; want 41234", e, p, ok)
	}
	if _, ok := ClientPort("dial tcp 127.0.0.1:80: connection refused"); ok {
		t.Fatal("ClientPort found a port in an error of no connection")
	}
}

// lateness returns how late each sample started against a schedule that
// puts sample j at begin + j*step. Start is never before its slot, and
// begin (Run's) is at or after the time the test took before Run, so a
// negative lateness is a request started early.
func lateness(t *testing.T, samples []Sample, before time.Time, step time.Duration) []time.Duration {
	late := make([]time.Duration, len(samples))
	for j, s := range samples {
		late[j] = s.Start.Sub(before.Add(time.Duration(j) * step))
	}
	t.Logf("lateness: min %v median %v max %v", slices.Min(late), median(late), slices.Max(late))
	return late
}

func median(d []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(d))
	return s[len(s)/2]
}

// scheduleTolerance bounds the median lateness of scheduled requests:
// timer and scheduling latency under -race on a loaded machine (a load
// average of 9 on 2 cores was seen), not the requests' own latency,
// which the schedule absorbs. Each test below makes the effect of the
// mechanism it checks several times larger.
const scheduleTolerance = 50 * time.Millisecond

// onSchedule checks the lateness of requests: none may start before its
// slot (a timer never fires early), and their median must be within
// scheduleTolerance. Single requests may be later, since on a loaded
// machine a goroutine may wait a while for a CPU.
func onSchedule(t *testing.T, late []time.Duration) {
	t.Helper()
	var over int
	for j, l := range late {
		switch {
		case l < 0:
			t.Errorf("request %d started %v before its slot", j, -l)
		case l > scheduleTolerance:
			over++
		}
	}
	if m := median(late); m > scheduleTolerance {
		t.Errorf("median lateness %v (%d of %d requests later than %v), want at most %v",
			m, over, len(late), scheduleTolerance, scheduleTolerance)
	}
}

// sleepOn is a handler that answers at once, except that request n
// (from 0) sleeps d first.
func sleepOn(n int64, d time.Duration) http.Handler {
	var count atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if count.Add(1)-1 == n {
			time.Sleep(d)
		}
		w.Header().Set("X-Pid", "1")
	})
}

// runScheduled runs n requests at interval on workers against h and
// returns the samples and the time taken just before Run.
func runScheduled(t *testing.T, h http.Handler, workers int, interval time.Duration, n int64) ([]Sample, time.Time) {
	t.Helper()
	srv := startHTTP(t, h)
	before := time.Now()
	res := run(t, Config{Kind: KeepAlive, Addr: addrOf(srv.Server), Workers: workers, Interval: interval, MaxRequests: n, Samples: true})
	if res.OK != n || int64(len(res.Samples)) != n {
		t.Fatalf("%d OK, %d samples; want %d", res.OK, len(res.Samples), n)
	}
	return res.Samples, before
}

// Each request starts on its slot, not a pause after the previous one:
// the requests' latency (5 ms or more here) does not add up, as it
// would to 100 ms by the 20th request.
func TestIntervalSchedule(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(5 * time.Millisecond) })
	samples, before := runScheduled(t, h, 1, 20*time.Millisecond, 40)
	onSchedule(t, lateness(t, samples, before, 20*time.Millisecond))
}

// Workers are offset by Interval/Workers: together they start a request
// every 5 ms, not four at once every 20 ms, which would start three in
// four requests early.
func TestIntervalOffsetsWorkers(t *testing.T) {
	samples, before := runScheduled(t, handler(testPID), 4, 20*time.Millisecond, 40)
	onSchedule(t, lateness(t, samples, before, 5*time.Millisecond))
}

// A request that takes 150 ms makes the worker miss seven 20 ms slots;
// the next requests start at once until it is back on its schedule,
// rather than stay 130 ms late. (The stall stays well within maxBehind,
// beyond which the worker would drop the slots instead.)
func TestIntervalCatchesUp(t *testing.T) {
	const every = 20 * time.Millisecond
	samples, before := runScheduled(t, sleepOn(5, 150*time.Millisecond), 1, every, 40)
	late := lateness(t, samples, before, every)
	if late[6] < 100*time.Millisecond {
		t.Fatalf("request 6 only %v late: the stall did not happen", late[6])
	}
	// Request 5 ends at 250 ms or later; 6 to 12 catch up back to back,
	// and from 13 (at 260 ms) the worker is on time again.
	onSchedule(t, late[:6])
	onSchedule(t, late[20:])
}

// A request that takes 400 ms, more than maxBehind, makes the worker drop
// the 19 slots it missed instead of sending them in a burst.
// TestNextSlot checks that it keeps its phase.
func TestIntervalDropsSlotsAfterAStall(t *testing.T) {
	const every = 20 * time.Millisecond
	samples, before := runScheduled(t, sleepOn(2, 400*time.Millisecond), 1, every, 13)
	if samples[2].Latency < 400*time.Millisecond {
		t.Fatalf("request 2 took %v, want the 400ms stall", samples[2].Latency)
	}
	// Request 3 is sent as the stall ends, at about 440 ms; 4 to 12 follow
	// on the schedule, 180 ms in all. Sending the missed slots would start
	// them all at once.
	if span := samples[12].Start.Sub(samples[3].Start); span < 120*time.Millisecond {
		t.Errorf("requests 3 to 12 started within %v, want about 180ms: a burst of missed slots", span)
	}
	onSchedule(t, lateness(t, samples[:2], before, every))
}

// nextSlot's arithmetic, without timers.
func TestNextSlot(t *testing.T) {
	t0 := time.Now()
	ms := time.Millisecond
	for _, tc := range []struct {
		late, want time.Duration // now - slot, and the next slot - slot
	}{
		{0, 10 * ms},
		{3 * ms, 10 * ms},
		{45 * ms, 10 * ms},   // late: catch up, the next one is due already
		{250 * ms, 10 * ms},  // at the bound: still catching up
		{251 * ms, 260 * ms}, // beyond: the slot at 250 ms is this one's
		{405 * ms, 410 * ms},
	} {
		if got := nextSlot(t0, t0.Add(tc.late), 10*ms).Sub(t0); got != tc.want {
			t.Errorf("nextSlot %v late = slot + %v, want + %v", tc.late, got, tc.want)
		}
	}
}

func TestIntervalConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: KeepAlive, Addr: "127.0.0.1:1", Interval: time.Millisecond, Pace: time.Millisecond},
		{Kind: KeepAlive, Addr: "127.0.0.1:1", Interval: -time.Millisecond},
	} {
		// Bounded, so that a config Run accepts fails the test quickly.
		cfg.MaxRequests = 1
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := Run(ctx, cfg)
		cancel()
		if err == nil {
			t.Errorf("Run(%+v) succeeded, want a config error", cfg)
		}
	}
}

// Sample.Reconnect is set exactly on the requests that dialled because
// the server had ended the worker's previous connection.
func TestReconnect(t *testing.T) {
	closeEvery3 := func() http.Handler {
		var n atomic.Int64
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1)%3 == 0 {
				w.Header().Set("Connection", "close")
			}
		})
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		h    http.Handler                       // served with net/http, or
		raw  func(c net.Conn, br *bufio.Reader) // raw
		want func(j int) bool                   // whether request j reconnects
	}{
		{
			name: "connection close", cfg: Config{Kind: KeepAlive, MaxRequests: 30}, h: closeEvery3(),
			want: func(j int) bool { return j > 0 && j%3 == 0 },
		},
		{
			name: "slow, connection close", cfg: Config{Kind: Slow, Sleep: time.Millisecond, MaxRequests: 9}, h: closeEvery3(),
			want: func(j int) bool { return j > 0 && j%3 == 0 },
		},
		{
			name: "newconn", cfg: Config{Kind: NewConn, MaxRequests: 10}, h: handler(testPID),
			want: func(int) bool { return false },
		},
		{
			// After a 500 the worker closes the connection itself.
			name: "status", cfg: Config{Kind: KeepAlive, MaxRequests: 10},
			h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusInternalServerError)
			}),
			want: func(int) bool { return false },
		},
		{
			// As in TestEOFOnReusedConnection: ok, eof, ok, eof.
			name: "eof", cfg: Config{Kind: KeepAlive, MaxRequests: 4},
			raw: func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, okResponse)
				http.ReadRequest(br)
			},
			want: func(j int) bool { return j == 2 },
		},
		{
			// As in TestReuseCheck: every reuse finds the connection closed.
			name: "reuse check", cfg: Config{Kind: KeepAlive, MaxRequests: 6, Pace: 20 * time.Millisecond, ReuseCheck: true},
			raw: func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, okResponse)
			},
			want: func(j int) bool { return j > 0 },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.h != nil {
				tc.cfg.Addr = addrOf(startHTTP(t, tc.h).Server)
			} else {
				tc.cfg.Addr = startRaw(t, tc.raw).addr()
			}
			tc.cfg.Workers, tc.cfg.Samples = 1, true
			res := run(t, tc.cfg)
			if int64(len(res.Samples)) != tc.cfg.MaxRequests {
				t.Fatalf("%d samples, want %d", len(res.Samples), tc.cfg.MaxRequests)
			}
			for j, s := range res.Samples {
				if got := s.Reconnect > 0; got != tc.want(j) || s.Reconnect > s.Latency {
					t.Errorf("request %d (%s): Reconnect %v of latency %v, want reconnection %v", j, s.Class, s.Reconnect, s.Latency, tc.want(j))
				}
			}
		})
	}
}

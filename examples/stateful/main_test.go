//go:build linux

package main

// The test builds this program (with -race) and upgrades it 100 times
// while clients that never retry make requests, and checks the three
// things it hands over: the counter (shared memory), the cache (a
// snapshot) and the request log (a shared open file).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
)

var binary string // built once in TestMain

func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./examples/stateful", true, &binary)) }

type server struct {
	*harness.Server
	addr, logPath string
}

func start(t *testing.T) *server {
	t.Helper()
	dir := t.TempDir()
	s := &server{addr: harness.FreeAddrT(t), logPath: filepath.Join(dir, "requests.log")}
	pidFile := filepath.Join(dir, "stateful.pid")
	s.Server, _ = harness.StartT(t, harness.Config{
		Binary:  binary,
		Args:    []string{"-addr", s.addr, "-pidfile", pidFile, "-log", s.logPath, "-upgrade-timeout", "20s", "-drain-timeout", "10s"},
		PIDFile: pidFile,
	})
	return s
}

// client sends requests written by hand on a raw connection and reads the
// responses with http.ReadResponse: net/http's Transport would silently
// send a request again on a kept-alive connection the server closed, and
// an upgrade that drops requests would go unnoticed. A failed request is
// reported, never repeated.
type client struct {
	addr      string
	keepAlive bool
	conn      net.Conn
	br        *bufio.Reader
}

type response struct {
	status int
	count  uint64 // X-Count
	pid    int    // X-Pid
	body   string
}

func (c *client) do(method, path, body string) (response, error) {
	var r response
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return r, fmt.Errorf("dial: %w", err)
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	fail := func(stage string, err error) (response, error) {
		c.close()
		return r, fmt.Errorf("%s %s: %s: %w", method, path, stage, err)
	}
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	closeHdr := ""
	if !c.keepAlive {
		closeHdr = "Connection: close\r\n"
	}
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: stateful\r\n%sContent-Length: %d\r\n\r\n%s", method, path, closeHdr, len(body), body)
	if _, err := io.WriteString(c.conn, req); err != nil {
		return fail("write", err)
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return fail("read response", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fail("read body", err)
	}
	r.status, r.body = resp.StatusCode, string(b)
	r.count, _ = strconv.ParseUint(resp.Header.Get("X-Count"), 10, 64)
	r.pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	if r.count == 0 {
		return fail("response", fmt.Errorf("status %d without X-Count", r.status))
	}
	if resp.Close || !c.keepAlive {
		c.close()
	}
	return r, nil
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// tally collects every counter value handed out, and every failure.
type tally struct {
	mu       sync.Mutex
	counts   []uint64
	failures []string
	pids     map[int]bool
}

func (t *tally) record(r response, err error) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.failures = append(t.failures, err.Error())
		return false
	}
	t.counts = append(t.counts, r.count)
	t.pids[r.pid] = true
	return true
}

// TestStateAcrossUpgrades upgrades the server 100 times while a
// sequential client (one kept-alive connection at a time) and three
// concurrent ones (a connection per request) ask for the counter, and the
// test stores a cache key before each upgrade and reads every key stored
// so far after it, from the new generation. No request may fail; the
// sequential client's values must rise strictly; every value handed out
// must be unique, and the last one equal to the number of requests
// served; every key must survive every upgrade after it was set; and the
// request log must hold exactly one intact line per request.
func TestStateAcrossUpgrades(t *testing.T) {
	const upgrades = 100
	begin := time.Now()
	s := start(t)
	tl := &tally{pids: map[int]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	var backwards []string
	wg.Go(func() {
		c := &client{addr: s.addr, keepAlive: true}
		defer c.close()
		var last uint64
		for i := 0; i < 200000 && loadCtx.Err() == nil; i++ {
			r, err := c.do("GET", "/count", "")
			if tl.record(r, err) {
				if r.count <= last {
					backwards = append(backwards, fmt.Sprintf("request %d: %d after %d (pid %d)", i, r.count, last, r.pid))
				}
				last = r.count
			}
			time.Sleep(time.Millisecond)
		}
	})
	for range 3 {
		wg.Go(func() {
			c := &client{addr: s.addr}
			for i := 0; i < 100000 && loadCtx.Err() == nil; i++ {
				tl.record(c.do("GET", "/count", ""))
				time.Sleep(3 * time.Millisecond)
			}
		})
	}

	keys := 0
	for i := range upgrades {
		// A key per upgrade, stored before it.
		c := &client{addr: s.addr}
		r, err := c.do("PUT", fmt.Sprintf("/cache/k%d", i), fmt.Sprintf("value %d", i))
		if !tl.record(r, err) || r.status != http.StatusNoContent {
			t.Fatalf("storing key %d: %+v, %v", i, r, err)
		}
		keys++
		u, err := s.Upgrade(ctx)
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		// Every key so far, from the new generation (the old one has
		// stopped accepting: a new connection reaches the new one).
		c = &client{addr: s.addr, keepAlive: true}
		for k := range keys {
			r, err := c.do("GET", fmt.Sprintf("/cache/k%d", k), "")
			if !tl.record(r, err) {
				t.Fatalf("after upgrade %d: reading key %d: %v", i+1, k, err)
			}
			if r.status != http.StatusOK || r.body != fmt.Sprintf("value %d", k) || r.pid != u.New {
				t.Fatalf("after upgrade %d: key k%d = %d %q from pid %d; want %q from the new generation %d", i+1, k, r.status, r.body, r.pid, fmt.Sprintf("value %d", k), u.New)
			}
		}
		c.close()
	}
	stopLoad()
	wg.Wait()
	// The last request: its value is the number of requests served.
	final, err := (&client{addr: s.addr}).do("GET", "/count", "")
	tl.record(final, err)
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if st, err := s.Stop(sctx); err != nil || st.ExitStatus() != 0 {
		t.Errorf("stop: %v, %v; want exit status 0", st, err)
	}

	t.Logf("%d upgrades in %v; %d requests from %d generations, %d failed", upgrades, time.Since(begin).Round(time.Millisecond), len(tl.counts), len(tl.pids), len(tl.failures))
	if len(tl.failures) > 0 {
		t.Errorf("%d requests failed, first: %s", len(tl.failures), strings.Join(tl.failures[:min(5, len(tl.failures))], "; "))
	}
	if len(backwards) > 0 {
		t.Errorf("the sequential client's counter went back %d times: %s", len(backwards), strings.Join(backwards[:min(5, len(backwards))], "; "))
	}
	counts := slices.Clone(tl.counts)
	slices.Sort(counts)
	dups := 0
	for i := 1; i < len(counts); i++ {
		if counts[i] == counts[i-1] {
			dups++
		}
	}
	if dups > 0 {
		t.Errorf("%d counter values were handed out twice", dups)
	}
	if n := uint64(len(tl.counts)); final.count != n || counts[len(counts)-1] != n {
		t.Errorf("final counter %d (highest seen %d), %d requests served: increments were lost or made up", final.count, counts[len(counts)-1], n)
	}
	if len(tl.pids) < upgrades {
		t.Errorf("responses came from %d generations, want all %d", len(tl.pids), upgrades+1)
	}
	checkLog(t, s.logPath, len(tl.counts))
}

var logLine = regexp.MustCompile(`^request ([0-9]+) pid [0-9]+ (GET|PUT) /[a-z0-9/]*$`)

// checkLog checks that the request log holds exactly one intact line for
// each of the n requests.
func checkLog(t *testing.T, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	seen := make(map[int]int, n)
	var bad []string
	for i, l := range lines {
		m := logLine.FindStringSubmatch(l)
		if m == nil {
			bad = append(bad, fmt.Sprintf("line %d: %q", i+1, l))
			continue
		}
		k, _ := strconv.Atoi(m[1])
		seen[k]++
	}
	missing := 0
	for k := 1; k <= n; k++ {
		if seen[k] != 1 {
			missing++
		}
	}
	t.Logf("request log: %d lines (%d bytes), %d requests", len(lines), len(b), n)
	if len(bad) > 0 || missing > 0 || len(lines) != n {
		t.Errorf("request log: %d lines for %d requests; %d requests without exactly one line; %d broken lines, first: %s",
			len(lines), n, missing, len(bad), strings.Join(bad[:min(3, len(bad))], "; "))
	}
}

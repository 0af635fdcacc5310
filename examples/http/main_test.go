//go:build unix

package main

// These tests build this program (with -race) and upgrade it under real load,
// counting failures with a client that never retries.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

var binary string // built once in TestMain

func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./examples/http", true, &binary)) }

type server struct {
	*harness.Server
	addr, log string
}

func start(t *testing.T, args ...string) *server {
	t.Helper()
	return startBinary(t, binary, args...)
}

// startBinary starts bin, which upgrades to whatever is at that path.
func startBinary(t *testing.T, bin string, args ...string) *server {
	t.Helper()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(t.TempDir(), "http.pid")
	s, log := harness.StartT(t, harness.Config{
		Binary:  bin,
		Args:    append([]string{"-addr", addr, "-pidfile", pidFile}, args...),
		PIDFile: pidFile,
	})
	return &server{Server: s, addr: addr, log: log}
}

// upgradesUnderLoad upgrades the server n times while cfg's load runs and
// returns the load's result.
func upgradesUnderLoad(t *testing.T, s *server, cfg loadgen.Config, n int) loadgen.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	cfg.Network, cfg.Addr = "tcp", s.addr
	var (
		res     loadgen.Result
		loadErr error
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		res, loadErr = loadgen.Run(loadCtx, cfg)
	}()
	time.Sleep(300 * time.Millisecond) // load is flowing before the first upgrade
	for i := range n {
		u, err := s.Upgrade(ctx)
		if err != nil {
			stopLoad()
			wg.Wait()
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		t.Logf("upgrade %2d: %d -> %d ready after %v, old exited after %v", i+1, u.Old, u.New,
			u.Ready.Sub(u.Signalled).Round(time.Millisecond), u.OldExited.Sub(u.Signalled).Round(time.Millisecond))
		if code := u.OldStatus.ExitStatus(); u.OldStatus.Exited() && code != 0 {
			t.Errorf("upgrade %d: old generation exited with status %d", i+1, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // and on the last generation
	stopLoad()
	wg.Wait()
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return res
}

func TestUpgradesUnderLoad(t *testing.T) {
	const upgrades = 20
	for _, cfg := range []loadgen.Config{
		{Kind: loadgen.KeepAlive, Workers: 8},
		{Kind: loadgen.NewConn, Workers: 4},
		{Kind: loadgen.Slow, Workers: 8, Sleep: time.Second},
		{Kind: loadgen.Stream, Workers: 4, StreamDur: 800 * time.Millisecond},
	} {
		t.Run(string(cfg.Kind), func(t *testing.T) {
			// Side by side: each kind has its own server, and most of
			// the time goes to waiting for drains (a slow request, a
			// stream), not to the CPU.
			t.Parallel()
			s := start(t)
			res := upgradesUnderLoad(t, s, cfg, upgrades)
			t.Log(res.String())
			if res.Failed() != 0 {
				t.Errorf("%d of %d requests failed: %v", res.Failed(), res.Requests, res.Errors)
			}
			// Traffic really spanned the generations.
			if len(res.PIDs) < upgrades/2 {
				t.Errorf("responses came from %d generations, want most of the %d", len(res.PIDs), upgrades+1)
			}
			if res.OK < int64(upgrades) {
				t.Errorf("only %d requests succeeded", res.OK)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if st, err := s.Stop(ctx); err != nil || st.ExitStatus() != 0 {
				t.Errorf("stop: %v, %v; want exit status 0", st, err)
			}
		})
	}
}

// get sends one request on its own connection and reports the outcome.
func get(addr, path string, timeout time.Duration) (int, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func TestStopDrainsSlowRequests(t *testing.T) {
	s := start(t, "-drain-timeout", "10s")
	const n = 6
	errs := make(chan error, n)
	for range n {
		go func() {
			code, err := get(s.addr, "/?sleep=2s", 20*time.Second)
			if err == nil && code != 200 {
				err = fmt.Errorf("status %d", code)
			}
			errs <- err
		}()
	}
	time.Sleep(500 * time.Millisecond)
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := s.Stop(ctx)
	took := time.Since(begin)
	if err != nil || !st.Exited() || st.ExitStatus() != 0 {
		t.Fatalf("stop: %v, %v; want exit status 0", st, err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("slow request failed during stop: %v", err)
		}
	}
	if took > 4*time.Second {
		t.Errorf("exit took %v; the requests needed 1.5s more", took)
	}
	log, _ := os.ReadFile(s.log)
	if want := fmt.Sprintf("server=http open=%d ended=%d cut=0", n, n); !strings.Contains(string(log), want) {
		t.Errorf("no drain report %q in the log:\n%s", want, log)
	}
}

func TestStopPastDeadlineCutsAndReports(t *testing.T) {
	s := start(t, "-drain-timeout", "700ms")
	const n = 3
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := get(s.addr, "/?sleep=10s", 20*time.Second)
			errs <- err
		}()
	}
	time.Sleep(500 * time.Millisecond)
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := s.Stop(ctx)
	took := time.Since(begin)
	if err != nil {
		t.Fatal(err)
	}
	if took < 600*time.Millisecond || took > 3*time.Second {
		t.Errorf("exited %v after SIGTERM, want at the 700ms deadline", took)
	}
	for range n {
		if err := <-errs; err == nil {
			t.Error("a request past the deadline was not cut")
		}
	}
	log, _ := os.ReadFile(s.log)
	if want := fmt.Sprintf("%d connection(s) cut at the deadline", n); !strings.Contains(string(log), want) {
		t.Errorf("log does not report %q:\n%s", want, log)
	}
	if st.ExitStatus() != 1 {
		t.Errorf("exit status %d, want 1 when connections were cut", st.ExitStatus())
	}
}

func TestBadInput(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"address in use", []string{"-addr", busy.Addr().String()}, "address already in use"},
		{"malformed address", []string{"-addr", "nonsense"}, "missing port in address"},
		{"port out of range", []string{"-addr", "127.0.0.1:70000"}, "invalid port"},
		{"unwritable PID file", []string{"-addr", "127.0.0.1:0", "-pidfile", filepath.Join(dir, "no", "such", "dir", "x.pid")}, "PID file"},
		{"unsupported network", []string{"-network", "udp", "-addr", "127.0.0.1:0"}, "unsupported network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, binary, tc.args...).CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output does not say %q:\n%s", tc.want, out)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		})
	}
}

func TestFiftyHUPsInOneSecond(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "http")
	copyFile(t, binary, bin)
	s := startBinary(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The next binary, built as version 2, goes in place during the burst.
	v2 := filepath.Join(dir, "http-v2")
	if err := harness.Build(ctx, "./examples/http", v2, true, "-X main.version=v2"); err != nil {
		t.Fatal(err)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	kinds := []loadgen.Config{
		{Kind: loadgen.KeepAlive, Workers: 4},
		// Requests in flight keep each old generation draining for 2 s.
		{Kind: loadgen.Slow, Workers: 4, Sleep: 2 * time.Second},
	}
	results := make(chan loadgen.Result, len(kinds))
	for _, cfg := range kinds {
		cfg.Network, cfg.Addr = "tcp", s.addr
		go func() {
			r, err := loadgen.Run(loadCtx, cfg)
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	time.Sleep(300 * time.Millisecond)
	first := s.PID()
	pids := map[int]bool{first: true}
	// A config-management run that signals 50 times within a second, each
	// time to the PID the PID file names, and installs a new binary
	// along the way.
	for i := range 50 {
		if i == 5 {
			if err := os.Rename(v2, bin); err != nil {
				t.Fatal(err)
			}
		}
		pid := s.PID()
		pids[pid] = true
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil && err != syscall.ESRCH {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Wait until the queue has settled: the PID file stops changing and
	// only one generation is left.
	last := s.PID()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		time.Sleep(3 * time.Second)
		if now := s.PID(); now == last {
			break
		} else {
			pids[now], last = true, now
		}
	}
	stopLoad()
	var total int64
	for range kinds {
		r := <-results
		t.Log(r.String())
		total += r.Requests
		if r.Failed() != 0 {
			t.Errorf("%s: %d requests failed: %v", r.Kind, r.Failed(), r.Errors)
		}
		for pid := range r.PIDs {
			pids[pid] = true
		}
	}
	if upgrades := len(pids) - 1; upgrades < 1 || upgrades > 2 {
		t.Errorf("50 HUPs within a second led to %d upgrades (generations %v), want 1 or 2", upgrades, pids)
	}
	code, version, err := getVersion(s.addr)
	if err != nil || code != 200 || version != "v2" {
		t.Errorf("final generation answers %d with version %q (%v), want the newest binary, v2", code, version, err)
	}
	if log, _ := os.ReadFile(s.log); strings.Contains(string(log), "upgrade failed") {
		t.Errorf("an upgrade failed:\n%s", log)
	}
}

func getVersion(addr string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Version"), nil
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

type stats struct {
	PID        int `json:"pid"`
	Goroutines int `json:"goroutines"`
	FDs        int `json:"fds"`
	RSSKiB     int `json:"-"`
}

func getStats(t *testing.T, addr string) stats {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				st.RSSKiB, _ = strconv.Atoi(f[1])
			}
		}
	}
	return st
}

// TestNothingAccumulatesAcrossGenerations upgrades many times under
// keep-alive load and checks that nothing handed down (pipes, sockets,
// stderr, environment) piles up: the descriptors, goroutines and RSS of the
// last generations are no higher than those of the first, and no request
// fails. The CI runs 30 upgrades; a soak runs more on demand:
//
//	HITLESS_SOAK=500 go test -run TestNothingAccumulates -v -timeout 1h ./examples/http/
func TestNothingAccumulatesAcrossGenerations(t *testing.T) {
	n := 30
	if v, err := strconv.Atoi(os.Getenv("HITLESS_SOAK")); err == nil && v > 0 {
		n = v
	}
	s := start(t, "-control", filepath.Join(t.TempDir(), "control.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*5*time.Second+time.Minute)
	defer cancel()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loaded := make(chan loadgen.Result, 1)
	go func() {
		r, err := loadgen.Run(loadCtx, loadgen.Config{Kind: loadgen.KeepAlive, Network: "tcp", Addr: s.addr, Workers: 4, Pace: time.Millisecond})
		if err != nil {
			t.Error(err)
		}
		loaded <- r
	}()
	var all []stats
	for i := range n {
		if _, err := s.Upgrade(ctx); err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		time.Sleep(50 * time.Millisecond) // let start-up goroutines settle
		all = append(all, getStats(t, s.addr))
	}
	stopLoad()
	res := <-loaded
	t.Log(res.String())
	if res.Failed() != 0 {
		t.Errorf("%d requests failed: %v", res.Failed(), res.Errors)
	}
	// Under load the counts move with the connections open at the moment;
	// what must not happen is a rise from the first generations to the
	// last ones.
	k := max(len(all)/5, 1)
	peak := func(sts []stats) (fds, gor, rss int) {
		for _, st := range sts {
			fds, gor, rss = max(fds, st.FDs), max(gor, st.Goroutines), max(rss, st.RSSKiB)
		}
		return
	}
	f1, g1, r1 := peak(all[:k])
	f2, g2, r2 := peak(all[len(all)-k:])
	t.Logf("peaks over the first %d generations: %d fds, %d goroutines, %d KiB RSS; over the last %d: %d fds, %d goroutines, %d KiB RSS",
		k, f1, g1, r1, k, f2, g2, r2)
	if f2 > f1 || g2 > g1+2 || r2 > r1*5/4 {
		t.Errorf("resources grew across %d generations", n)
	}
}

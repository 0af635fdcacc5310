//go:build unix

package main

// These tests build this program (with -race) and upgrade it while
// long-lived connections exchange lines with it, counting every failure
// with a client that never retries a line.

import (
	"bufio"
	"context"
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

	"github.com/hitlessgo/hitless/internal/harness"
)

var binary string // built once in TestMain

func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./examples/tcp", true, &binary)) }

type server struct {
	*harness.Server
	addr, log string
}

func start(t *testing.T, args ...string) *server {
	t.Helper()
	dir := t.TempDir()
	addr, err := harness.FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "tcp.pid")
	s, logPath := harness.StartT(t, harness.Config{Binary: binary, Args: append([]string{"-addr", addr, "-pidfile", pidFile}, args...), PIDFile: pidFile})
	return &server{Server: s, addr: addr, log: logPath}
}

// load is the result of lineClients.
type load struct {
	mu          sync.Mutex
	lines       int64       // lines echoed correctly
	failed      int64       // lines without their echo, or connections that broke
	byes        int64       // connections that ended with BYE, then EOF
	reconnected int64       // of those, how many reconnected to another pid
	samePID     int64       // reconnected to the generation that said BYE: must be 0
	pids        map[int]int // connections per generation
	errs        []string
}

func (l *load) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failed++
	if len(l.errs) < 20 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

// lineClients runs workers long-lived connections until ctx is done, each
// sending a line every pace and checking its echo. A connection ends only
// when the server says BYE: the client answers it by closing its side and
// expects EOF after the echoes it was owed; then it reconnects.
func lineClients(ctx context.Context, addr string, workers int, pace time.Duration) *load {
	l := &load{pids: make(map[int]int)}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { l.worker(ctx, addr, w, pace) })
	}
	wg.Wait()
	return l
}

func (l *load) worker(ctx context.Context, addr string, id int, pace time.Duration) {
	lastPID := 0 // the generation that said BYE last
	n := 0
	for ctx.Err() == nil {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			l.fail("worker %d: dial: %v", id, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		r := bufio.NewReader(c)
		hello, err := r.ReadString('\n')
		pid, perr := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(hello), "HELLO "))
		if err != nil || perr != nil {
			l.fail("worker %d: hello %q: %v", id, hello, err)
			c.Close()
			continue
		}
		l.mu.Lock()
		l.pids[pid]++
		if lastPID != 0 {
			l.reconnected++
			if pid == lastPID {
				l.samePID++
			}
		}
		l.mu.Unlock()
		bye := false
		for !bye && ctx.Err() == nil {
			n++
			msg := fmt.Sprintf("worker %d line %d\n", id, n)
			if _, err := io.WriteString(c, msg); err != nil {
				l.fail("worker %d to %d: write: %v", id, pid, err)
				break
			}
			got, err := r.ReadString('\n')
			if err == nil && got == "BYE\n" {
				bye = true
				got, err = r.ReadString('\n')
			}
			if err != nil || got != msg {
				l.fail("worker %d to %d: line %d: got %q, %v", id, pid, n, got, err)
				break
			}
			l.mu.Lock()
			l.lines++
			l.mu.Unlock()
			if !bye {
				select {
				case <-time.After(pace):
				case <-ctx.Done():
				}
			}
		}
		// Leave: half-close, then the server must close after nothing but
		// (at most) a BYE it sent meanwhile.
		c.(*net.TCPConn).CloseWrite()
		rest, err := io.ReadAll(r)
		switch {
		case err != nil:
			l.fail("worker %d to %d: closing: %v (a reset?)", id, pid, err)
		case string(rest) != "" && !(string(rest) == "BYE\n" && !bye):
			l.fail("worker %d to %d: unexpected bytes before EOF: %q", id, pid, rest)
		case bye:
			l.mu.Lock()
			l.byes++
			l.mu.Unlock()
			lastPID = pid
		}
		c.Close()
	}
}

func TestUpgradesUnderLoad(t *testing.T) {
	const upgrades = 20
	const workers = 8
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	res := make(chan *load, 1)
	go func() { res <- lineClients(loadCtx, s.addr, workers, 2*time.Millisecond) }()
	time.Sleep(300 * time.Millisecond)
	var exits []time.Duration
	for i := range upgrades {
		u, err := s.Upgrade(ctx)
		if err != nil {
			stopLoad()
			<-res
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		exits = append(exits, u.OldExited.Sub(u.Ready))
		if u.OldReaped && (!u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0) {
			t.Errorf("upgrade %d: old generation ended with %v, want exit status 0", i+1, u.OldStatus)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	l := <-res
	slices.Sort(exits)
	t.Logf("%d upgrades, %d connections: %d lines echoed, %d failed; %d connections ended with BYE then EOF, "+
		"%d reconnected (%d to the same generation); %d generations; old generation gone after ready: median %v, max %v",
		upgrades, workers, l.lines, l.failed, l.byes, l.reconnected, l.samePID, len(l.pids),
		exits[len(exits)/2].Round(time.Millisecond), exits[len(exits)-1].Round(time.Millisecond))
	if l.failed != 0 {
		t.Errorf("%d failures: %v", l.failed, l.errs)
	}
	if l.byes < upgrades*workers*9/10 {
		t.Errorf("only %d connections ended with BYE, want about %d (every connection at every upgrade)", l.byes, upgrades*workers)
	}
	if l.samePID != 0 {
		t.Errorf("%d reconnections reached the generation that said BYE", l.samePID)
	}
	if len(l.pids) < upgrades {
		t.Errorf("connections reached %d generations, want %d", len(l.pids), upgrades+1)
	}
	stctx, stcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stcancel()
	if st, err := s.Stop(stctx); err != nil || st.ExitStatus() != 0 {
		t.Errorf("stop: %v, %v; want exit status 0", st, err)
	}
	logReports(t, s.log)
}

// logReports logs the drain reports of every generation, from the log.
func logReports(t *testing.T, path string) {
	b, _ := os.ReadFile(path)
	var lines []string
	for l := range strings.Lines(string(b)) {
		if i := strings.Index(l, "report.open="); i >= 0 && strings.Contains(l, "drain report") {
			lines = append(lines, strings.TrimSpace(l[i:]))
		}
	}
	t.Logf("%d drain reports; first and last:\n%s\n%s", len(lines), lines[0], lines[len(lines)-1])
}

func TestConnectionPastDeadlineIsCut(t *testing.T) {
	s := start(t, "-drain-timeout", "700ms")
	// A client that ignores BYE.
	c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if l, err := r.ReadString('\n'); l != "BYE\n" {
		t.Fatalf("got %q, %v; want BYE", l, err)
	}
	_, err = r.ReadByte()
	cutAfter := time.Since(begin)
	if err == nil {
		t.Fatal("got data instead of the cut")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := s.WaitExit(ctx, s.PID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cut %v after SIGTERM (deadline 700ms): %v", cutAfter.Round(time.Millisecond), err)
	if cutAfter < 650*time.Millisecond || cutAfter > 1200*time.Millisecond {
		t.Errorf("connection cut %v after SIGTERM, want at the 700ms deadline", cutAfter)
	}
	log, _ := os.ReadFile(s.log)
	if !strings.Contains(string(log), "drain echo: 1 connection(s) cut at the deadline") ||
		!strings.Contains(string(log), "report.echo.cut=1") {
		t.Errorf("log does not report the cut:\n%s", log)
	}
	if st.ExitStatus() != 1 {
		t.Errorf("exit status %d, want 1 when a connection was cut", st.ExitStatus())
	}
}

func TestReadinessTurns503BeforeAcceptingStops(t *testing.T) {
	health, err := harness.FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, "-health", health, "-lame-duck", "400ms")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	status := func() int {
		resp, err := client.Get("http://" + health + "/ready")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(); got != 200 {
		t.Fatalf("/ready = %d while serving, want 200", got)
	}
	pid := s.PID()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for status() != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/ready never turned 503")
		}
		time.Sleep(5 * time.Millisecond)
	}
	turned := time.Now()
	// The echo listener still accepts, and it is the same generation.
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		t.Fatalf("the listener stopped accepting when /ready turned 503: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || l != fmt.Sprintf("HELLO %d\n", pid) {
		t.Fatalf("after /ready turned 503, a new connection got %q, %v", l, err)
	}
	// Then accepting stops, and the connection gets its BYE.
	if l, err := r.ReadString('\n'); l != "BYE\n" {
		t.Fatalf("got %q, %v; want BYE", l, err)
	}
	t.Logf("accepting stopped (BYE) %v after /ready turned 503", time.Since(turned).Round(time.Millisecond))
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadAll(r); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err := s.WaitExit(ctx, pid); err != nil && !errors.Is(err, harness.ErrNotReaped) || st.ExitStatus() != 0 {
		t.Errorf("exit: %v, %v", st, err)
	}
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting after the drain")
	}
}

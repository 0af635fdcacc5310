//go:build unix

package main

// TestHTTP3UpgradesUnderLoad builds this program (with -race) and upgrades it 20
// times while three kinds of HTTP/3 clients that never resend a request
// talk to it at once, and checks that no request failed;
// TestWithoutRouterFails does the same without the router, and checks
// that requests do fail then.

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
)

var serverBin string

func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./h3", true, &serverBin)) }

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

const longSleep = 1500 * time.Millisecond

// load is one run: a server, the three kinds of clients, n upgrades.
type load struct {
	keepAlive, perRequest, long *stats
	upgrades                    []harness.Upgrade
	log                         string
	exit                        syscall.WaitStatus // of the last generation, stopped
}

func runLoad(t *testing.T, n int, args ...string) load {
	dir := t.TempDir()
	addr := freeUDPAddr(t)
	pidFile := filepath.Join(dir, "h3.pid")
	s, logPath := harness.StartT(t, harness.Config{Binary: serverBin, Args: append([]string{"-addr", addr, "-pidfile", pidFile}, args...), PIDFile: pidFile})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	l := load{keepAlive: newStats("keep-alive"), perRequest: newStats("connection per request"), long: newStats("long responses"), log: logPath}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { keepAlive(loadCtx, addr, i, "/", 0, l.keepAlive) })
	}
	for i := range 2 {
		wg.Go(func() { perRequest(loadCtx, addr, i, l.perRequest) })
		wg.Go(func() { keepAlive(loadCtx, addr, i, "/?sleep="+longSleep.String(), longSleep, l.long) })
	}
	time.Sleep(500 * time.Millisecond)
	for i := range n {
		u, err := s.Upgrade(ctx)
		if err != nil {
			stopLoad()
			wg.Wait()
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		l.upgrades = append(l.upgrades, u)
		time.Sleep(350 * time.Millisecond)
	}
	// Long enough for the long responses begun before the last upgrade
	// to end.
	time.Sleep(longSleep + 500*time.Millisecond)
	stopLoad()
	wg.Wait()
	stctx, stcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stcancel()
	var err error
	if l.exit, err = s.Stop(stctx); err != nil {
		t.Errorf("stop: %v", err)
	}
	return l
}

func (l load) logSummary(t *testing.T) {
	t.Helper()
	var signalled []time.Time
	for _, u := range l.upgrades {
		signalled = append(signalled, u.Signalled)
	}
	for _, st := range []*stats{l.keepAlive, l.perRequest, l.long} {
		t.Logf("%v; %s", st, st.lat.Summary(signalled, 500*time.Millisecond))
	}
}

// spanning counts the long responses that an old generation went on
// answering after the new one was ready.
func (l load) spanning() int {
	old := make(map[int]time.Time) // pid -> when its successor was ready
	for _, u := range l.upgrades {
		old[u.Old] = u.Ready
	}
	n := 0
	for _, a := range l.long.long {
		if ready, ok := old[a.pid]; ok && a.start.Before(ready) && a.end.After(ready) {
			n++
		}
	}
	return n
}

func TestHTTP3UpgradesUnderLoad(t *testing.T) {
	const upgrades = 20
	l := runLoad(t, upgrades)
	l.logSummary(t)
	if l.exit.ExitStatus() != 0 {
		t.Errorf("stopped with %v, want exit status 0", l.exit)
	}
	for _, st := range []*stats{l.keepAlive, l.perRequest, l.long} {
		if st.failed != 0 {
			t.Errorf("%s: %d failures:\n%s", st.kind, st.failed, strings.Join(st.errs, "\n"))
		}
	}
	for _, c := range []struct {
		st    *stats
		floor int64
	}{{l.keepAlive, 1000}, {l.perRequest, 200}, {l.long, 20}} {
		if c.st.ok < c.floor {
			t.Errorf("%s: %d answered, want at least %d", c.st.kind, c.st.ok, c.floor)
		}
	}
	if g := len(l.keepAlive.pids); g < 15 {
		t.Errorf("keep-alive: answered by %d generations, want at least 15 of %d", g, upgrades+1)
	}
	n := l.spanning()
	t.Logf("%d of %d long responses went on from the old generation after the new one was ready", n, l.long.ok)
	if n < upgrades/2 {
		t.Errorf("%d long responses spanned an upgrade on the old generation, want at least %d", n, upgrades/2)
	}
	b, _ := os.ReadFile(l.log)
	var reports []string
	for line := range strings.Lines(string(b)) {
		if i := strings.Index(line, "report.open="); i >= 0 {
			reports = append(reports, strings.TrimSpace(line[i:]))
		}
	}
	if len(reports) > 0 {
		t.Logf("%d drain reports, e.g. %s", len(reports), reports[len(reports)/2])
	}
}

// TestWithoutRouterFails is the mutation of the router: both generations
// read the shared socket, and requests fail. The drains that cannot end
// (their connections' packets go to the other generation) end at a short
// deadline, with an error, hence the exit status is not checked.
func TestWithoutRouterFails(t *testing.T) {
	// Parallel with the other mutation: each only needs some failures,
	// which a loaded machine makes more of, not fewer.
	t.Parallel()
	l := runLoad(t, 6, "-router=false", "-drain-timeout=2s")
	l.logSummary(t)
	failed := l.keepAlive.failed + l.perRequest.failed + l.long.failed
	if failed == 0 {
		t.Errorf("no request failed without the router; the test cannot tell it is needed")
	}
	for _, st := range []*stats{l.keepAlive, l.perRequest, l.long} {
		if len(st.errs) > 0 {
			t.Logf("%s: first failure: %s", st.kind, st.errs[0])
		}
	}
}

// TestWithoutNoticeFails is the mutation of the carrier's notice: with the
// carrier's response no longer held back, it often reaches the client
// before the GOAWAY (quic-go writes that on the control stream from
// another goroutine), the client sends its next request on the same
// connection, and the server rejects it.
func TestWithoutNoticeFails(t *testing.T) {
	t.Parallel()
	l := runLoad(t, 6, "-notice=0")
	l.logSummary(t)
	if l.keepAlive.failed == 0 {
		t.Errorf("no keep-alive request failed with -notice=0; the test cannot tell the notice is needed")
	}
	if len(l.keepAlive.errs) > 0 {
		t.Logf("keep-alive: first failure: %s", l.keepAlive.errs[0])
	}
}

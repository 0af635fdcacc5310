//go:build linux

package upgrade

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/drain"
)

// The routed process test: a server (routedServerMain) with one routed
// udp socket, whose datagrams are "owner|payload" (owner: a RouterID in
// hexadecimal, or empty), answered with "pid=P id=I payload". Its drain
// holds until the file "release-drain" exists, so the test can talk to a
// draining generation.
const envRoutedServer = "HITLESS_TEST_ROUTED_SERVER" // "1": play routedServerMain

func init() {
	if os.Getenv(envRoutedServer) == "1" {
		os.Exit(routedServerMain())
	}
}

func routedClassify(d []byte) drain.Route {
	owner, _, ok := bytes.Cut(d, []byte("|"))
	var r drain.Route
	if b, err := hex.DecodeString(string(owner)); ok && err == nil && len(b) == len(r.Owner) {
		copy(r.Owner[:], b)
	}
	return r
}

func routedServerMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	pidFile := os.Getenv(envPIDFile)
	dir := filepath.Dir(pidFile)
	mode, _ := os.ReadFile(os.Getenv(envMode))
	upg, err := New(Options{PIDFile: pidFile, UpgradeTimeout: 20 * time.Second, DrainTimeout: 20 * time.Second, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer upg.Stop()
	ctx := context.Background()
	r, err := upg.ListenRouted(ctx, "quic", "udp", "127.0.0.1:0", routedClassify)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if strings.TrimSpace(string(mode)) == "crash" && upg.h.HasParent() {
		// Took the channel, never ready: the previous generation must
		// hand the same channel to the next attempt.
		return 3
	}
	if err := writeFileAtomic(filepath.Join(dir, "udp.addr"), r.LocalAddr().String()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	id := r.ID()
	served := make(chan struct{})
	go func() {
		defer close(served)
		buf := make([]byte, 2048)
		for {
			n, from, err := r.ReadFrom(buf)
			if err != nil {
				return
			}
			_, payload, _ := bytes.Cut(buf[:n], []byte("|"))
			r.WriteTo(fmt.Appendf(nil, "pid=%d id=%s %s", os.Getpid(), id, payload), from)
		}
	}()
	r.Shutdown = func(ctx context.Context) error {
		for !fileExists(filepath.Join(dir, "release-drain")) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		return nil
	}
	defer handleTestSignals(upg, log)()
	err = upg.Run(ctx, r)
	<-served
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func fileExists(path string) bool { _, err := os.Stat(path); return err == nil }

// routedAnswer is who answered a routed datagram.
type routedAnswer struct {
	pid int
	id  string
}

// askRouted sends "owner|payload" and waits up to 2 s for its answer.
func askRouted(t *testing.T, c net.PacketConn, to net.Addr, owner string, n int) (routedAnswer, error) {
	t.Helper()
	payload := "q" + strconv.Itoa(n)
	if _, err := c.WriteTo([]byte(owner+"|"+payload), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		m, _, err := c.ReadFrom(buf)
		if err != nil {
			return routedAnswer{}, fmt.Errorf("datagram %d (owner %q) not answered: %w", n, owner, err)
		}
		var a routedAnswer
		var got string
		if _, err := fmt.Sscanf(string(buf[:m]), "pid=%d id=%s %s", &a.pid, &a.id, &got); err != nil {
			t.Fatalf("answer %q: %v", buf[:m], err)
		}
		if got == payload {
			return a, nil
		}
	}
}

// TestRoutedUpgrade upgrades a server with a routed socket across real
// processes, with a failed attempt first: the old generation answers
// everything until the new one is ready; while the old one drains, the new
// one reads the socket and passes on every datagram naming the old one;
// after the old one has gone, the new one answers everything.
func TestRoutedUpgrade(t *testing.T) {
	ts := startTestServer(t, "udp", envRoutedServer+"=1")
	first := ts.PID()
	addr, err := os.ReadFile(filepath.Join(ts.dir, "udp.addr"))
	if err != nil {
		t.Fatal(err)
	}
	to, err := net.ResolveUDPAddr("udp", string(addr))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := 0
	ask := func(owner string) routedAnswer {
		t.Helper()
		n++
		a, err := askRouted(t, c, to, owner, n)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := ask("")
	if a.pid != first {
		t.Fatalf("answered by %d, want %d", a.pid, first)
	}
	oldID := a.id

	// A next generation that takes the channel and dies unready.
	ts.setMode("crash")
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for end := time.Now().Add(20 * time.Second); !strings.Contains(readLog(ts), "upgrade failed"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the crashing generation's upgrade did not fail within 20 s")
		}
	}
	if a := ask(""); a.pid != first {
		t.Fatalf("after a failed upgrade, answered by %d, want %d", a.pid, first)
	}

	ts.setMode("")
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	second, err := ts.WaitPIDChange(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	// The old generation drains (held); the new one reads once handed
	// the socket: wait until it answers.
	var newID string
	for end := time.Now().Add(10 * time.Second); ; {
		if a := ask(""); a.pid == second {
			newID = a.id
			break
		}
		if time.Now().After(end) {
			t.Fatal("the new generation did not read the socket within 10 s")
		}
	}
	if newID == oldID {
		t.Fatalf("both generations have router ID %s", newID)
	}
	for range 30 {
		if a := ask(oldID); a.pid != first {
			t.Fatalf("a datagram naming the draining generation answered by %d, want %d", a.pid, first)
		}
		if a := ask(newID); a.pid != second {
			t.Fatalf("a datagram naming the new generation answered by %d, want %d", a.pid, second)
		}
	}
	if err := writeFileAtomic(filepath.Join(ts.dir, "release-drain"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.WaitExit(ctx, first); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); ; {
		if a, err := askRouted(t, c, to, oldID, 1000+n); err == nil && a.pid == second {
			break
		}
		n++
		if time.Now().After(end) {
			t.Fatal("datagrams naming the gone generation not answered by the new one within 5 s")
		}
	}
	status, err := ts.Stop(ctx)
	if err != nil || status.ExitStatus() != 0 {
		t.Fatalf("stop: status %v, err %v; want exit 0", status, err)
	}
}

func readLog(ts *testServer) string {
	b, err := os.ReadFile(ts.log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		ts.t.Fatal(err)
	}
	return string(b)
}

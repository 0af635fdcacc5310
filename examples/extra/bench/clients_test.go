//go:build unix

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/timeline"
)

// servers are the example programs the clients talk to, built once (not
// with -race: the bench runs them that way, and this test is about the
// clients).
type servers struct {
	web, webTLS, grpc string // addresses
	webSrv, grpcSrv   *harness.Server
}

func startServers(t *testing.T) servers {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var s servers
	for _, pkg := range []string{"./web", "./grpc"} {
		if err := harness.Build(ctx, pkg, filepath.Join(dir, filepath.Base(pkg)), false, ""); err != nil {
			t.Fatal(err)
		}
	}
	s.web, s.webTLS, s.grpc = harness.FreeAddrT(t), harness.FreeAddrT(t), harness.FreeAddrT(t)
	webPID, grpcPID := filepath.Join(dir, "web.pid"), filepath.Join(dir, "grpc.pid")
	s.webSrv, _ = harness.StartT(t, harness.Config{Binary: filepath.Join(dir, "web"),
		Args: []string{"-addr", s.web, "-tls-addr", s.webTLS, "-pidfile", webPID}, PIDFile: webPID})
	s.grpcSrv, _ = harness.StartT(t, harness.Config{Binary: filepath.Join(dir, "grpc"),
		Args: []string{"-addr", s.grpc, "-pidfile", grpcPID}, PIDFile: grpcPID})
	return s
}

type clientCase struct {
	kind string
	t    target
	srv  *harness.Server
}

func (s servers) cases(rate, conns int) []clientCase {
	// The example's certificate is self-signed, made at its start.
	insecure := &tls.Config{InsecureSkipVerify: true}
	return []clientCase{
		{"h2c", target{Addr: s.web, Rate: rate, Conns: conns}, s.webSrv},
		{"h2-tls", target{Addr: s.webTLS, TLS: insecure, Rate: rate, Conns: conns}, s.webSrv},
		{"grpc-unary", target{Addr: s.grpc, Rate: rate, Conns: conns}, s.grpcSrv},
		{"websocket-echo", target{Addr: s.web, Rate: rate, Conns: conns}, s.webSrv},
	}
}

// upgradeRace reports whether err is one of the failures an upgrade's
// timing can cause with clients that never resend (they are counted as
// failures, and the bench shows them): an HTTP/2 request that x/net
// refused to send because the server's GOAWAY was processed between the
// client's check and the send ("client conn not usable"; Transport would
// have resent it), a gRPC call whose first attempt met the closing
// connection and that gRPC resent, and a WebSocket message that met a
// server's close 1001 and was not echoed (the example sends BYE first and
// closes only after its grace, so with it this should not happen).
func upgradeRace(err error) bool {
	return strings.Contains(err.Error(), "http2: client conn not usable") ||
		errors.Is(err, errTransparentRetry) ||
		websocket.CloseStatus(err) == websocket.StatusGoingAway
}

func mean(reqs []timeline.Request) time.Duration {
	var sum time.Duration
	for _, r := range reqs {
		sum += r.Latency
	}
	return sum / time.Duration(max(len(reqs), 1))
}

func summary(reqs []timeline.Request) (failed int, p50, p99 time.Duration, pids map[int]int) {
	lat := make([]time.Duration, 0, len(reqs))
	pids = make(map[int]int)
	for _, r := range reqs {
		if r.Failed {
			failed++
		} else {
			lat = append(lat, r.Latency)
			pids[r.PID]++
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		p50, p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return failed, p50, p99, pids
}

// TestClients runs each client against its example server for 2 s with
// no upgrade, at the bench's load, and checks the rate it kept, that
// nothing failed and that every answer named the server; then all four
// at once, lighter, through one upgrade of each server, to check that an
// upgrade's GOAWAY or BYE is followed, not counted as a failure.
func TestClients(t *testing.T) {
	const (
		rate  = 1000
		conns = 32
		run   = time.Second
	)
	s := startServers(t)
	var (
		mu    sync.Mutex
		races map[string]int // failures an upgrade's race explains, by client
	)
	onFailure = func(client string, r timeline.Request, err error) {
		mu.Lock()
		defer mu.Unlock()
		if races != nil && upgradeRace(err) {
			races[client]++
		}
		t.Logf("%s %s request to %d failed after %v: %v", r.Start.Format("15:04:05.000000"), client, r.PID, r.Latency, err)
	}
	defer func() { onFailure = nil }()
	for _, c := range s.cases(rate, conns) {
		begin := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), run)
		reqs, err := clients[c.kind](ctx, c.t)
		cancel()
		took := time.Since(begin)
		if err != nil {
			t.Fatalf("%s: %v", c.kind, err)
		}
		failed, p50, p99, pids := summary(reqs)
		// The rate from the first request on: the connections' set-up
		// (32 TLS handshakes, say) comes first.
		var got float64
		if len(reqs) > 0 {
			got = float64(len(reqs)) / begin.Add(run).Sub(reqs[0].Start).Seconds()
		}
		t.Logf("%s: %d requests in %v (%.0f/s, target %d/s), %d failed, p50 %v p99 %v",
			c.kind, len(reqs), took.Round(time.Millisecond), got, rate, failed, p50, p99)
		// Requests on a connection are sequential: when answers take
		// longer than the connection's interval (a machine too busy for
		// this test, as -race and shared cores can make it), the rate
		// cannot be kept, and that is not the pacer's fault.
		if busy := mean(reqs) > conns*time.Second/rate/2; (got < 0.9*rate && !busy) || got > 1.1*rate {
			t.Errorf("%s: %.0f requests/s, want %d ± 10%%", c.kind, got, rate)
		} else if got < 0.9*rate {
			t.Logf("%s: rate not kept: mean latency %v, too close to the %v between a connection's requests", c.kind, mean(reqs), conns*time.Second/rate)
		}
		if failed != 0 {
			t.Errorf("%s: %d of %d requests failed", c.kind, failed, len(reqs))
		}
		if pid := c.srv.PID(); pids[pid] != len(reqs)-failed {
			t.Errorf("%s: serving PIDs %v, want all %d", c.kind, pids, pid)
		}
		if took > run+time.Second {
			t.Errorf("%s: returned %v after it was started for %v", c.kind, took, run)
		}
	}

	// Through one upgrade of each server: 500 ms of load before the
	// SIGHUP, the rest after.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cases := s.cases(200, 8)
	mu.Lock()
	races = make(map[string]int)
	mu.Unlock()
	results := make([][]timeline.Request, len(cases))
	errs := make([]error, len(cases))
	loadCtx, stopLoad := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer stopLoad()
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Go(func() { results[i], errs[i] = clients[c.kind](loadCtx, c.t) })
	}
	time.Sleep(500 * time.Millisecond)
	var ups []harness.Upgrade
	for _, srv := range []*harness.Server{s.webSrv, s.grpcSrv} {
		u, err := srv.Upgrade(ctx)
		if err != nil {
			stopLoad()
			wg.Wait()
			t.Fatal(err)
		}
		ups = append(ups, u)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i, c := range cases {
		if errs[i] != nil {
			t.Fatalf("%s: %v", c.kind, errs[i])
		}
		failed, p50, p99, pids := summary(results[i])
		t.Logf("%s through an upgrade: %d requests, %d failed, p50 %v p99 %v, by PID %v",
			c.kind, len(results[i]), failed, p50, p99, pids)
		client := map[string]string{"h2c": "http", "h2-tls": "https", "grpc-unary": "grpc", "websocket-echo": "ws"}[c.kind]
		if n := races[client]; failed > n || n > c.t.Conns {
			t.Errorf("%s: %d requests failed through an upgrade, %d of them to its known races (at most one per connection)", c.kind, failed, n)
		}
		u := ups[0]
		if c.srv == s.grpcSrv {
			u = ups[1]
		}
		if pids[u.Old] == 0 || pids[u.New] == 0 || len(pids) != 2 {
			t.Errorf("%s: served by %v, want both %d and %d", c.kind, pids, u.Old, u.New)
		}
	}
}

// TestWebSocketEchoFollowsBye runs the WebSocket client against the web
// example through three upgrades and checks that it follows every BYE
// without losing a message (each connection finishes its message, closes
// and sends the next on a new connection, to the new generation), and that
// a message's Reconnect is the dial it paid for: set for about one message
// per connection per upgrade, within its latency, and 0 for the rest.
func TestWebSocketEchoFollowsBye(t *testing.T) {
	const (
		upgrades = 3
		conns    = 8
	)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "web")
	if err := harness.Build(ctx, "./web", bin, false, ""); err != nil {
		t.Fatal(err)
	}
	addr, pidFile := harness.FreeAddrT(t), filepath.Join(dir, "web.pid")
	srv, _ := harness.StartT(t, harness.Config{Binary: bin, Args: []string{"-addr", addr, "-pidfile", pidFile}, PIDFile: pidFile})
	onFailure = func(client string, r timeline.Request, err error) {
		t.Logf("%s %s message to %d failed after %v: %v", r.Start.Format("15:04:05.000000"), client, r.PID, r.Latency, err)
	}
	defer func() { onFailure = nil }()

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var (
		reqs []timeline.Request
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		reqs, err = wsEcho(loadCtx, target{Addr: addr, Rate: 400, Conns: conns})
	}()
	time.Sleep(300 * time.Millisecond)
	var ups []harness.Upgrade
	for i := range upgrades {
		u, uerr := srv.Upgrade(ctx)
		if uerr != nil {
			stopLoad()
			<-done
			t.Fatalf("upgrade %d: %v", i+1, uerr)
		}
		ups = append(ups, u)
		time.Sleep(300 * time.Millisecond)
	}
	stopLoad()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	failed, p50, p99, pids := summary(reqs)
	var redialled int
	var reconnect time.Duration
	for _, r := range reqs {
		if r.Reconnect > 0 {
			redialled++
			reconnect += r.Reconnect
		}
		if r.Reconnect > r.Latency {
			t.Errorf("message at %v: reconnect %v longer than its latency %v", r.Start.Format("15:04:05.000"), r.Reconnect, r.Latency)
		}
	}
	t.Logf("%d messages, %d failed, p50 %v p99 %v, by PID %v; %d sent on a new connection (mean dial %v)",
		len(reqs), failed, p50, p99, pids, redialled, reconnect/time.Duration(max(redialled, 1)))
	if failed != 0 {
		t.Errorf("%d of %d messages failed", failed, len(reqs))
	}
	// A new connection per connection and upgrade, but for one whose BYE
	// came too late in the run for a next message.
	if redialled < upgrades*conns*9/10 || redialled > upgrades*conns {
		t.Errorf("%d messages dialled a new connection, want about %d (one per connection per upgrade)", redialled, upgrades*conns)
	}
	for i, u := range ups {
		if pids[u.Old] == 0 || pids[u.New] == 0 {
			t.Errorf("upgrade %d: messages by PID %v, want some to %d and to %d", i+1, pids, u.Old, u.New)
		}
		// Clients that left at BYE let the old generation exit well
		// before its 2 s grace would have closed them with 1001 (a client
		// that ignored BYE and followed the 1001 would lose nothing at
		// this rate, so the failures cannot tell).
		gone := u.OldExited.Sub(u.Ready)
		t.Logf("upgrade %d: old generation gone %v after the new one was ready", i+1, gone.Round(time.Millisecond))
		if gone > time.Second {
			t.Errorf("upgrade %d: old generation gone %v after the new one was ready, want well under the 2s BYE grace", i+1, gone.Round(time.Millisecond))
		}
	}
}

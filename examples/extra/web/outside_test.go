//go:build unix

package main

// TestH2loadH2cThroughUpgrades and TestH2loadTLSThroughUpgrades upgrade
// this server 20 times, each time in the middle of a run of h2load
// (nghttp2's load tool, which nobody here wrote), and report what h2load
// counted. h2load never reconnects a client after the server's GOAWAY, so
// an upgrade stops every client of the run under way: hence one upgrade
// per run, about 0.6 s into a 1.5 s run, rather than upgrades at a pace of
// their own. internal/outside explains h2load's accounting; in short, only
// its per-request log says which requests it sent failed, and a request
// lost with its connection shows only in started−done.
//
// They assert that every upgrade produced a serving generation, that
// h2load's summary counts no failed, errored or timed-out request, and
// that no request in its logs failed. Without h2load they skip, unless
// HITLESS_REQUIRE_OUTSIDE=1.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/outside"
)

const (
	h2loadUpgrades = 20
	h2loadRunFor   = 1500 * time.Millisecond
	// h2loadSignalAt is how long into a run the upgrade begins: the
	// clients have connected and every one has its streams in flight.
	h2loadSignalAt = 600 * time.Millisecond
)

func TestH2loadH2cThroughUpgrades(t *testing.T) { h2loadThroughUpgrades(t, false) }

func TestH2loadTLSThroughUpgrades(t *testing.T) { h2loadThroughUpgrades(t, true) }

// h2loadRound is one run of h2load and the upgrade it crossed.
type h2loadRound struct {
	r       outside.H2loadResult
	u       harness.Upgrade
	start   time.Time
	before  int // requests in the log sent before the SIGHUP
	refused int // sent requests whose stream ended with an error (status -1)
}

func h2loadThroughUpgrades(t *testing.T, useTLS bool) {
	outside.Require(t, outside.H2load)
	dir := t.TempDir()
	addr, tlsAddr := harness.FreeAddrT(t), harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "web.pid")
	s, _ := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-tls-addr", tlsAddr, "-pidfile", pidFile}, PIDFile: pidFile})
	url := "http://" + addr + "/"
	if useTLS {
		url = "https://" + tlsAddr + "/" // h2load does not verify the self-signed certificate
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	prev := s.PID()
	rounds := make([]h2loadRound, 0, h2loadUpgrades)
	for i := range h2loadUpgrades {
		cfg := outside.H2loadConfig{URL: url, Clients: 16, Streams: 8, Duration: h2loadRunFor, LogFile: filepath.Join(dir, fmt.Sprintf("h2load-%02d.log", i+1))}
		type result struct {
			r   outside.H2loadResult
			err error
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			r, err := outside.RunH2load(ctx, cfg)
			done <- result{r, err}
		}()
		time.Sleep(h2loadSignalAt)
		u, err := s.Upgrade(ctx)
		if err != nil {
			<-done // h2load ends with its duration, or is killed with ctx
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		checkGeneration(t, i+1, prev, u, addr)
		prev = u.New
		res := <-done
		if res.err != nil {
			t.Fatalf("run %d: %v", i+1, res.err)
		}
		rd := h2loadRound{r: res.r, u: u, start: start}
		for _, e := range res.r.Log {
			if e.Sent() && e.Start.Before(u.Signalled) {
				rd.before++
			}
			if e.Sent() && e.Status == -1 {
				rd.refused++
			}
		}
		rounds = append(rounds, rd)
		logH2loadRound(t, i+1, rd)
		if f := res.r.LogFailed(); f != 0 {
			t.Errorf("run %d: %d of the %d requests h2load sent failed (%d streams ended with an error, status -1)",
				i+1, f, len(res.r.Log)-res.r.LogUnsent(), rd.refused)
		}
		// h2load's own summary: its failed count includes the requests it
		// queued and then would not send because a GOAWAY had arrived
		// (the log's "never sent").
		if r := res.r; r.Failed != 0 || r.Errored != 0 || r.Timeout != 0 {
			t.Errorf("run %d: h2load counted %d failed, %d errored, %d timed out (%d never sent)", i+1, r.Failed, r.Errored, r.Timeout, r.LogUnsent())
		}
		// Unless the run was under way, the upgrade was not crossed.
		if rd.before == 0 {
			t.Errorf("run %d: no request logged before the SIGHUP at +%v", i+1, u.Signalled.Sub(start).Round(time.Millisecond))
		}
	}
	logH2loadTotals(t, useTLS, rounds)

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopCancel()
	if st, err := s.Stop(stopCtx); err != nil || !st.Exited() || st.ExitStatus() != 0 {
		t.Errorf("stop: wait status %#x, %v; want exit status 0", uint32(st), err)
	}
}

// checkGeneration checks that upgrade n replaced the generation prev
// with a new one that serves, and that the old one exited 0.
func checkGeneration(t *testing.T, n, prev int, u harness.Upgrade, addr string) {
	t.Helper()
	if u.Old != prev || u.New == u.Old || u.New <= 0 {
		t.Errorf("upgrade %d: %d -> %d after generation %d; want a new pid each time", n, u.Old, u.New, prev)
	}
	if u.OldReaped && (!u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0) {
		t.Errorf("upgrade %d: old generation %d ended with wait status %#x, want exit status 0", n, u.Old, uint32(u.OldStatus))
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Errorf("after upgrade %d: GET /: %v", n, err)
		return
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if pid, _ := strconv.Atoi(resp.Header.Get("X-Pid")); resp.StatusCode != http.StatusOK || pid != u.New {
		t.Errorf("after upgrade %d: GET / answered %d by pid %d, want 200 by the new generation, %d", n, resp.StatusCode, pid, u.New)
	}
}

func logH2loadRound(t *testing.T, n int, rd h2loadRound) {
	t.Helper()
	r, u := rd.r, rd.u
	last := int64(0)
	if k := len(r.ProcessRequestFailures); k > 0 {
		last = r.ProcessRequestFailures[k-1]
	}
	t.Logf("run %2d: upgrade %d -> %d at +%v (ready after %v, old gone after %v); summary: %d total, %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout; "+
		"log: %d sent (%d before the SIGHUP), %d failed (%d status -1), %d never sent; Process Request Failure lines: %d (last N=%d); started-done %d",
		n, u.Old, u.New, u.Signalled.Sub(rd.start).Round(time.Millisecond), u.Ready.Sub(u.Signalled).Round(time.Millisecond), u.OldExited.Sub(u.Signalled).Round(time.Millisecond),
		r.Total, r.Started, r.Done, r.Succeeded, r.Failed, r.Errored, r.Timeout,
		len(r.Log)-r.LogUnsent(), rd.before, r.LogFailed(), rd.refused, r.LogUnsent(), len(r.ProcessRequestFailures), last, r.NotDone())
}

func logH2loadTotals(t *testing.T, useTLS bool, rounds []h2loadRound) {
	t.Helper()
	var total, started, done, succeeded, failed, errored, timeout, notDone int64
	var sent, logFailed, refused, unsent, prf, summaryIsLog, allEnded int
	var elapsed time.Duration
	for _, rd := range rounds {
		r := rd.r
		total += r.Total
		started += r.Started
		done += r.Done
		succeeded += r.Succeeded
		failed += r.Failed
		errored += r.Errored
		timeout += r.Timeout
		notDone += r.NotDone()
		sent += len(r.Log) - r.LogUnsent()
		logFailed += r.LogFailed()
		refused += rd.refused
		unsent += r.LogUnsent()
		prf += len(r.ProcessRequestFailures)
		elapsed += r.Elapsed
		if r.Failed == int64(r.LogFailed()+r.LogUnsent()) {
			summaryIsLog++
		}
		if len(r.ProcessRequestFailures) == 16 {
			allEnded++
		}
	}
	proto := "h2c"
	if useTLS {
		proto = "h2 over TLS"
	}
	t.Logf("h2load -c16 -m8 -D %v (%s), %d runs, one upgrade each: summary: %d total, %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout (%.0f req/s); "+
		"log: %d sent, %d failed (%d status -1), %d never sent; Process Request Failure lines: %d (all 16 clients in %d runs); started-done %d; "+
		"summary failed = the log's failures (sent or not) in %d of %d runs",
		h2loadRunFor, proto, len(rounds), total, started, done, succeeded, failed, errored, timeout, float64(succeeded)/elapsed.Seconds(),
		sent, logFailed, refused, unsent, prf, allEnded, notDone, summaryIsLog, len(rounds))
}

// TestWrkThroughUpgrades drives the HTTP/1.1 side of the h2c port, where
// every connection passes through the drain's preface sniffing, with wrk
// (keep-alive, 64 connections) back to back through 20 upgrades, and
// asserts wrk's own counts: no socket error of any kind, no non-2xx.
func TestWrkThroughUpgrades(t *testing.T) {
	outside.Require(t, outside.Wrk)
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "web.pid")
	s, _ := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile}, PIDFile: pidFile})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := outside.WrkConfig{URL: "http://" + addr + "/", Threads: 2, Connections: 64, Duration: 3 * time.Second}
	stop, done := make(chan struct{}), make(chan []outside.Timed[outside.WrkResult], 1)
	errc := make(chan error, 1)
	go func() {
		runs, err := outside.Repeat(ctx, stop, func(ctx context.Context) (outside.WrkResult, error) { return outside.RunWrk(ctx, cfg) })
		errc <- err
		done <- runs
	}()
	time.Sleep(500 * time.Millisecond) // the first run is under way
	prev := s.PID()
	var ups []harness.Upgrade
	for i := range 20 {
		u, err := s.Upgrade(ctx)
		if err != nil {
			close(stop)
			<-done
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		checkGeneration(t, i+1, prev, u, addr)
		prev = u.New
		ups = append(ups, u)
		time.Sleep(400 * time.Millisecond)
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	runs := <-done
	var requests, socketErrs, non2xx int64
	for i, r := range runs {
		requests += r.Result.Requests
		socketErrs += r.Result.SocketErrors()
		non2xx += r.Result.Non2xx3xx
		t.Logf("run %d: %v", i+1, r.Result)
	}
	for i, u := range ups {
		crossed := false
		for _, r := range runs {
			crossed = crossed || !u.Signalled.Before(r.Start) && !u.Signalled.After(r.End)
		}
		if !crossed {
			t.Errorf("upgrade %d: SIGHUP fell between wrk's runs", i+1)
		}
	}
	t.Logf("wrk -t2 -c64 (HTTP/1.1 on the h2c port), %d runs, %d upgrades: %d requests, %d socket errors, %d non-2xx/3xx", len(runs), len(ups), requests, socketErrs, non2xx)
	if socketErrs != 0 || non2xx != 0 {
		t.Errorf("wrk counted %d socket errors and %d non-2xx/3xx responses", socketErrs, non2xx)
	}
	if requests < 1000 {
		t.Errorf("only %d requests", requests)
	}
}

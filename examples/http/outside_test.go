//go:build unix

package main

// These tests upgrade this server 20 times while a load tool nobody here
// wrote (wrk, ApacheBench) runs against it, back to back, and assert on
// that tool's own counts: a second opinion on "no request fails", from
// clients that share none of our assumptions (internal/outside says what
// each tool counts as a failure). Without the tool they skip, unless
// HITLESS_REQUIRE_OUTSIDE=1.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/outside"
)

const (
	// outsideUpgrades is how many upgrades each test performs.
	outsideUpgrades = 20
	// outsidePause separates an upgrade's end from the next SIGHUP, so
	// that the tool's connections settle on the new generation before it
	// is replaced in turn.
	outsidePause = 400 * time.Millisecond
	// outsideRun is the length of one run of a tool: short, so that the
	// run under way when the upgrades end finishes soon, and long enough
	// that a tool's start-up is a small part of it.
	outsideRun = 3 * time.Second
)

// throughUpgrades starts s's load with run, repeated back to back, waits
// until it flows, upgrades s outsideUpgrades times, checking after each
// that the new generation serves, then lets the run under way finish. It
// returns the runs and the upgrades, and fails t if an upgrade fails or a
// SIGHUP fell outside every run.
func throughUpgrades[R any](t *testing.T, s *server, run func(context.Context) (R, error)) ([]outside.Timed[R], []harness.Upgrade) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type loaded struct {
		runs []outside.Timed[R]
		err  error
	}
	stop, done := make(chan struct{}), make(chan loaded, 1)
	go func() {
		runs, err := outside.Repeat(ctx, stop, run)
		done <- loaded{runs, err}
	}()
	// However this function ends, the tool has exited when it returns:
	// Repeat returns once the run under way ends, within outsideRun, or
	// when ctx kills it.
	stopped := false
	finish := func() loaded {
		if !stopped {
			stopped = true
			close(stop)
		}
		return <-done
	}
	defer func() {
		if !stopped {
			finish()
		}
	}()

	time.Sleep(500 * time.Millisecond) // the first run is under way
	first := s.PID()
	ups := make([]harness.Upgrade, 0, outsideUpgrades)
	for i := range outsideUpgrades {
		u, err := s.Upgrade(ctx)
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		ups = append(ups, u)
		t.Logf("upgrade %2d: %d -> %d ready after %v, old exited after %v", i+1, u.Old, u.New,
			u.Ready.Sub(u.Signalled).Round(time.Millisecond), u.OldExited.Sub(u.Signalled).Round(time.Millisecond))
		if pid, err := servingPID(s.addr); err != nil || pid != u.New {
			t.Errorf("after upgrade %d: GET / answered by pid %d (%v), want the new generation, %d", i+1, pid, err, u.New)
		}
		time.Sleep(outsidePause)
	}
	res := finish()
	if res.err != nil {
		t.Fatalf("load: %v", res.err)
	}
	checkGenerations(t, first, ups)
	checkCrossed(t, res.runs, ups)
	return res.runs, ups
}

// checkGenerations checks that every upgrade replaced the generation the
// one before had started with a new one, and that every old generation the
// harness reaped exited with status 0.
func checkGenerations(t *testing.T, first int, ups []harness.Upgrade) {
	t.Helper()
	prev := first
	for i, u := range ups {
		if u.Old != prev || u.New == u.Old || u.New <= 0 {
			t.Errorf("upgrade %d: %d -> %d after generation %d; want a new pid each time", i+1, u.Old, u.New, prev)
		}
		prev = u.New
		switch {
		case !u.OldReaped:
			t.Logf("upgrade %d: old generation %d was not reaped by the harness; its exit status is unknown", i+1, u.Old)
		case !u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0:
			t.Errorf("upgrade %d: old generation %d ended with wait status %#x, want exit status 0", i+1, u.Old, uint32(u.OldStatus))
		}
	}
}

// checkCrossed checks that every SIGHUP was sent while a run was under
// way, and logs the longest gap between runs.
func checkCrossed[R any](t *testing.T, runs []outside.Timed[R], ups []harness.Upgrade) {
	t.Helper()
	var gap time.Duration
	for i := 1; i < len(runs); i++ {
		gap = max(gap, runs[i].Start.Sub(runs[i-1].End))
	}
	for i, u := range ups {
		crossed := false
		for _, r := range runs {
			crossed = crossed || !u.Signalled.Before(r.Start) && !u.Signalled.After(r.End)
		}
		if !crossed {
			t.Errorf("upgrade %d: SIGHUP at %s fell between runs", i+1, u.Signalled.Format("15:04:05.000"))
		}
	}
	t.Logf("%d runs crossed %d upgrades; longest gap between runs %v", len(runs), len(ups), gap.Round(time.Microsecond))
}

// servingPID asks the server which process answers, on a connection of its
// own.
func servingPID(addr string) (int, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return strconv.Atoi(resp.Header.Get("X-Pid"))
}

// stopOutside stops the server and wants exit status 0: the drain after
// the last run ended with nothing cut.
func stopOutside(t *testing.T, s *server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if st, err := s.Stop(ctx); err != nil || !st.Exited() || st.ExitStatus() != 0 {
		t.Errorf("stop: wait status %#x, %v; want exit status 0", uint32(st), err)
	}
}

func TestWrkThroughUpgrades(t *testing.T) {
	outside.Require(t, outside.Wrk)
	s := start(t)
	// Keep-alive connections, each sending its next request as soon as
	// the previous response is complete: what a drain that closes an
	// idle connection under a request on its way turns into read errors.
	// wrk's default --timeout (2 s) stays: a request stalled that long by
	// an upgrade is a failure.
	cfg := outside.WrkConfig{URL: "http://" + s.addr + "/", Threads: 2, Connections: 64, Duration: outsideRun, Latency: true}
	runs, ups := throughUpgrades(t, s, func(ctx context.Context) (outside.WrkResult, error) { return outside.RunWrk(ctx, cfg) })

	var sum outside.WrkResult
	var elapsed, avg, p99 time.Duration
	for i, r := range runs {
		w := r.Result
		t.Logf("run %d: %v", i+1, w)
		if w.SocketErrors() != 0 || w.Non2xx3xx != 0 {
			t.Errorf("run %d: %d socket errors (connect %d, read %d, write %d, timeout %d), %d non-2xx/3xx responses",
				i+1, w.SocketErrors(), w.ConnectErrors, w.ReadErrors, w.WriteErrors, w.TimeoutErrors, w.Non2xx3xx)
		}
		sum.Requests += w.Requests
		sum.ConnectErrors += w.ConnectErrors
		sum.ReadErrors += w.ReadErrors
		sum.WriteErrors += w.WriteErrors
		sum.TimeoutErrors += w.TimeoutErrors
		sum.Non2xx3xx += w.Non2xx3xx
		elapsed += w.Elapsed
		avg += time.Duration(w.Requests) * w.Latency.Avg
		sum.Latency.Max = max(sum.Latency.Max, w.Latency.Max)
		if n := len(w.Latency.Percentiles); n > 0 {
			p99 = max(p99, w.Latency.Percentiles[n-1].Value)
		}
	}
	if sum.Requests > 0 {
		avg /= time.Duration(sum.Requests)
	}
	t.Logf("wrk -t2 -c64 through %d upgrades: %d runs, %d requests (%.0f/s); socket errors: connect %d, read %d, write %d, timeout %d; non-2xx/3xx %d; latency avg %v, max %v, worst p99 %v",
		len(ups), len(runs), sum.Requests, float64(sum.Requests)/elapsed.Seconds(), sum.ConnectErrors, sum.ReadErrors, sum.WriteErrors, sum.TimeoutErrors, sum.Non2xx3xx,
		avg.Round(time.Microsecond), sum.Latency.Max, p99)
	// Even a race-enabled server on a busy 2-core machine serves a few
	// thousand requests a second; a hundred per upgrade means the load
	// really ran.
	if min := int64(100 * outsideUpgrades); sum.Requests < min {
		t.Errorf("only %d requests in all, want at least %d", sum.Requests, min)
	}
	stopOutside(t, s)
}

func TestAbKeepAliveThroughUpgrades(t *testing.T) {
	// ab -k counts nothing, and sends the request again, when the server
	// closes a kept-alive connection before a byte of the next response:
	// more lenient than wrk there, but it checks each body's length.
	abThroughUpgrades(t, true)
}

func TestAbNewConnectionThroughUpgrades(t *testing.T) {
	// A new connection per request: a connection that waits in the
	// listener's backlog across the handover, and one accepted just as
	// the old generation stops accepting, must be served all the same.
	abThroughUpgrades(t, false)
}

func abThroughUpgrades(t *testing.T, keepAlive bool) {
	outside.Require(t, outside.AB)
	s := start(t)
	cfg := outside.ABConfig{URL: "http://" + s.addr + "/", Concurrency: 32, KeepAlive: keepAlive, Duration: outsideRun}
	runs, ups := throughUpgrades(t, s, func(ctx context.Context) (outside.ABResult, error) { return outside.RunAB(ctx, cfg) })

	var sum outside.ABResult
	var elapsed, mean, longest time.Duration
	for i, r := range runs {
		a := r.Result
		t.Logf("run %d: %v", i+1, a)
		// examples/http pads the pid in its body, so every answer has the
		// same length and a Length failure is a truncated one.
		failed := a.Failed
		if failed != 0 || a.Non2xx != 0 || a.WriteErrors != 0 {
			t.Errorf("run %d: %d failed (connect %d, receive %d, length %d, exceptions %d), %d non-2xx, %d write errors",
				i+1, a.Failed, a.FailedConnect, a.FailedReceive, a.FailedLength, a.FailedExceptions, a.Non2xx, a.WriteErrors)
		}
		if keepAlive && a.KeepAlive == 0 {
			t.Errorf("run %d: no keep-alive requests with -k", i+1)
		}
		sum.Complete += a.Complete
		sum.Failed += a.Failed
		sum.FailedConnect += a.FailedConnect
		sum.FailedReceive += a.FailedReceive
		sum.FailedLength += a.FailedLength
		sum.FailedExceptions += a.FailedExceptions
		sum.Non2xx += a.Non2xx
		sum.WriteErrors += a.WriteErrors
		sum.KeepAlive += a.KeepAlive
		elapsed += a.Elapsed
		mean += time.Duration(a.Complete) * a.MeanPerRequest
		if n := len(a.Percentiles); n > 0 {
			longest = max(longest, a.Percentiles[n-1].Value)
		}
	}
	if sum.Complete > 0 {
		mean /= time.Duration(sum.Complete)
	}
	mode := "a new connection per request"
	if keepAlive {
		mode = "keep-alive"
	}
	t.Logf("ab -c32 (%s) through %d upgrades: %d runs, %d complete (%.0f/s), %d keep-alive; failed %d (connect %d, receive %d, length %d, exceptions %d); non-2xx %d; write errors %d; mean time per request %v, longest %v",
		mode, len(ups), len(runs), sum.Complete, float64(sum.Complete)/elapsed.Seconds(), sum.KeepAlive, sum.Failed, sum.FailedConnect, sum.FailedReceive,
		sum.FailedLength, sum.FailedExceptions, sum.Non2xx, sum.WriteErrors, mean.Round(time.Microsecond), longest)
	if min := int64(100 * outsideUpgrades); sum.Complete < min {
		t.Errorf("only %d requests in all, want at least %d", sum.Complete, min)
	}
	stopOutside(t, s)
}

//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
	"github.com/hitlessgo/hitless/internal/outside"
)

// measureWrk measures wrk -t2 -c<conns>: keep-alive connections, each
// sending its next request as soon as the previous response is complete.
// wrk's default --timeout (2 s) stays: a request an upgrade stalls that
// long is a failure.
func measureWrk(conns int) func(context.Context, *harness.Server, string, int, *outsideRow) error {
	return func(ctx context.Context, srv *harness.Server, addr string, n int, row *outsideRow) error {
		cfg := outside.WrkConfig{URL: "http://" + addr + "/", Threads: 2, Connections: conns, Duration: pacedRun, Latency: true}
		runs, err := throughUpgrades(ctx, srv, n, row, func(ctx context.Context) (outside.WrkResult, error) { return outside.RunWrk(ctx, cfg) })
		if err != nil {
			return err
		}
		var (
			sum      outside.WrkResult
			weighted float64 // Σ requests × mean latency, in ns: the runs' mean
			p99      time.Duration
		)
		for i, r := range runs {
			w := r.Result
			row.details = append(row.details, fmt.Sprintf("run %d (+%v): %v", i+1, r.Start.Sub(runs[0].Start).Round(time.Millisecond), w))
			sum.Requests += w.Requests
			sum.ConnectErrors += w.ConnectErrors
			sum.ReadErrors += w.ReadErrors
			sum.WriteErrors += w.WriteErrors
			sum.TimeoutErrors += w.TimeoutErrors
			sum.Non2xx3xx += w.Non2xx3xx
			weighted += float64(w.Requests) * float64(w.Latency.Avg)
			sum.Latency.Max = max(sum.Latency.Max, w.Latency.Max)
			for _, p := range w.Latency.Percentiles {
				if p.Percent == 99 {
					p99 = max(p99, p.Value)
				}
			}
		}
		if sum.Requests == 0 {
			return errors.New("wrk completed no request")
		}
		row.requests = sum.Requests
		row.failures = fmt.Sprintf("**%d** socket errors (connect %d, read %d, write %d, timeout %d); non-2xx/3xx %d",
			sum.SocketErrors(), sum.ConnectErrors, sum.ReadErrors, sum.WriteErrors, sum.TimeoutErrors, sum.Non2xx3xx)
		row.latency = fmt.Sprintf("mean %s, p99 %s (worst run), max %s",
			ms(time.Duration(weighted/float64(sum.Requests))), ms(p99), ms(sum.Latency.Max))
		return nil
	}
}

// measureAB measures ab -c32, with -k (HTTP/1.0 keep-alive) or a new
// connection per request. Both servers answer every generation with a
// body of the same length, so a Length failure is a truncated answer (or,
// without -k, a connection closed without one).
func measureAB(keepAlive bool) func(context.Context, *harness.Server, string, int, *outsideRow) error {
	return func(ctx context.Context, srv *harness.Server, addr string, n int, row *outsideRow) error {
		cfg := outside.ABConfig{URL: "http://" + addr + "/", Concurrency: 32, KeepAlive: keepAlive, Duration: pacedRun}
		runs, err := throughUpgrades(ctx, srv, n, row, func(ctx context.Context) (outside.ABResult, error) { return outside.RunAB(ctx, cfg) })
		if err != nil {
			return err
		}
		var (
			sum           outside.ABResult
			weighted      float64 // Σ requests × mean time per request, in ns
			p99, longest  time.Duration
			hasPercentile bool
		)
		for i, r := range runs {
			a := r.Result
			row.details = append(row.details, fmt.Sprintf("run %d (+%v): %v", i+1, r.Start.Sub(runs[0].Start).Round(time.Millisecond), a))
			sum.Complete += a.Complete
			sum.Failed += a.Failed
			sum.FailedConnect += a.FailedConnect
			sum.FailedReceive += a.FailedReceive
			sum.FailedLength += a.FailedLength
			sum.FailedExceptions += a.FailedExceptions
			sum.WriteErrors += a.WriteErrors
			sum.Non2xx += a.Non2xx
			weighted += float64(a.Complete) * float64(a.MeanPerRequest)
			for _, p := range a.Percentiles {
				hasPercentile = true
				switch p.Percent {
				case 99:
					p99 = max(p99, p.Value)
				case 100:
					longest = max(longest, p.Value)
				}
			}
		}
		if sum.Complete == 0 {
			return errors.New("ab completed no request")
		}
		row.requests = sum.Complete
		row.failures = fmt.Sprintf("**%d** failed (connect %d, receive %d, length %d, exceptions %d); write errors %d; non-2xx %d",
			sum.Failed, sum.FailedConnect, sum.FailedReceive, sum.FailedLength, sum.FailedExceptions, sum.WriteErrors, sum.Non2xx)
		row.latency = "mean " + ms(time.Duration(weighted/float64(sum.Complete)))
		if hasPercentile {
			// ab prints whole milliseconds.
			row.latency += fmt.Sprintf(", p99 %dms (worst run), max %dms", p99.Milliseconds(), longest.Milliseconds())
		}
		return nil
	}
}

// measureH2load measures h2load -c16 -m8 over h2c: n runs of h2loadRun,
// each with one upgrade h2loadSignalAt into it, since h2load's clients
// stop at their first GOAWAY. It counts what h2load's summary says failed
// and errored and, from its per-request log, the requests it sent that
// failed and those it never sent (see internal/outside); and splits the
// latencies of the requests it sent into those that began near the SIGHUP
// and the others.
func measureH2load(ctx context.Context, srv *harness.Server, addr string, n int, row *outsideRow) error {
	var (
		done, failed, errored, timeout, notDone int64
		sentFailed, unsent                      int
		near, steady                            loadgen.Histogram
	)
	start := time.Now()
	for i := range n {
		r, u, began, err := h2loadRound(ctx, srv, addr, row, start)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		if r.Protocol != "h2c" || r.Done == 0 {
			return fmt.Errorf("run %d: h2load spoke %q and completed %d requests: want h2c traffic (%v)", i+1, r.Protocol, r.Done, r)
		}
		before := 0
		for _, e := range r.Log {
			if !e.Sent() {
				continue
			}
			if e.Start.Before(u.Signalled) {
				before++
			}
			if d := e.Start.Sub(u.Signalled); d >= -nearUpgrade && d <= nearUpgrade {
				near.Record(e.Duration)
			} else {
				steady.Record(e.Duration)
			}
		}
		// The upgrade was crossed if h2load had sent requests by then.
		if before > 0 {
			row.crossed++
		}
		row.details = append(row.details, fmt.Sprintf("run %d (+%v): SIGHUP at +%v; %d sent before it; %v; started-done %d",
			i+1, began.Sub(start).Round(time.Millisecond), u.Signalled.Sub(began).Round(time.Millisecond), before, r, r.NotDone()))
		done += r.Done
		failed += r.Failed
		errored += r.Errored
		timeout += r.Timeout
		notDone += r.NotDone()
		sentFailed += r.LogFailed()
		unsent += r.LogUnsent()
	}
	row.runs = n
	row.requests = done
	row.failures = fmt.Sprintf("**%d** failed, %d errored (%d timeout); log: %d sent and failed, %d never sent; started−done %d",
		failed, errored, timeout, sentFailed, unsent, notDone)
	row.latency = fmt.Sprintf("p99 near upgrades %s (%d req), steady %s (%d req)",
		ms(near.Quantile(0.99)), near.Count(), ms(steady.Quantile(0.99)), steady.Count())
	return nil
}

// h2loadRound runs h2load once, upgrading srv h2loadSignalAt into the run,
// and returns the run, the upgrade and when the run began. h2load has
// exited when it returns: it stops after its duration, or ctx kills it.
func h2loadRound(ctx context.Context, srv *harness.Server, addr string, row *outsideRow, start time.Time) (outside.H2loadResult, harness.Upgrade, time.Time, error) {
	cfg := outside.H2loadConfig{URL: "http://" + addr + "/", Clients: 16, Streams: 8, Duration: h2loadRun}
	type result struct {
		r   outside.H2loadResult
		err error
	}
	done := make(chan result, 1)
	began := time.Now()
	go func() {
		r, err := outside.RunH2load(ctx, cfg)
		done <- result{r, err}
	}()
	var (
		u   harness.Upgrade
		err error
	)
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(h2loadSignalAt):
		u, err = upgrade(ctx, srv, row, start)
	}
	res := <-done
	if err == nil {
		err = res.err
	}
	return res.r, u, began, err
}

func renderOutside(rows []outsideRow, upgrades int, m machine) string {
	var b strings.Builder
	model := m.model
	if model == "" {
		model = "model unknown"
	}
	fmt.Fprintf(&b, "\nMachine: %d CPUs (%s); load average %s before the run, %s after; RLIMIT_NOFILE %d; net.core.somaxconn %s; %v in all.\n\n",
		m.cpus, model, m.loadBefore, m.loadAfter, m.nofile, m.somaxconn, m.took.Round(time.Second))
	fmt.Fprintf(&b, "wrk and ab: runs of %v back to back, %d upgrades per row (wrk -c%d: %d), SIGHUPs at least %v apart, each sent while a run was under way. "+
		"h2load: %d runs of %v, one upgrade %v into each (its clients stop at their first GOAWAY). "+
		"Latency: for wrk and ab the tools' own figures over their runs (mean weighted by requests; the worst run's p99; max; ab's in whole milliseconds); "+
		"for h2load, from its per-request log, the p99 of the requests it sent within ±%v of a SIGHUP and of the others.\n\n",
		pacedRun, upgrades, manyConns, (upgrades+1)/2, upgradeEvery, upgrades, h2loadRun, h2loadSignalAt, nearUpgrade)
	fmt.Fprintln(&b, "| kind | server | runs | requests | failures, as the tool counts them | latency | old generation gone after new ready (median / max) | notes |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		med, worst := median(r.ups, func(u harness.Upgrade) time.Duration { return u.OldExited.Sub(u.Ready) })
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s | %s | %s / %s | %s |\n",
			r.kind, r.server, r.runs, r.requests, r.failures, r.latency, ms(med), ms(worst), strings.Join(r.notes, "; "))
	}
	return b.String()
}

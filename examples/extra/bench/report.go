package main

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/hitlessgo/hitless/internal/timeline"
)

// target is the ratio the library promises for every kind: p99 near an
// upgrade at most this many times the steady p99 (issue 16).
const ratioTarget = 1.2

// result is every run of one kind against one server.
type result struct {
	kind, server string
	runs         []*timeline.Run
	errs         []error
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

func failed(r *timeline.Run) int {
	n := 0
	for _, q := range r.Requests {
		if q.Failed {
			n++
		}
	}
	return n
}

// render is the report: what was run, the table, and what went wrong.
func render(cfg config, results []*result, pictures []string, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n`%s`: %d run(s) of every kind and server, %d upgrades %v apart per run, %d requests/s over %d connections, %v of warm-up (not measured), %v with no upgrade before the first and %v after the last; %s/%s, %d CPUs, %s; took %v.\n\n",
		cfg.Command, cfg.Runs, cfg.Upgrades, cfg.Gap, cfg.Rate, cfg.Conns, cfg.Warmup, cfg.Steady, cfg.After,
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), took.Round(time.Second))
	fmt.Fprintf(&b, "p99 near: requests started within ±%v of a SIGHUP; steady: all the others, from the stretch with no upgrade and between upgrades (medians over runs). "+
		"near/steady per run, then its spread (min–max); ≤ %.1f×: every run within the target. "+
		"Overlap: from SIGHUP until the old generation is gone, CPU time used and peak RSS of the old and the new generation, "+
		"read every %v: medians over the upgrades in which both generations were seen while both ran "+
		"(k of n when an overlap was too short for the sampling interval; the old generation's CPU after its last look is not counted).\n\n",
		cfg.Window, ratioTarget, cfg.Sample)
	fmt.Fprintln(&b, "| traffic | server | runs | requests | req/s | failed | p99 steady | p99 near | near/steady per run | spread | ≤ 1.2× | SIGHUP → ready | SIGHUP → old gone | CPU old / new | peak RSS old / new |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, res := range results {
		b.WriteString(row(cfg, res))
	}
	fmt.Fprintf(&b, "\nNear upgrades, split by reconnection: every client an old generation tells to go opens a new connection, and the request that does so waits for it "+
		"(TCP, and the TLS handshake or WebSocket upgrade; for gRPC, which reconnects inside grpc-go, the wait until grpc-go had a connection for the call). "+
		"Reconnected: near requests that opened a connection, and their share; "+
		"without them: p99 of the other near requests over the steady p99, per run; reconnect: p50 / p99 of the time spent opening the connection.\n\n")
	fmt.Fprintln(&b, "| traffic | server | near | reconnected | p99 near without them / steady, per run | reconnect p50 / p99 |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|")
	for _, res := range results {
		b.WriteString(splitRow(cfg, res))
	}
	var errs []string
	for _, res := range results {
		for _, err := range res.errs {
			errs = append(errs, fmt.Sprintf("- %s, %s: %v", res.kind, res.server, err))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(&b, "\nErrors:\n\n%s\n", strings.Join(errs, "\n"))
	}
	if len(pictures) > 0 {
		fmt.Fprintf(&b, "\nPictures (first run, %v buckets): %s\n", cfg.Bucket, strings.Join(pictures, ", "))
	}
	return b.String()
}

func row(cfg config, res *result) string {
	var (
		requests, nFailed int
		span              time.Duration
		nears, steadies   []time.Duration
		ratios            []float64
		ready, gone       []time.Duration
		oldCPU, newCPU    []time.Duration
		oldRSS, newRSS    []int64
		overlaps          int
	)
	for _, r := range res.runs {
		requests += len(r.Requests)
		nFailed += failed(r)
		span += startSpan(r.Requests)
		near, steady, ratio := r.NearSteady(cfg.Window)
		nears, steadies, ratios = append(nears, near), append(steadies, steady), append(ratios, ratio)
		for _, m := range r.Marks {
			ready = append(ready, m.Ready.Sub(m.Signalled))
			gone = append(gone, m.OldExited.Sub(m.Signalled))
		}
		for _, o := range r.Overlaps() {
			overlaps++
			if !sampled(r.Procs, o.Mark) {
				continue
			}
			oldCPU, newCPU = append(oldCPU, o.OldCPU), append(newCPU, o.NewCPU)
			oldRSS, newRSS = append(oldRSS, o.OldPeakRSS), append(newRSS, o.NewPeakRSS)
		}
	}
	runs := fmt.Sprint(len(res.runs))
	if len(res.errs) > 0 {
		runs += fmt.Sprintf(" (%d with errors)", len(res.errs))
	}
	rate := "–"
	if span > 0 {
		rate = fmt.Sprintf("%.0f", float64(requests)/span.Seconds())
	}
	perRun := make([]string, len(ratios))
	for i, r := range ratios {
		perRun[i] = fmt.Sprintf("%.2f", r)
	}
	spread, within := "–", "–"
	if len(ratios) > 0 {
		lo, hi := slices.Min(ratios), slices.Max(ratios)
		spread = fmt.Sprintf("%.2f–%.2f", lo, hi)
		within = "yes"
		if hi > ratioTarget || lo == 0 {
			within = "**no**"
		}
	}
	cpu, rss := "not sampled", "not sampled"
	if len(oldCPU) > 0 {
		cpu = dur(median(oldCPU)) + " / " + dur(median(newCPU))
		rss = mib(median(oldRSS)) + " / " + mib(median(newRSS))
		if len(oldCPU) < overlaps {
			of := fmt.Sprintf(" (%d of %d)", len(oldCPU), overlaps)
			cpu, rss = cpu+of, rss+of
		}
	}
	return fmt.Sprintf("| %s | %s | %s | %d | %s | **%d** | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
		res.kind, res.server, runs, requests, rate, nFailed,
		dur(median(steadies)), dur(median(nears)), strings.Join(perRun, ", "), spread, within,
		dur(median(ready)), dur(median(gone)), cpu, rss)
}

// splitRow is the reconnection split of one kind and server's runs.
func splitRow(cfg config, res *result) string {
	var (
		near, reconnected int
		ratios            []string
		p50s, p99s        []time.Duration
	)
	for _, r := range res.runs {
		s := r.NearSplit(cfg.Window)
		near += s.Near
		reconnected += s.Reconnected
		ratio := "–"
		if s.SteadyP99 > 0 && s.NoReconnectP99 > 0 {
			ratio = fmt.Sprintf("%.2f", float64(s.NoReconnectP99)/float64(s.SteadyP99))
		}
		ratios = append(ratios, ratio)
		if s.Reconnected > 0 {
			p50s, p99s = append(p50s, s.ReconnectP50), append(p99s, s.ReconnectP99)
		}
	}
	share, cost := "–", "–"
	if near > 0 {
		share = fmt.Sprintf("%d (%.1f %%)", reconnected, 100*float64(reconnected)/float64(near))
	}
	if len(p50s) > 0 {
		cost = dur(median(p50s)) + " / " + dur(median(p99s))
	}
	return fmt.Sprintf("| %s | %s | %d | %s | %s | %s |\n", res.kind, res.server, near, share, strings.Join(ratios, ", "), cost)
}

// sampled says whether the sampler looked at both generations while both
// ran: an overlap shorter than the sampling interval can fall between two
// looks, and its CPU time would read as zero.
func sampled(procs []timeline.ProcSample, m timeline.Mark) bool {
	var old, nw bool
	for _, p := range procs {
		if p.At.Before(m.Signalled) || p.At.After(m.OldExited) {
			continue
		}
		old = old || p.PID == m.Old
		nw = nw || p.PID == m.New
	}
	return old && nw
}

// startSpan is the time from the first request's start to the last's: the
// measured stretch of a run, for its rate.
func startSpan(reqs []timeline.Request) time.Duration {
	if len(reqs) < 2 {
		return 0
	}
	lo, hi := reqs[0].Start, reqs[0].Start
	for _, q := range reqs {
		if q.Start.Before(lo) {
			lo = q.Start
		}
		if q.Start.After(hi) {
			hi = q.Start
		}
	}
	return hi.Sub(lo)
}

func median[T time.Duration | int64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0fms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000)
}

func mib(n int64) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

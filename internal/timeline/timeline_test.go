package timeline

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/loadgen"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestFromLoadgen(t *testing.T) {
	in := []loadgen.Sample{
		{Start: at(0), Latency: time.Millisecond, PID: 7},
		{Start: at(time.Second), Latency: 2 * time.Millisecond, Class: loadgen.Class("reset")},
		{Start: at(2 * time.Second), Latency: 3 * time.Millisecond, PID: 8, Reconnect: time.Millisecond},
	}
	got := FromLoadgen(in)
	want := []Request{
		{Start: at(0), Latency: time.Millisecond, PID: 7},
		{Start: at(time.Second), Latency: 2 * time.Millisecond, Failed: true},
		{Start: at(2 * time.Second), Latency: 3 * time.Millisecond, PID: 8, Reconnect: time.Millisecond},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d requests, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestBuckets(t *testing.T) {
	ms := time.Millisecond
	r := &Run{Requests: []Request{
		// Out of order on purpose: the first bucket starts at the
		// earliest start, wherever it is in the slice.
		{Start: at(250 * ms), Latency: 9 * ms, PID: 2},
		{Start: at(0), Latency: 1 * ms, PID: 1},
		{Start: at(99 * ms), Latency: 3 * ms, PID: 1},
		{Start: at(50 * ms), Latency: 2 * ms, PID: 2},
		{Start: at(60 * ms), Latency: 100 * ms, Failed: true},
		{Start: at(260 * ms), Latency: 5 * ms, Failed: true, PID: 2},
	}}
	b := r.Buckets(100 * ms)
	if len(b) != 3 {
		t.Fatalf("got %d buckets, want 3 (the empty middle one kept)", len(b))
	}
	for i, want := range []time.Time{at(0), at(100 * ms), at(200 * ms)} {
		if !b[i].Start.Equal(want) {
			t.Errorf("bucket %d starts %v, want %v", i, b[i].Start, want)
		}
	}
	if b[0].Requests != 4 || b[0].Failed != 1 {
		t.Errorf("bucket 0: %d requests %d failed, want 4 and 1", b[0].Requests, b[0].Failed)
	}
	// Successes 1, 2, 3 ms: nearest-rank p50 is 2 ms, p99 3 ms; the
	// failure's 100 ms is not latency.
	if b[0].P50 != 2*ms || b[0].P99 != 3*ms {
		t.Errorf("bucket 0: p50 %v p99 %v, want 2ms and 3ms", b[0].P50, b[0].P99)
	}
	if b[0].ByPID[1] != 2 || b[0].ByPID[2] != 1 || len(b[0].ByPID) != 2 {
		t.Errorf("bucket 0 by pid = %v, want map[1:2 2:1]", b[0].ByPID)
	}
	if b[1].Requests != 0 || b[1].P99 != 0 || b[1].ByPID != nil {
		t.Errorf("bucket 1 = %+v, want empty", b[1])
	}
	if b[2].Requests != 2 || b[2].Failed != 1 || b[2].P99 != 9*ms || b[2].ByPID[2] != 2 {
		t.Errorf("bucket 2 = %+v", b[2])
	}
	// The run is taken to end a mean gap (260/5 ms) after the last
	// start, 312 ms: past the last bucket's 300, so it is a whole one.
	for i, want := range []time.Time{at(100 * ms), at(200 * ms), at(300 * ms)} {
		if !b[i].End.Equal(want) {
			t.Errorf("bucket %d ends %v, want %v", i, b[i].End, want)
		}
	}
	if b[0].Rate() != 40 || b[1].Rate() != 0 {
		t.Errorf("rates %v and %v, want 40/s and 0", b[0].Rate(), b[1].Rate())
	}
	if got := len(r.Buckets(0)); got != 3 {
		t.Errorf("width 0 gave %d buckets, want the default 100ms's 3", got)
	}
	if got := (&Run{}).Buckets(time.Millisecond); got != nil {
		t.Errorf("no requests gave %v buckets, want none", got)
	}
}

// TestBucketsLastPartial: at a steady 100 requests/s, every bucket's rate
// is 100/s, the last one's too, though the run ends part of the way
// through it; a last bucket that would cover under half a width is folded
// into the one before.
func TestBucketsLastPartial(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		last    time.Duration // the last request's start; one every 10 ms from 0
		n       int           // buckets
		lastEnd time.Duration // where the last one ends
		lastN   int           // requests in it
	}{
		{1270 * ms, 13, 1280 * ms, 8},  // 1200..1280: 80 ms, kept
		{1250 * ms, 13, 1260 * ms, 6},  // 60 ms: kept
		{1230 * ms, 12, 1240 * ms, 14}, // 40 ms: folded, 1100..1240
		{1190 * ms, 12, 1200 * ms, 10}, // ends on a bucket's edge
	} {
		r := &Run{}
		for d := time.Duration(0); d <= c.last; d += 10 * ms {
			r.Requests = append(r.Requests, Request{Start: at(d), Latency: ms})
		}
		b := r.Buckets(100 * ms)
		if len(b) != c.n {
			t.Fatalf("last start %v: %d buckets, want %d", c.last, len(b), c.n)
		}
		l := b[len(b)-1]
		if !l.End.Equal(at(c.lastEnd)) || l.Requests != c.lastN {
			t.Errorf("last start %v: last bucket %v..%v with %d requests, want ..%v with %d",
				c.last, l.Start.Sub(t0), l.End.Sub(t0), l.Requests, c.lastEnd, c.lastN)
		}
		for i, x := range b {
			if math.Abs(x.Rate()-100) > 1e-9 {
				t.Errorf("last start %v: bucket %d (%v..%v) rate %v, want 100/s", c.last, i, x.Start.Sub(t0), x.End.Sub(t0), x.Rate())
			}
		}
	}
	// One request, or several at one instant: no gap to measure, one
	// whole bucket.
	for _, n := range []int{1, 3} {
		r := &Run{Requests: make([]Request, n)}
		for i := range r.Requests {
			r.Requests[i].Start = at(5 * ms)
		}
		b := r.Buckets(100 * ms)
		if len(b) != 1 || !b[0].End.Equal(at(105*ms)) || b[0].Rate() != float64(n)*10 {
			t.Errorf("%d at one instant: %+v", n, b)
		}
	}
}

func TestNearSteady(t *testing.T) {
	ms := time.Millisecond
	r := &Run{Marks: []Mark{{Signalled: at(1000 * ms)}, {Signalled: at(3000 * ms)}}}
	// 100 steady requests at 1 ms, 100 near the marks at 5 ms, and one
	// just outside a window; a slow failure near a mark must not count.
	for i := range 100 {
		r.Requests = append(r.Requests, Request{Start: at(time.Duration(1500+i) * ms), Latency: ms})
	}
	for i := range 50 {
		r.Requests = append(r.Requests,
			Request{Start: at(time.Duration(500+i*20) * ms), Latency: 5 * ms},  // 500..1480: within ±500 of 1000
			Request{Start: at(time.Duration(2600+i*10) * ms), Latency: 5 * ms}) // 2600..3090
	}
	r.Requests = append(r.Requests,
		Request{Start: at(3501 * ms), Latency: ms},                      // 501 ms after: steady
		Request{Start: at(3500 * ms), Latency: 5 * ms},                  // exactly 500 ms after: near
		Request{Start: at(1000 * ms), Latency: time.Hour, Failed: true}, // not latency
	)
	near, steady, ratio := r.NearSteady(500 * ms)
	if near != 5*ms || steady != ms || ratio != 5 {
		t.Errorf("NearSteady = %v, %v, %v; want 5ms, 1ms, 5", near, steady, ratio)
	}
	// With no marks everything is steady and the ratio is 0 (no near).
	r.Marks = nil
	near, steady, ratio = r.NearSteady(500 * ms)
	if near != 0 || steady != 5*ms || ratio != 0 {
		t.Errorf("no marks: NearSteady = %v, %v, %v; want 0, 5ms, 0", near, steady, ratio)
	}
	if _, _, ratio := (&Run{Marks: []Mark{{Signalled: t0}}}).NearSteady(ms); ratio != 0 {
		t.Errorf("empty run ratio = %v, want 0", ratio)
	}
}

func TestNearSplit(t *testing.T) {
	ms := time.Millisecond
	r := &Run{Marks: []Mark{{Signalled: at(1000 * ms)}, {Signalled: at(3000 * ms)}}}
	// Near, on a kept connection: 100 requests of 1..100 ms, half by
	// each mark.
	for i := range 100 {
		start := at(time.Duration(600+i*8) * ms) // 600..1392
		if i%2 == 1 {
			start = at(time.Duration(2600+i*8) * ms)
		}
		r.Requests = append(r.Requests, Request{Start: start, Latency: time.Duration(i+1) * ms})
	}
	// Near, reconnected: 10 requests whose reconnection took k ms, k =
	// 1..10, of a latency of 300+k ms.
	for k := 1; k <= 10; k++ {
		r.Requests = append(r.Requests, Request{
			Start:     at(time.Duration(2990+k) * ms),
			Latency:   time.Duration(300+k) * ms,
			Reconnect: time.Duration(k) * ms,
		})
	}
	// Steady: 50 at 2 ms and one that reconnected, at 400 ms; failures,
	// near and steady, count nowhere.
	for i := range 50 {
		r.Requests = append(r.Requests, Request{Start: at(time.Duration(1600+i*10) * ms), Latency: 2 * ms})
	}
	r.Requests = append(r.Requests,
		Request{Start: at(4000 * ms), Latency: 400 * ms, Reconnect: 50 * ms},
		Request{Start: at(1000 * ms), Latency: time.Hour, Reconnect: time.Hour, Failed: true},
		Request{Start: at(2000 * ms), Latency: time.Hour, Reconnect: time.Hour, Failed: true},
	)
	got := r.NearSplit(500 * ms)
	// Nearest rank: of the 110 near, the 109th (ceil(.99*110)) is the
	// 9th reconnected one, 309 ms; of the 100 kept, the 99th, 99 ms; of
	// the 10 reconnections, the 5th and the 10th; of the 51 steady, the
	// 51st, the reconnected 400 ms.
	want := NearSplit{
		Near: 110, Reconnected: 10,
		NearP99: 309 * ms, NoReconnectP99: 99 * ms,
		ReconnectP50: 5 * ms, ReconnectP99: 10 * ms,
		SteadyP99: 400 * ms,
	}
	if got != want {
		t.Errorf("NearSplit =\n %+v, want\n %+v", got, want)
	}
	if near, steady, _ := r.NearSteady(500 * ms); near != got.NearP99 || steady != got.SteadyP99 {
		t.Errorf("NearSteady says near %v steady %v, NearSplit %v and %v", near, steady, got.NearP99, got.SteadyP99)
	}
	// Without the reconnected ones, the kept p99 is the near p99 and the
	// reconnection quantiles are 0.
	r.Requests = slices.DeleteFunc(r.Requests, func(q Request) bool { return q.Reconnect > 0 })
	got = r.NearSplit(500 * ms)
	want = NearSplit{Near: 100, NearP99: 99 * ms, NoReconnectP99: 99 * ms, SteadyP99: 2 * ms}
	if got != want {
		t.Errorf("no reconnections: NearSplit =\n %+v, want\n %+v", got, want)
	}
	if got := (&Run{Marks: r.Marks}).NearSplit(500 * ms); got != (NearSplit{}) {
		t.Errorf("no requests: %+v", got)
	}
}

func TestOverlaps(t *testing.T) {
	ms := time.Millisecond
	const mib = 1 << 20
	m := Mark{Signalled: at(1000 * ms), Ready: at(1300 * ms), OldExited: at(2000 * ms), Old: 10, New: 11}
	r := &Run{Marks: []Mark{m, {Signalled: at(5000 * ms), Ready: at(5100 * ms), Old: 11, New: 12}}}
	// The old generation uses 1 ms of CPU per 10 ms of wall time: at
	// Signalled it has used 100 ms, at OldExited 200 ms; sampled every
	// 300 ms so both ends must be interpolated.
	for d := 100 * ms; d <= 1900*ms; d += 300 * ms {
		rss := int64(10 * mib)
		if d >= 1000*ms {
			rss = 12 * mib
		}
		r.Procs = append(r.Procs, ProcSample{At: at(d), PID: 10, CPU: d / 10, RSS: rss})
	}
	r.Procs = append(r.Procs, ProcSample{At: at(2050 * ms), PID: 10, CPU: 205 * ms, RSS: 99 * mib}) // after the window: not the peak
	// The new generation is first sampled at Ready, having used 80 ms
	// since the signal started it: all 80 ms count. Its peak is at 1600.
	r.Procs = append(r.Procs,
		ProcSample{At: at(1300 * ms), PID: 11, CPU: 80 * ms, RSS: 20 * mib},
		ProcSample{At: at(1600 * ms), PID: 11, CPU: 90 * ms, RSS: 30 * mib},
		ProcSample{At: at(2200 * ms), PID: 11, CPU: 100 * ms, RSS: 25 * mib},
		// Second upgrade: OldExited never seen, so the window ends at
		// 11's last sample (5300); 12 was sampled before the signal
		// (say it was watched early), so its CPU counts from there.
		ProcSample{At: at(4900 * ms), PID: 12, CPU: 5 * ms, RSS: mib},
		ProcSample{At: at(5100 * ms), PID: 12, CPU: 25 * ms, RSS: 3 * mib},
		ProcSample{At: at(4800 * ms), PID: 11, CPU: 400 * ms, RSS: 26 * mib},
		ProcSample{At: at(5300 * ms), PID: 11, CPU: 450 * ms, RSS: 27 * mib},
	)
	o := r.Overlaps()
	if len(o) != 2 {
		t.Fatalf("got %d overlaps, want 2", len(o))
	}
	if o[0].Mark != m {
		t.Errorf("overlap 0 mark = %+v, want %+v", o[0].Mark, m)
	}
	near := func(got, want time.Duration) bool { return got > want-ms && got < want+ms }
	if !near(o[0].OldCPU, 100*ms) {
		t.Errorf("old CPU = %v, want 100ms (interpolated)", o[0].OldCPU)
	}
	// New at OldExited (2000): between 90 ms at 1600 and 100 ms at 2200.
	if want := 90*ms + 10*ms*400/600; !near(o[0].NewCPU, want) {
		t.Errorf("new CPU = %v, want %v", o[0].NewCPU, want)
	}
	if o[0].OldPeakRSS != 12*mib || o[0].NewPeakRSS != 30*mib {
		t.Errorf("peak RSS old %d new %d, want 12 MiB and 30 MiB", o[0].OldPeakRSS, o[0].NewPeakRSS)
	}
	// Old 11 at 5000 is 420 ms (between 400 at 4800 and 450 at 5300), at
	// the end 450: 30 ms. New 12 at 5000: 15 ms, at 5300 (after its last
	// sample): 25 ms: 10 ms.
	if !near(o[1].OldCPU, 30*ms) || !near(o[1].NewCPU, 10*ms) {
		t.Errorf("second upgrade CPU old %v new %v, want 30ms and 10ms", o[1].OldCPU, o[1].NewCPU)
	}
	if o[1].OldPeakRSS != 27*mib || o[1].NewPeakRSS != 3*mib {
		t.Errorf("second upgrade peak RSS old %d new %d", o[1].OldPeakRSS, o[1].NewPeakRSS)
	}
	// A generation never sampled costs nothing rather than failing.
	empty := (&Run{Marks: []Mark{m}}).Overlaps()
	if len(empty) != 1 || empty[0].OldCPU != 0 || empty[0].NewPeakRSS != 0 {
		t.Errorf("no samples: %+v", empty)
	}
}

// syntheticRun is a made-up but plausible run: 12.07 s of 1000 req/s
// with three upgrades, a latency bump after each signal, a dip in
// throughput and a few failures at the second. It ends 70 ms into its last
// 100 ms bucket, which must not show as a dip. It is the same on every
// call.
func syntheticRun() *Run {
	rng := rand.New(rand.NewPCG(16, 7))
	ms := time.Millisecond
	r := &Run{Kind: "HTTP/1.1 keep-alive", Server: "examples/http <hitless>"}
	pids := []int{4101, 4188, 4262, 4339}
	for i, s := range []time.Duration{2500 * ms, 5500 * ms, 8500 * ms} {
		r.Marks = append(r.Marks, Mark{
			Signalled: at(s), Ready: at(s + 140*ms), OldExited: at(s + 900*ms),
			Old: pids[i], New: pids[i+1],
		})
	}
	gen := 0
	for i := range 12070 {
		start := at(time.Duration(i)*ms + time.Duration(rng.IntN(1000))*time.Microsecond)
		for gen < len(r.Marks) && start.After(r.Marks[gen].Ready.Add(20*ms)) {
			gen++
		}
		base := 300*time.Microsecond + time.Duration(rng.ExpFloat64()*120e3)
		for _, m := range r.Marks {
			if d := start.Sub(m.Signalled); d >= 0 && d < 250*ms {
				base += time.Duration(rng.ExpFloat64() * 1.2e6)
			}
		}
		q := Request{Start: start, Latency: base, PID: pids[gen]}
		if d := start.Sub(r.Marks[1].Signalled); d > 60*ms && d < 100*ms {
			if i%6 == 0 {
				continue // the dip: fewer requests sent
			}
			if i%9 == 0 {
				q.Failed, q.PID, q.Latency = true, 0, 2*ms
			}
		}
		r.Requests = append(r.Requests, q)
	}
	return r
}

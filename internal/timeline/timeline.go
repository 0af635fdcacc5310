package timeline

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/hitlessgo/hitless/internal/loadgen"
)

// Request is one request or message as the client saw it.
type Request struct {
	Start   time.Time
	Latency time.Duration // to the end of the response (or to the failure)
	Failed  bool
	PID     int // the process that served it; 0 if unknown
	// Reconnect is the part of Latency spent opening a new connection
	// (dial, TLS handshake, WebSocket upgrade) because the server had
	// ended the one the request would have used; 0 for a request sent on
	// an open connection, or when the client cannot tell.
	Reconnect time.Duration
}

// FromLoadgen converts internal/loadgen samples: a sample with a Class
// failed.
func FromLoadgen(s []loadgen.Sample) []Request {
	out := make([]Request, len(s))
	for i, x := range s {
		out[i] = Request{Start: x.Start, Latency: x.Latency, Failed: x.Class != "", PID: x.PID, Reconnect: x.Reconnect}
	}
	return out
}

// Mark is one upgrade, from internal/harness.Upgrade.
type Mark struct {
	Signalled, Ready, OldExited time.Time
	Old, New                    int // PIDs
}

// Run is one measured run of one traffic kind against one server.
type Run struct {
	Kind, Server string
	Requests     []Request
	Marks        []Mark
	Procs        []ProcSample
}

// DefaultWidth is the bucket width Buckets and WriteSVG use for a width
// that is zero or negative: the issue asks for 100 ms resolution or finer.
const DefaultWidth = 100 * time.Millisecond

// Bucket is what happened to the requests that started within one width
// of time (or, for the last bucket of a run, a little more or less: see
// Buckets).
type Bucket struct {
	// Start and End bound the time the bucket covers: End is Start plus
	// the width for every bucket but the last, whose End is the end of the
	// run (see Buckets).
	Start, End       time.Time
	Requests, Failed int
	// P50 and P99 are exact (nearest-rank) quantiles of the latency of the
	// requests in the bucket that succeeded; 0 when none did. Failures are
	// left out because their latency means something else: a refused
	// connection fails fast and would make the bucket look better.
	P50, P99 time.Duration
	ByPID    map[int]int // responses per serving PID
}

// Rate is the bucket's requests per second over the time it covers; 0 if
// it covers none.
func (b Bucket) Rate() float64 {
	d := b.End.Sub(b.Start)
	if d <= 0 {
		return 0
	}
	return float64(b.Requests) / d.Seconds()
}

// Buckets splits the run's requests by start time into buckets of the
// given width (DefaultWidth if width <= 0), from the first request's
// start to the last one's, with no gaps: a bucket in which nothing started
// is there, empty, so that a stall shows. A request with a zero Start
// (never sent) is left out: it would stretch the run back to year 1. A
// request is placed by its start rather than its end so that a slow
// request shows where it was sent — next to the upgrade that slowed it —
// matching NearSteady.
//
// The run ends part of the way through its last bucket, so that bucket
// covers less than a width, and its count of requests, read as a rate
// over the whole width, would show a dip that never happened. So the last
// bucket ends (End) where the run does, taken as one mean gap between
// starts after the last start — when the next request would have been
// sent; ending it at the last start itself would overstate its rate by a
// request — and Rate divides by the time covered. A last bucket that would
// cover less than half a width is folded into the one before, which then
// covers up to one and a half widths: a rate over a sliver of time is
// mostly noise. A run whose requests all started at one instant has no
// gap to measure; its one bucket covers the whole width.
func (r *Run) Buckets(width time.Duration) []Bucket {
	if width <= 0 {
		width = DefaultWidth
	}
	t0, t1, sent := r.span()
	if sent == 0 {
		return nil
	}
	n := int(t1.Sub(t0)/width) + 1
	end := t0.Add(time.Duration(n) * width)
	if t1.After(t0) {
		if e := t1.Add(t1.Sub(t0) / time.Duration(sent-1)); e.Before(end) {
			end = e
		}
	}
	if n > 1 && end.Sub(t0.Add(time.Duration(n-1)*width)) < width/2 {
		n--
	}
	out := make([]Bucket, n)
	lat := make([][]time.Duration, n)
	for i := range out {
		out[i].Start = t0.Add(time.Duration(i) * width)
		out[i].End = out[i].Start.Add(width)
	}
	out[n-1].End = end
	for _, q := range r.Requests {
		if q.Start.IsZero() {
			continue
		}
		i := min(int(q.Start.Sub(t0)/width), n-1)
		b := &out[i]
		b.Requests++
		if q.Failed {
			b.Failed++
		} else {
			lat[i] = append(lat[i], q.Latency)
		}
		if q.PID != 0 {
			if b.ByPID == nil {
				b.ByPID = make(map[int]int)
			}
			b.ByPID[q.PID]++
		}
	}
	for i := range out {
		slices.Sort(lat[i])
		out[i].P50 = quantile(lat[i], 0.50)
		out[i].P99 = quantile(lat[i], 0.99)
	}
	return out
}

// span is the first and last request start and the number of requests
// with a start, ignoring zero starts.
func (r *Run) span() (t0, t1 time.Time, sent int) {
	for _, q := range r.Requests {
		if q.Start.IsZero() {
			continue
		}
		sent++
		if sent == 1 {
			t0, t1 = q.Start, q.Start
		}
		if q.Start.Before(t0) {
			t0 = q.Start
		}
		if q.Start.After(t1) {
			t1 = q.Start
		}
	}
	return t0, t1, sent
}

// quantile is the nearest-rank q-quantile of sorted, 0 if it is empty. An
// exact quantile on a sorted slice is used rather than loadgen.Histogram
// because the histogram rounds up by as much as 6.25 %, which is a large
// part of the 1.2× margin NearSteady is compared against; a run holds a
// few tens of thousands of requests, so sorting them is cheap.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// NearSteady returns the p99 latency of the successful requests that
// started within ±window of any Mark.Signalled (near), the p99 of all the
// other successful requests (steady) and near/steady (0 when steady is 0).
func (r *Run) NearSteady(window time.Duration) (near, steady time.Duration, ratio float64) {
	var n, s []time.Duration
	for _, q := range r.Requests {
		if q.Failed {
			continue
		}
		if r.nearMark(q.Start, window) {
			n = append(n, q.Latency)
		} else {
			s = append(s, q.Latency)
		}
	}
	slices.Sort(n)
	slices.Sort(s)
	near, steady = quantile(n, 0.99), quantile(s, 0.99)
	if steady > 0 {
		ratio = float64(near) / float64(steady)
	}
	return near, steady, ratio
}

// NearSplit is what the successful requests near an upgrade (as in
// NearSteady) were made of: the ones that found their connection ended by
// the server and opened a new one (Request.Reconnect > 0), and the ones
// that did not. It tells a p99 that is high because clients had to
// reconnect — by design, when the old generation closes the idle
// connections it drains — from one that is high because the server was
// slow.
type NearSplit struct {
	Near        int // successful requests started within ±window of an upgrade
	Reconnected int // of those, the ones with a Reconnect

	// NearP99 is the p99 latency of all Near requests (NearSteady's near),
	// NoReconnectP99 that of the ones that did not reconnect; 0 when there
	// are none.
	NearP99, NoReconnectP99 time.Duration
	// ReconnectP50 and ReconnectP99 are quantiles of the Reconnect part
	// of the latency of the ones that did; 0 when none did.
	ReconnectP50, ReconnectP99 time.Duration
	// SteadyP99 is the p99 latency of all the other successful requests,
	// reconnected or not: NearSteady's steady.
	SteadyP99 time.Duration
}

// NearSplit returns the near requests of NearSteady(window) split by
// reconnection, with the same exact (nearest-rank) quantiles.
func (r *Run) NearSplit(window time.Duration) NearSplit {
	var near, noReconnect, reconnect, steady []time.Duration
	for _, q := range r.Requests {
		if q.Failed {
			continue
		}
		if !r.nearMark(q.Start, window) {
			steady = append(steady, q.Latency)
			continue
		}
		near = append(near, q.Latency)
		if q.Reconnect > 0 {
			reconnect = append(reconnect, q.Reconnect)
		} else {
			noReconnect = append(noReconnect, q.Latency)
		}
	}
	for _, s := range [][]time.Duration{near, noReconnect, reconnect, steady} {
		slices.Sort(s)
	}
	return NearSplit{
		Near:           len(near),
		Reconnected:    len(reconnect),
		NearP99:        quantile(near, 0.99),
		NoReconnectP99: quantile(noReconnect, 0.99),
		ReconnectP50:   quantile(reconnect, 0.50),
		ReconnectP99:   quantile(reconnect, 0.99),
		SteadyP99:      quantile(steady, 0.99),
	}
}

func (r *Run) nearMark(t time.Time, window time.Duration) bool {
	for _, m := range r.Marks {
		d := t.Sub(m.Signalled)
		if d >= -window && d <= window {
			return true
		}
	}
	return false
}

// Overlap is, for one upgrade, the CPU time used and the peak RSS of the
// old and the new generation from Signalled to OldExited.
type Overlap struct {
	Mark                   Mark
	OldCPU, NewCPU         time.Duration
	OldPeakRSS, NewPeakRSS int64
}

// Overlaps returns one Overlap per Mark, in the order of Marks, from
// r.Procs.
//
// The samples are taken every interval, so the CPU at Signalled and at
// OldExited is interpolated linearly between the samples either side. The
// new generation is taken to have used no CPU at Signalled unless it was
// sampled by then: it is started by the signal, and the sampler usually
// hears of it only at Ready, after its most expensive moment. A window
// whose OldExited was not seen ends at the old generation's last sample.
// Peak RSS is the largest sample within the window, or, if a generation
// was not sampled within it, its nearest sample; 0 if it was never
// sampled.
func (r *Run) Overlaps() []Overlap {
	by := make(map[int][]ProcSample)
	for _, p := range r.Procs {
		by[p.PID] = append(by[p.PID], p)
	}
	for _, s := range by {
		slices.SortStableFunc(s, func(a, b ProcSample) int { return a.At.Compare(b.At) })
	}
	out := make([]Overlap, 0, len(r.Marks))
	for _, m := range r.Marks {
		old, nw := by[m.Old], by[m.New]
		from, to := m.Signalled, m.OldExited
		if to.IsZero() {
			to = m.Ready
			if len(old) > 0 && old[len(old)-1].At.After(to) {
				to = old[len(old)-1].At
			}
		}
		o := Overlap{Mark: m}
		o.OldCPU = max(cpuAt(old, to, false)-cpuAt(old, from, false), 0)
		o.NewCPU = max(cpuAt(nw, to, true)-cpuAt(nw, from, true), 0)
		o.OldPeakRSS = peakRSS(old, from, to)
		o.NewPeakRSS = peakRSS(nw, from, to)
		out = append(out, o)
	}
	return out
}

// cpuAt interpolates the CPU time one process had used at t from its
// samples, sorted by time. Before the first sample it is the first sample's
// value, or 0 if born (the process did not exist before it was sampled);
// after the last, the last sample's value.
func cpuAt(s []ProcSample, t time.Time, born bool) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i, _ := slices.BinarySearchFunc(s, t, func(p ProcSample, t time.Time) int { return p.At.Compare(t) })
	switch {
	case i == 0:
		if born && s[0].At.After(t) {
			return 0
		}
		return s[0].CPU
	case i == len(s):
		return s[len(s)-1].CPU
	}
	a, b := s[i-1], s[i]
	span := b.At.Sub(a.At)
	if span <= 0 {
		return b.CPU
	}
	f := float64(t.Sub(a.At)) / float64(span)
	return a.CPU + time.Duration(f*float64(b.CPU-a.CPU))
}

// peakRSS is the largest RSS sampled within [from, to], or the RSS of the
// sample nearest that window when there is none inside it.
func peakRSS(s []ProcSample, from, to time.Time) int64 {
	var peak int64
	found := false
	for _, p := range s {
		if !p.At.Before(from) && !p.At.After(to) {
			peak = max(peak, p.RSS)
			found = true
		}
	}
	if found || len(s) == 0 {
		return peak
	}
	nearest := slices.MinFunc(s, func(a, b ProcSample) int {
		return cmp.Compare(distance(a.At, from, to), distance(b.At, from, to))
	})
	return nearest.RSS
}

// distance is how far t lies outside [from, to].
func distance(t, from, to time.Time) time.Duration {
	if t.Before(from) {
		return from.Sub(t)
	}
	return t.Sub(to)
}

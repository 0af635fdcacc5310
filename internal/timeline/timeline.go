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
// of time.
type Bucket struct {
	Start            time.Time
	Requests, Failed int
	// P50 and P99 are exact (nearest-rank) quantiles of the latency of the
	// requests in the bucket that succeeded; 0 when none did. Failures are
	// left out because their latency means something else: a refused
	// connection fails fast and would make the bucket look better.
	P50, P99 time.Duration
	ByPID    map[int]int // responses per serving PID
}

// Buckets splits the run's requests by start time into buckets of the
// given width (DefaultWidth if width <= 0), from the first request's
// start to the last one's, with no gaps: a bucket in which nothing started
// is there, empty, so that a stall shows. A request with a zero Start
// (never sent) is left out: it would stretch the run back to year 1. A request is placed by its start
// rather than its end so that a slow request shows where it was sent — next
// to the upgrade that slowed it — matching NearSteady.
func (r *Run) Buckets(width time.Duration) []Bucket {
	if width <= 0 {
		width = DefaultWidth
	}
	t0, t1, ok := r.span()
	if !ok {
		return nil
	}
	n := int(t1.Sub(t0)/width) + 1
	out := make([]Bucket, n)
	lat := make([][]time.Duration, n)
	for i := range out {
		out[i].Start = t0.Add(time.Duration(i) * width)
	}
	for _, q := range r.Requests {
		if q.Start.IsZero() {
			continue
		}
		i := int(q.Start.Sub(t0) / width)
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

// span is the first and last request start, ignoring zero starts; ok is
// false if there is none.
func (r *Run) span() (t0, t1 time.Time, ok bool) {
	for _, q := range r.Requests {
		if q.Start.IsZero() {
			continue
		}
		if !ok {
			t0, t1, ok = q.Start, q.Start, true
		}
		if q.Start.Before(t0) {
			t0 = q.Start
		}
		if q.Start.After(t1) {
			t1 = q.Start
		}
	}
	return t0, t1, ok
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

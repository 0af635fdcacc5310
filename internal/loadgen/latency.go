package loadgen

import (
	"fmt"
	"sync"
	"time"
)

// Near returns the latencies of the samples that started within window of
// any of the given moments (upgrades, typically).
func Near(samples []Sample, at []time.Time, window time.Duration) Histogram {
	var h Histogram
	for _, s := range samples {
		for _, t := range at {
			if d := s.Start.Sub(t); d > -window && d < window {
				h.Record(s.Latency)
				break
			}
		}
	}
	return h
}

// Recorder collects latencies from clients that are not this package's
// (WebSocket, HTTP/2, gRPC), for the same report. Safe for concurrent use;
// the zero value is ready.
type Recorder struct {
	mu      sync.Mutex
	samples []Sample
	all     Histogram
}

// Record adds one request or message that started at start and took d.
func (r *Recorder) Record(start time.Time, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, Sample{Start: start, Latency: d})
	r.all.Record(d)
}

// Summary reports p50, p99 and max overall and within window of the given
// moments.
func (r *Recorder) Summary(at []time.Time, window time.Duration) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	near := Near(r.samples, at, window)
	return fmt.Sprintf("latency p50 %v p99 %v max %v; within ±%v of an upgrade p50 %v p99 %v max %v",
		r.all.Quantile(0.5), r.all.Quantile(0.99), r.all.Max(), window,
		near.Quantile(0.5), near.Quantile(0.99), near.Max())
}

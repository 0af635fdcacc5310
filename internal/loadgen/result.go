package loadgen

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Result is what a run (or several, see [Merge]) came to. Requests ==
// OK + Failed() always holds.
type Result struct {
	// Kind is the traffic kind, or "mixed" for a merge of several kinds.
	Kind Kind
	// Requests is the number of requests started (and finished: Run waits
	// for every request it started).
	Requests int64
	// OK is the number of requests that got a complete 2xx response (and,
	// for Stream, every announced line).
	OK int64
	// Failures counts failed requests by class; every class is present.
	Failures map[Class]int64
	// Errors describes the first failures (at most 20), oldest first, each
	// with its time, class, worker and error text.
	Errors []string
	// PIDs counts responses (complete or not, any status) by their X-Pid
	// header; responses without one count under 0.
	PIDs map[int]int64
	// FirstSeen and LastSeen are when the first and the last response
	// header carrying each X-Pid arrived.
	FirstSeen, LastSeen map[int]time.Time
	// ClosedIdle counts kept-alive connections found closed by the server
	// before reuse and replaced (Config.ReuseCheck); not failures.
	ClosedIdle int64
	// Latency holds the duration of every request, failed ones included.
	Latency Histogram
	// Samples has one entry per request, ordered by start time, when
	// Config.Samples was set.
	Samples []Sample
	// Elapsed is the wall time of the run.
	Elapsed time.Duration
}

func newResult(k Kind) Result {
	r := Result{
		Kind:      k,
		Failures:  make(map[Class]int64, len(Classes)),
		PIDs:      make(map[int]int64),
		FirstSeen: make(map[int]time.Time),
		LastSeen:  make(map[int]time.Time),
	}
	for _, c := range Classes {
		r.Failures[c] = 0
	}
	return r
}

// Failed is the number of failed requests, over all classes.
func (r Result) Failed() int64 {
	var n int64
	for _, v := range r.Failures {
		n += v
	}
	return n
}

// Generations is the number of distinct server processes (non-zero X-Pid
// values) that answered.
func (r Result) Generations() int {
	n := 0
	for pid := range r.PIDs {
		if pid != 0 {
			n++
		}
	}
	return n
}

// String summarises r on one line, for logs and reports.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d requests", r.Kind, r.Requests)
	if r.Elapsed > 0 {
		fmt.Fprintf(&b, " in %s", fmtDur(r.Elapsed))
	}
	fmt.Fprintf(&b, ", %d failed (", r.Failed())
	for i, c := range Classes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", c, r.Failures[c])
	}
	fmt.Fprintf(&b, "), p50 %s p99 %s max %s, %d generations",
		fmtDur(r.Latency.Quantile(0.5)), fmtDur(r.Latency.Quantile(0.99)), fmtDur(r.Latency.Max()),
		r.Generations())
	if r.ClosedIdle > 0 {
		fmt.Fprintf(&b, ", %d idle connections found closed", r.ClosedIdle)
	}
	return b.String()
}

// fmtDur prints d with about three significant digits, in ms below 1 s.
func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case ms >= 100:
		return fmt.Sprintf("%.0fms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1fms", ms)
	default:
		return fmt.Sprintf("%.2fms", ms)
	}
}

// Merge adds up several results, for example those of concurrent runs of
// different kinds against one server. Kind is kept when all agree and is
// "mixed" otherwise; Elapsed is the longest; Errors keeps the oldest 20 (by
// time of day); Samples are merged in start order.
func Merge(rs ...Result) Result {
	var kind Kind
	for i, r := range rs {
		if i == 0 {
			kind = r.Kind
		} else if r.Kind != kind {
			kind = "mixed"
		}
	}
	m := newResult(kind)
	for _, r := range rs {
		m.Requests += r.Requests
		m.OK += r.OK
		m.ClosedIdle += r.ClosedIdle
		for c, n := range r.Failures {
			m.Failures[c] += n
		}
		m.Errors = append(m.Errors, r.Errors...)
		for pid, n := range r.PIDs {
			m.PIDs[pid] += n
		}
		for pid, t := range r.FirstSeen {
			if old, ok := m.FirstSeen[pid]; !ok || t.Before(old) {
				m.FirstSeen[pid] = t
			}
		}
		for pid, t := range r.LastSeen {
			if old, ok := m.LastSeen[pid]; !ok || t.After(old) {
				m.LastSeen[pid] = t
			}
		}
		m.Latency.Merge(&r.Latency)
		m.Samples = append(m.Samples, r.Samples...)
		m.Elapsed = max(m.Elapsed, r.Elapsed)
	}
	// Each line starts with a fixed-width time of day, so a string sort is
	// a time sort (within one day, which is all a test run spans).
	sort.Stable(sort.StringSlice(m.Errors))
	if len(m.Errors) > maxErrors {
		m.Errors = slices.Clip(m.Errors[:maxErrors])
	}
	slices.SortStableFunc(m.Samples, func(a, b Sample) int { return a.Start.Compare(b.Start) })
	if len(m.Samples) == 0 {
		m.Samples = nil
	}
	if len(m.Errors) == 0 {
		m.Errors = nil
	}
	return m
}

// SortedPIDs returns the X-Pid values seen, in the order they first
// answered, which for a run across upgrades is generation order.
func (r Result) SortedPIDs() []int {
	pids := slices.Collect(maps.Keys(r.FirstSeen))
	slices.SortFunc(pids, func(a, b int) int { return r.FirstSeen[a].Compare(r.FirstSeen[b]) })
	return pids
}

// clientPortRE finds the client's port in an error text of this package
// ("request 2 on connection from 127.0.0.1:41234: read: …").
var clientPortRE = regexp.MustCompile(`on connection from [^ ]*:(\d+): `)

// ClientPort returns the local port of the connection an error in
// Result.Errors happened on, so that a test can tell which server process
// held it.
func ClientPort(e string) (int, bool) {
	m := clientPortRE.FindStringSubmatch(e)
	if m == nil {
		return 0, false
	}
	p, err := strconv.Atoi(m[1])
	return p, err == nil
}

package outside

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The testdata/wrk_*.stdout files are what wrk 4.1.0 printed on this
// project's test machine: against examples/http (plain, latency, non2xx:
// GET /nope, timeout: GET /?sleep=2s with --timeout 1s) and against a
// misbehaving server (reset: every 50th request reset; stopped: the
// listener and all connections closed after 0.5 s; rstaccept: every
// connection reset on accept; refused: no server at all).

func TestParseWrk(t *testing.T) {
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	type counts struct {
		requests, connect, read, write, timeout, non2xx int64
		avg, max                                        time.Duration
		percentiles                                     int
		rps                                             float64
	}
	for _, tc := range []struct {
		file string
		want counts
	}{
		{"wrk_plain.stdout", counts{requests: 16727, avg: ms(21.91), max: ms(348.71), rps: 14543.21}},
		{"wrk_latency.stdout", counts{requests: 14246, avg: ms(2.19), max: ms(34.53), percentiles: 4, rps: 14214.09}},
		{"wrk_non2xx.stdout", counts{requests: 14780, non2xx: 14780, avg: ms(3.31), max: ms(101.21), rps: 14120.16}},
		{"wrk_timeout.stdout", counts{requests: 4, timeout: 4, percentiles: 4, rps: 1.33}},
		{"wrk_reset.stdout", counts{requests: 31611, read: 645, avg: ms(0.46993), max: ms(8.61), rps: 28720.69}},
		{"wrk_stopped.stdout", counts{requests: 1175, read: 8, write: 6178, avg: ms(1.33), max: ms(1.63), rps: 586.87}},
		{"wrk_rstaccept.stdout", counts{read: 7136, write: 9048}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r, err := ParseWrk(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got := counts{r.Requests, r.ConnectErrors, r.ReadErrors, r.WriteErrors, r.TimeoutErrors, r.Non2xx3xx,
				r.Latency.Avg, r.Latency.Max, len(r.Latency.Percentiles), r.RequestsPerSec}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if r.SocketErrors() != tc.want.connect+tc.want.read+tc.want.write+tc.want.timeout {
				t.Errorf("SocketErrors() = %d", r.SocketErrors())
			}
			t.Log(r)
		})
	}
	r, err := ParseWrk(readTestdata(t, "wrk_latency.stdout"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Percentile{{50, 845 * time.Microsecond}, {75, ms(2.38)}, {90, ms(5.13)}, {99, ms(19.28)}}
	if !slices.Equal(r.Latency.Percentiles, want) {
		t.Errorf("percentiles %v, want %v", r.Latency.Percentiles, want)
	}
	if r.Elapsed != time.Second || r.Latency.Stdev != ms(3.75) {
		t.Errorf("elapsed %v, stdev %v; want 1s, 3.75ms", r.Elapsed, r.Latency.Stdev)
	}
}

func TestParseWrkRejects(t *testing.T) {
	good := string(readTestdata(t, "wrk_reset.stdout"))
	replace := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	for _, tc := range []struct {
		name, out, why string
	}{
		{"empty (wrk_refused.stdout)", string(readTestdata(t, "wrk_refused.stdout")), "no Running line"},
		{"usage", "Usage: wrk <options> <url>\n  Options:\n", "no Running line"},
		{"cut before the summary", good[:strings.Index(good, "  31611")], "no requests line"},
		{"no Requests/sec", replace("Requests/sec:  28720.69\n", ""), "no Requests/sec line"},
		{"twice", good + good, "two Running lines"},
		{"malformed socket errors", replace("read 645,", "read 6x5,"), "malformed Socket errors line"},
		{"all-zero socket errors", replace("read 645,", "read 0,"), "all zero"},
		{"zero non-2xx", good + "  Non-2xx or 3xx responses: 0\n", "zero, which wrk does not print"},
		{"more non-2xx than requests", good + "  Non-2xx or 3xx responses: 31612\n", "non-2xx/3xx responses out of"},
		{"count overflow", replace("31611 requests", "99999999999999999999 requests"), "not a count"},
		{"latency without unit", replace("469.93us", "469.93"), "no unit"},
		{"negative latency", replace("469.93us", "-469.93us"), "not a duration"},
		{"percentiles out of order", strings.Replace(string(readTestdata(t, "wrk_latency.stdout")), "2.38ms", "0.38ms", 1), "out of order"},
		{"empty distribution", replace("  31611 requests", "  Latency Distribution\n  31611 requests"), "without rows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseWrk([]byte(tc.out))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %+v, %v; want a *ParseError", r, err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
			if pe.Tool != Wrk || !bytes.Equal(pe.Output, []byte(tc.out)) {
				t.Errorf("ParseError holds tool %q and %d bytes of output", pe.Tool, len(pe.Output))
			}
		})
	}
}

// wrkTime formats a duration of us microseconds as wrk 4's format_time_us
// does: two decimals, in us, ms or s, and in m or h beyond a minute. It
// returns the unit too, so that a check can allow for the rounding.
func wrkTime(us float64) (string, time.Duration) {
	switch {
	case us < 1000:
		return fmt.Sprintf("%.2fus", us), time.Microsecond
	case us < 1e6:
		return fmt.Sprintf("%.2fms", us/1e3), time.Millisecond
	case us < 60e6:
		return fmt.Sprintf("%.2fs", us/1e6), time.Second
	case us < 3600e6:
		return fmt.Sprintf("%.2fm", us/60e6), time.Minute
	}
	return fmt.Sprintf("%.2fh", us/3600e6), time.Hour
}

// wrkOutput is an independent rendering of wrk's summary, after the
// printf formats of wrk.c, for the fuzz oracle.
type wrkOutput struct {
	requests, connect, read, write, timeout, non2xx int64
	avgUS, stdevUS, maxUS                           float64
	percentilesUS                                   []float64 // 50, 75, 90, 99; nil: no --latency
	rps                                             float64
}

func (w wrkOutput) String() string {
	var b strings.Builder
	b.WriteString("Running 3s test @ http://127.0.0.1:8080/\n  2 threads and 64 connections\n")
	b.WriteString("  Thread Stats   Avg      Stdev     Max   +/- Stdev\n")
	avg, _ := wrkTime(w.avgUS)
	stdev, _ := wrkTime(w.stdevUS)
	max, _ := wrkTime(w.maxUS)
	fmt.Fprintf(&b, "    Latency   %8s  %8s  %8s  %7.2f%%\n", avg, stdev, max, 75.5)
	b.WriteString("    Req/Sec    13.45k     2.66k   18.65k    72.73%\n")
	if w.percentilesUS != nil {
		b.WriteString("  Latency Distribution\n")
		for i, p := range []int{50, 75, 90, 99} {
			s, _ := wrkTime(w.percentilesUS[i])
			fmt.Fprintf(&b, "  %3d%%  %8s\n", p, s)
		}
	}
	el, _ := wrkTime(3.01e6)
	fmt.Fprintf(&b, "  %d requests in %s, 4.61MB read\n", w.requests, el)
	if w.connect != 0 || w.read != 0 || w.write != 0 || w.timeout != 0 {
		fmt.Fprintf(&b, "  Socket errors: connect %d, read %d, write %d, timeout %d\n", w.connect, w.read, w.write, w.timeout)
	}
	if w.non2xx != 0 {
		fmt.Fprintf(&b, "  Non-2xx or 3xx responses: %d\n", w.non2xx)
	}
	fmt.Fprintf(&b, "Requests/sec: %9.2f\nTransfer/sec: %10sB\n", w.rps, "4.17M")
	return b.String()
}

// closeTo reports whether d is what a value of us microseconds printed
// with two decimals in unit reads back as.
func closeTo(d time.Duration, us float64, unit time.Duration) bool {
	return math.Abs(float64(d)-us*1e3) <= float64(unit)/200+1
}

// checkWrkConsistent checks what any output ParseWrk accepts must satisfy.
func checkWrkConsistent(t *testing.T, r WrkResult) {
	t.Helper()
	for _, n := range []int64{r.Requests, r.ConnectErrors, r.ReadErrors, r.WriteErrors, r.TimeoutErrors, r.Non2xx3xx} {
		if n < 0 {
			t.Fatalf("negative count in %+v", r)
		}
	}
	if r.Non2xx3xx > r.Requests || r.Elapsed < 0 || r.Latency.Avg < 0 || r.Latency.Max < 0 || r.Latency.Stdev < 0 || r.RequestsPerSec < 0 {
		t.Fatalf("inconsistent result %+v", r)
	}
	if !slices.IsSortedFunc(r.Latency.Percentiles, func(a, b Percentile) int { return cmp.Compare(a.Value, b.Value) }) {
		t.Fatalf("percentiles out of order: %v", r.Latency.Percentiles)
	}
}

func FuzzWrk(f *testing.F) {
	files, _ := filepath.Glob("testdata/wrk_*.stdout")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint32(1), uint32(0), uint32(0), uint32(0), uint32(0), uint32(0), uint32(384), uint32(3860), uint32(37530), false)
	}
	f.Add([]byte{}, uint32(29453), uint32(1), uint32(834), uint32(51278), uint32(4), uint32(29453), uint32(1e6), uint32(61e6), uint32(4e9), true)
	f.Fuzz(func(t *testing.T, data []byte, requests, connect, read, write, timeout, non2xx, avgUS, stdevUS, maxUS uint32, latency bool) {
		// Arbitrary bytes: no panic, and an accepted output is consistent.
		if r, err := ParseWrk(data); err == nil {
			checkWrkConsistent(t, r)
		} else if !errors.As(err, new(*ParseError)) {
			t.Fatalf("error %v is not a *ParseError", err)
		}

		// A rendered summary reads back as the counts it was made from.
		w := wrkOutput{
			requests: int64(requests), connect: int64(connect), read: int64(read), write: int64(write), timeout: int64(timeout),
			non2xx: int64(non2xx) % (int64(requests) + 1),
			avgUS:  float64(avgUS) / 100, stdevUS: float64(stdevUS) / 100, maxUS: float64(maxUS),
			rps: float64(requests) / 3.01,
		}
		if latency {
			step := float64(maxUS) / 4
			w.percentilesUS = []float64{step, 2 * step, 3 * step, 4 * step}
		}
		out := w.String()
		r, err := ParseWrk([]byte(out))
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if r.Requests != w.requests || r.ConnectErrors != w.connect || r.ReadErrors != w.read || r.WriteErrors != w.write ||
			r.TimeoutErrors != w.timeout || r.Non2xx3xx != w.non2xx {
			t.Fatalf("parsed %+v from\n%s", r, out)
		}
		for _, c := range []struct {
			got time.Duration
			us  float64
		}{{r.Latency.Avg, w.avgUS}, {r.Latency.Stdev, w.stdevUS}, {r.Latency.Max, w.maxUS}} {
			if _, unit := wrkTime(c.us); !closeTo(c.got, c.us, unit) {
				t.Fatalf("latency %v from %vus\n%s", c.got, c.us, out)
			}
		}
		if len(r.Latency.Percentiles) != len(w.percentilesUS) {
			t.Fatalf("%d percentiles, want %d\n%s", len(r.Latency.Percentiles), len(w.percentilesUS), out)
		}
		for i, p := range r.Latency.Percentiles {
			if _, unit := wrkTime(w.percentilesUS[i]); !closeTo(p.Value, w.percentilesUS[i], unit) || p.Percent != []float64{50, 75, 90, 99}[i] {
				t.Fatalf("percentile %v from %vus\n%s", p, w.percentilesUS[i], out)
			}
		}
		if math.Abs(r.RequestsPerSec-w.rps) > 0.005+1e-9*w.rps {
			t.Fatalf("rps %v, want %v", r.RequestsPerSec, w.rps)
		}
		checkWrkConsistent(t, r)
	})
}

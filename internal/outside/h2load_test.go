package outside

import (
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

// The testdata/h2load_* files are what h2load (nghttp2 1.52) printed, and
// logged with --log-file, on this project's test machine against
// examples/extra/web (h2c, tls: -c16 -m8 -D 2 --rps 20; 404: -n 400 of
// GET /nope; upgrade: --rps 40, SIGHUP to the server after 1 s;
// upgrade_full: the same without --rps, stdout only; count_upgrade: -n
// 100000 with a SIGHUP after 0.3 s), against a server that resets every
// connection 0.7 s after accepting it (drop), and against no server
// (refused).

func TestParseH2load(t *testing.T) {
	type counts struct {
		total, started, done, succeeded, failed, errored, timeout int64
		s2xx, s4xx                                                int64
		prf, lastPRF                                              int64
		protocol                                                  string
	}
	for _, tc := range []struct {
		file string
		want counts
	}{
		{"h2load_h2c.stdout", counts{640, 656, 640, 640, 0, 0, 0, 640, 0, 0, 0, "h2c"}},
		{"h2load_tls.stdout", counts{640, 640, 640, 640, 0, 0, 0, 640, 0, 0, 0, "h2"}},
		{"h2load_404.stdout", counts{400, 400, 400, 0, 400, 0, 0, 0, 400, 0, 0, "h2c"}},
		// The upgrade ended every client, and the summary shows none of it.
		{"h2load_upgrade.stdout", counts{656, 656, 656, 656, 0, 0, 0, 656, 0, 0, 0, "h2c"}},
		// 16 clients, 16 Process Request Failure lines; their last N (80)
		// counts 16 requests never sent, which the summary's failed (71,
		// all in the log as -1) no longer does.
		{"h2load_upgrade_full.stdout", counts{16495, 16495, 16495, 16424, 71, 71, 0, 16424, 0, 16, 80, "h2c"}},
		// Count mode: the requests the clients ended by the upgrade never
		// sent are failed and errored.
		{"h2load_count_upgrade.stdout", counts{100000, 3619, 3619, 3619, 96381, 96381, 0, 3619, 0, 8, 96381, "h2c"}},
		// 5 requests lost with their connections: only Started−Done shows them.
		{"h2load_drop.stdout", counts{459, 464, 459, 459, 0, 0, 0, 459, 0, 0, 0, "h2c"}},
		{"h2load_refused.stdout", counts{}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r, err := ParseH2load(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var last int64
			if n := len(r.ProcessRequestFailures); n > 0 {
				last = r.ProcessRequestFailures[n-1]
			}
			got := counts{r.Total, r.Started, r.Done, r.Succeeded, r.Failed, r.Errored, r.Timeout,
				r.Status2xx, r.Status4xx, int64(len(r.ProcessRequestFailures)), last, r.Protocol}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			t.Log(r)
		})
	}
	r, err := ParseH2load(readTestdata(t, "h2load_upgrade_full.stdout"))
	if err != nil {
		t.Fatal(err)
	}
	want := H2loadTimes{Min: 94 * time.Microsecond, Max: 25570 * time.Microsecond, Mean: 7820 * time.Microsecond, SD: 3840 * time.Microsecond}
	if r.RequestTime != want || r.Elapsed != 2*time.Second || r.RequestsPerSec != 8212 {
		t.Errorf("times %+v, elapsed %v, rate %v; want %+v, 2s, 8212", r.RequestTime, r.Elapsed, r.RequestsPerSec, want)
	}
}

// TestH2loadLogMatchesSummary checks, on the captured runs that have a
// log, what RunH2load relies on and the package documentation says: a log
// line per request done, and in duration mode a summary whose failures are
// the log's.
func TestH2loadLogMatchesSummary(t *testing.T) {
	for _, tc := range []struct {
		name              string
		failed, notDone   int
		first             H2loadLogEntry
		durationMode      bool
		statusesSeenInLog []int
	}{
		{"h2load_h2c", 0, 16, H2loadLogEntry{time.UnixMicro(1796123335140274), 200, 2584 * time.Microsecond}, true, []int{200}},
		{"h2load_tls", 0, 0, H2loadLogEntry{}, true, []int{200}},
		{"h2load_404", 400, 0, H2loadLogEntry{}, false, []int{404}},
		{"h2load_upgrade", 0, 0, H2loadLogEntry{}, true, []int{200}},
		{"h2load_count_upgrade", 0, 0, H2loadLogEntry{time.UnixMicro(1796123347368844), 200, 3772 * time.Microsecond}, false, []int{200}},
		{"h2load_drop", 0, 5, H2loadLogEntry{}, true, []int{200}},
		{"h2load_refused", 0, 0, H2loadLogEntry{}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseH2load(readTestdata(t, tc.name+".stdout"))
			if err != nil {
				t.Fatal(err)
			}
			if r.Log, err = ParseH2loadLog(readTestdata(t, tc.name+".log")); err != nil {
				t.Fatal(err)
			}
			if int64(len(r.Log)) != r.Done || r.LogFailed() != tc.failed || r.NotDone() != int64(tc.notDone) {
				t.Errorf("%d log entries, %d failed, %d not done; want %d, %d, %d", len(r.Log), r.LogFailed(), r.NotDone(), r.Done, tc.failed, tc.notDone)
			}
			if tc.durationMode && (r.Total != r.Done || r.Failed != int64(r.LogFailed()+r.LogUnsent())) {
				t.Errorf("duration mode: total %d, done %d, failed %d, failed in the log %d, never sent %d", r.Total, r.Done, r.Failed, r.LogFailed(), r.LogUnsent())
			}
			if tc.first != (H2loadLogEntry{}) && r.Log[0] != tc.first {
				t.Errorf("first entry %+v, want %+v", r.Log[0], tc.first)
			}
			var statuses []int
			for _, e := range r.Log {
				if !slices.Contains(statuses, e.Status) {
					statuses = append(statuses, e.Status)
				}
			}
			if !slices.Equal(statuses, tc.statusesSeenInLog) {
				t.Errorf("statuses %v, want %v", statuses, tc.statusesSeenInLog)
			}
		})
	}
}

func TestParseH2loadRejects(t *testing.T) {
	good := string(readTestdata(t, "h2load_upgrade_full.stdout"))
	replace := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	for _, tc := range []struct {
		name, out, why string
	}{
		{"empty", "", "no finished in line"},
		{"cut before the summary", good[:strings.Index(good, "\nfinished in")], "no finished in line"},
		{"no status codes", replace("status codes: 16424 2xx, 0 3xx, 0 4xx, 0 5xx\n", ""), "no status codes line"},
		{"no time for request", good[:strings.Index(good, "time for request")], "no time for request line"},
		{"twice", good + good, "two"},
		{"succeeded+failed is not total", replace("71 failed", "70 failed"), "is not the 16495 total"},
		{"more succeeded than total", replace("16424 succeeded", "16496 succeeded"), "is not the"},
		{"more errored than failed", replace("71 errored", "72 errored"), "errored but only"},
		{"malformed requests", replace("0 timeout", "timeout"), "malformed requests line"},
		{"malformed Process Request Failure", replace("Process Request Failure:13", "Process Request Failure: 13"), "malformed Process Request Failure"},
		{"count overflow", replace("16495 total", "18446744073709551615 total"), "not a count"},
		{"duration without unit", replace("finished in 2.00s", "finished in 2.00"), "no unit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseH2load([]byte(tc.out))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("got %+v, %v; want a *ParseError", r, err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
		})
	}
}

func TestParseH2loadLogRejects(t *testing.T) {
	for _, tc := range []struct {
		name, log, why string
	}{
		{"cut short", "1796123335140274\t200\t2584\n1796123335140238\t200\t35", "cut short"},
		{"two columns", "1796123335140274\t200\n", "3 tab-separated columns"},
		{"spaces", "1796123335140274 200 2584\n", "3 tab-separated columns"},
		{"blank line", "1796123335140274\t200\t2584\n\n", "3 tab-separated columns"},
		{"status -2", "1796123335140274\t-2\t2584\n", "not a count"},
		{"status 1000", "1796123335140274\t1000\t2584\n", "status 1000"},
		{"negative start", "-1\t200\t2584\n", "not a count"},
		{"duration overflow", "1\t200\t9223372036854776\n", "does not fit"},
		{"CRLF", "1796123335140274\t200\t2584\r\n", "not a count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseH2loadLog([]byte(tc.log))
			if !errors.As(err, new(*ParseError)) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("got %v, %v; want a *ParseError saying %q", e, err, tc.why)
			}
		})
	}
	// Columns after the third are h2load's to add.
	e, err := ParseH2loadLog([]byte("1796123335140274\t-1\t2584\tmore\n"))
	if err != nil || len(e) != 1 || e[0].Status != -1 || !e[0].Failed() || !e[0].Sent() {
		t.Fatalf("got %+v, %v", e, err)
	}
	// A request refused before it was written has start time 0.
	r := H2loadResult{}
	if r.Log, err = ParseH2loadLog([]byte("0\t-1\t10799133344\n1796123335140274\t-1\t2584\n1796123335140275\t200\t2584\n")); err != nil {
		t.Fatal(err)
	}
	if r.Log[0].Sent() || r.LogUnsent() != 1 || r.LogFailed() != 1 {
		t.Errorf("%+v: Sent() %v, %d unsent, %d sent and failed; want false, 1, 1", r.Log, r.Log[0].Sent(), r.LogUnsent(), r.LogFailed())
	}
	for status, failed := range map[int]bool{-1: true, 0: true, 199: true, 200: false, 299: false, 300: true, 404: true, 503: true} {
		if (H2loadLogEntry{Status: status}).Failed() != failed {
			t.Errorf("status %d: Failed() = %v", status, !failed)
		}
	}
}

// h2loadOutput is an independent rendering of h2load's summary, after the
// stream output in h2load.cc's main(), for the fuzz oracle.
type h2loadOutput struct {
	total, started, done, succeeded, errored, timeout int64
	status                                            [4]int64
	prf                                               []int64
	elapsedMS                                         int64
	minUS, maxUS                                      int64
}

func (h h2loadOutput) failed() int64 { return h.total - h.succeeded }

// h2Time renders us microseconds as h2load's util::format_duration does:
// whole microseconds below a millisecond, two decimals above.
func h2Time(us int64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dus", us)
	case us < 1000000:
		return fmt.Sprintf("%.2fms", float64(us)/1e3)
	}
	return fmt.Sprintf("%.2fs", float64(us)/1e6)
}

func (h h2loadOutput) String() string {
	var b strings.Builder
	b.WriteString("starting benchmark...\nspawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.\n")
	b.WriteString("Warm-up started for thread #0.\nWarm-up phase is over for thread #0.\nMain benchmark duration is started for thread #0.\n")
	b.WriteString("Application protocol: h2c\n")
	for _, n := range h.prf {
		fmt.Fprintf(&b, "Process Request Failure:%d\n", n)
	}
	b.WriteString("Main benchmark duration is over for thread #0. Stopping all clients.\nStopped all clients for thread #0\n\n")
	fmt.Fprintf(&b, "finished in %s, %.2f req/s, 714.89KB/s\n", h2Time(h.elapsedMS*1000), float64(h.succeeded)/2)
	fmt.Fprintf(&b, "requests: %d total, %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout\n",
		h.total, h.started, h.done, h.succeeded, h.failed(), h.errored, h.timeout)
	fmt.Fprintf(&b, "status codes: %d 2xx, %d 3xx, %d 4xx, %d 5xx\n", h.status[0], h.status[1], h.status[2], h.status[3])
	b.WriteString("traffic: 1.40MB (1464094) total, 150.24KB (153845) headers (space savings 95.19%), 743.36KB (761200) data\n")
	b.WriteString("                     min         max         mean         sd        +/- sd\n")
	fmt.Fprintf(&b, "time for request: %10s  %10s  %10s  %10s    %.2f%%\n", h2Time(h.minUS), h2Time(h.maxUS), h2Time((h.minUS+h.maxUS)/2), h2Time(h.maxUS/4), 73.09)
	b.WriteString("time for connect:      153us       561us       359us       133us    56.25%\n")
	return b.String()
}

func checkH2loadConsistent(t *testing.T, r H2loadResult) {
	t.Helper()
	for _, n := range []int64{r.Total, r.Started, r.Done, r.Succeeded, r.Failed, r.Errored, r.Timeout, r.Status2xx, r.Status3xx, r.Status4xx, r.Status5xx} {
		if n < 0 {
			t.Fatalf("negative count in %+v", r)
		}
	}
	if r.Succeeded+r.Failed != r.Total || r.Errored > r.Failed || r.Elapsed < 0 || r.RequestsPerSec < 0 {
		t.Fatalf("inconsistent result %+v", r)
	}
	for _, n := range r.ProcessRequestFailures {
		if n < 0 {
			t.Fatalf("negative Process Request Failure %d", n)
		}
	}
}

func FuzzH2load(f *testing.F) {
	files, _ := filepath.Glob("testdata/h2load_*.stdout")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint32(640), uint32(656), uint32(640), uint32(640), uint32(0), uint32(0), uint8(0), uint32(2000), uint32(89))
	}
	f.Add([]byte("requests: 1 total"), uint32(16495), uint32(16495), uint32(16495), uint32(16424), uint32(71), uint32(3), uint8(16), uint32(57), uint32(27560))
	f.Fuzz(func(t *testing.T, data []byte, total, started, done, succeeded, errored, timeout uint32, prfLines uint8, elapsedMS, latencyUS uint32) {
		if r, err := ParseH2load(data); err == nil {
			checkH2loadConsistent(t, r)
		} else if !errors.As(err, new(*ParseError)) {
			t.Fatalf("error %v is not a *ParseError", err)
		}

		h := h2loadOutput{
			total: int64(total), started: int64(started), done: int64(done), timeout: int64(timeout),
			elapsedMS: int64(elapsedMS%3600000) + 1, minUS: int64(latencyUS % 5000), maxUS: int64(latencyUS),
		}
		h.succeeded = int64(succeeded) % (h.total + 1)
		h.errored = int64(errored) % (h.failed() + 1)
		h.status = [4]int64{h.succeeded, 0, h.failed() - h.errored, 0}
		for i := range int64(prfLines) {
			h.prf = append(h.prf, 9*i+2)
		}
		out := h.String()
		r, err := ParseH2load([]byte(out))
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		want := [...]int64{h.total, h.started, h.done, h.succeeded, h.failed(), h.errored, h.timeout, h.status[0], h.status[1], h.status[2], h.status[3]}
		got := [...]int64{r.Total, r.Started, r.Done, r.Succeeded, r.Failed, r.Errored, r.Timeout, r.Status2xx, r.Status3xx, r.Status4xx, r.Status5xx}
		if got != want || !slices.Equal(r.ProcessRequestFailures, h.prf) || r.Protocol != "h2c" {
			t.Fatalf("parsed %+v from\n%s", r, out)
		}
		// Two decimals of ms or s, or whole µs.
		near := func(got time.Duration, us int64) bool {
			return math.Abs(float64(got)-float64(us)*1e3) <= float64(time.Duration(us)*time.Microsecond)/200+5e3
		}
		if !near(r.RequestTime.Min, h.minUS) || !near(r.RequestTime.Max, h.maxUS) || !near(r.Elapsed, h.elapsedMS*1000) {
			t.Fatalf("times %+v, elapsed %v\n%s", r.RequestTime, r.Elapsed, out)
		}
		checkH2loadConsistent(t, r)

		// Counts h2load cannot print are refused.
		bad := strings.Replace(out, fmt.Sprintf(" %d failed,", h.failed()), fmt.Sprintf(" %d failed,", h.failed()+1), 1)
		if _, err := ParseH2load([]byte(bad)); err == nil {
			t.Fatalf("accepted succeeded+failed ≠ total:\n%s", bad)
		}
	})
}

func FuzzH2loadLog(f *testing.F) {
	files, _ := filepath.Glob("testdata/h2load_*.log")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > 4096 {
			b = b[:4096]
		}
		f.Add(b, []byte{200, 0, 255, 17})
	}
	f.Add([]byte("1\t-1\t2\n"), []byte{})
	f.Fuzz(func(t *testing.T, data, statuses []byte) {
		if e, err := ParseH2loadLog(data); err == nil {
			if len(e) != strings.Count(string(data), "\n") {
				t.Fatalf("%d entries from %d lines", len(e), strings.Count(string(data), "\n"))
			}
			for _, x := range e {
				if x.Status < -1 || x.Status > 999 || x.Duration < 0 {
					t.Fatalf("entry %+v", x)
				}
			}
		} else if !errors.As(err, new(*ParseError)) {
			t.Fatalf("error %v is not a *ParseError", err)
		}

		// A log rendered from entries reads back as those entries; its
		// failures are the sent ones whose status is -1 or not 2xx, and
		// its unsent ones those with start time 0.
		var b strings.Builder
		var want []H2loadLogEntry
		failed, unsent := 0, 0
		for i, s := range statuses {
			status := []int{-1, 200, 204, 301, 404, 503, 0}[int(s)%7]
			start := int64(1796123335140274) + int64(i)*int64(s)
			if status == -1 && s%2 == 0 {
				start = 0 // never sent
			}
			us := int64(s) * 1000
			fmt.Fprintf(&b, "%d\t%d\t%d\n", start, status, us)
			want = append(want, H2loadLogEntry{time.UnixMicro(start), status, time.Duration(us) * time.Microsecond})
			switch {
			case start == 0:
				unsent++
			case status == -1 || status/100 != 2:
				failed++
			}
		}
		got, err := ParseH2loadLog([]byte(b.String()))
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("got %+v, %v\nwant %+v", got, err, want)
		}
		if r := (H2loadResult{Log: got}); r.LogFailed() != failed || r.LogUnsent() != unsent {
			t.Fatalf("LogFailed() = %d, LogUnsent() = %d; want %d, %d", r.LogFailed(), r.LogUnsent(), failed, unsent)
		}
	})
}

package outside

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The testdata/ab_*.stdout files are what ab 2.3 (Apache 2.4) printed on
// this project's test machine: against examples/http (keepalive: -k -t 1;
// newconn: -n 2000; non2xx: GET /nope), against no server (refused), and
// against a misbehaving server (reset_*: every 50th request reset, with
// -k, without, and without -r, which makes ab exit; stopped: the listener
// and all connections closed after 0.5 s; rstaccept: every connection
// reset on accept; aborted: the same, when ab gave up after 10 failed
// connects).

func TestParseAB(t *testing.T) {
	type counts struct {
		complete, failed, connect, receive, length, exceptions, write, non2xx, keepAlive int64
		elapsed, mean, longest                                                           time.Duration
		rps                                                                              float64
	}
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	for _, tc := range []struct {
		file string
		want counts
	}{
		{"ab_keepalive.stdout", counts{complete: 28347, keepAlive: 28347, elapsed: time.Second, mean: ms(0.282), longest: ms(9), rps: 28346.29}},
		{"ab_newconn.stdout", counts{complete: 2000, elapsed: ms(225), mean: ms(0.899), longest: ms(8), rps: 8902.06}},
		{"ab_non2xx.stdout", counts{complete: 3000, non2xx: 3000, keepAlive: 3000, elapsed: ms(108), mean: ms(0.287), longest: ms(6), rps: 27852.31}},
		{"ab_refused.stdout", counts{complete: 3000, failed: 4500, receive: 3000, exceptions: 1500, elapsed: ms(69), mean: ms(0.185), longest: ms(1), rps: 43329.43}},
		{"ab_reset_keepalive.stdout", counts{complete: 3000, failed: 180, receive: 60, length: 60, exceptions: 60, keepAlive: 2940, elapsed: ms(54), mean: ms(0.145), longest: ms(2), rps: 55072.14}},
		{"ab_reset_newconn.stdout", counts{complete: 3000, failed: 180, receive: 60, length: 60, exceptions: 60, elapsed: ms(359), mean: ms(0.957), longest: ms(6), rps: 8355.41}},
		{"ab_rstaccept.stdout", counts{complete: 500, failed: 861, receive: 499, exceptions: 362, write: 1, elapsed: ms(59), mean: ms(0.473), longest: ms(1), rps: 8463.39}},
		{"ab_stopped.stdout", counts{complete: 13726, failed: 31851, receive: 12614, length: 12622, exceptions: 6615, keepAlive: 1104, elapsed: ms(2001), mean: ms(1.166), longest: ms(17), rps: 6860.38}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r, err := ParseAB(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var longest time.Duration
			if n := len(r.Percentiles); n != 9 || r.Percentiles[n-1].Percent != 100 {
				t.Errorf("percentiles %v, want 9 rows up to 100%%", r.Percentiles)
			} else {
				longest = r.Percentiles[n-1].Value
			}
			got := counts{r.Complete, r.Failed, r.FailedConnect, r.FailedReceive, r.FailedLength, r.FailedExceptions,
				r.WriteErrors, r.Non2xx, r.KeepAlive, r.Elapsed, r.MeanPerRequest, longest, r.RequestsPerSec}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			t.Log(r)
		})
	}
}

func TestParseABRejects(t *testing.T) {
	good := string(readTestdata(t, "ab_reset_keepalive.stdout"))
	replace := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	for _, tc := range []struct {
		name, out, why string
	}{
		{"aborted after 10 failures", string(readTestdata(t, "ab_aborted.stdout")), `no "Time taken for tests" line`},
		{"exited at a receive error (no -r)", string(readTestdata(t, "ab_reset_without_r.stdout")), `no "Time taken for tests" line`},
		{"empty", "", "no"},
		{"no Failed requests", replace("Failed requests:        180\n", ""), `no "Failed requests" line`},
		{"no breakdown", replace("   (Connect: 0, Receive: 60, Length: 60, Exceptions: 60)\n", ""), "and a breakdown: false"},
		{"breakdown without failures", replace("Failed requests:        180", "Failed requests:        0"), "0 failed requests, and a breakdown: true"},
		{"breakdown larger than Failed", replace("Exceptions: 60)", "Exceptions: 61)"), "adds up to more"},
		{"breakdown overflowing", replace("Length: 60,", "Length: 9223372036854775807,"), "adds up to more"},
		{"malformed breakdown", replace("Receive: 60,", "Receive: sixty,"), "malformed breakdown"},
		{"malformed count", replace("Complete requests:      3000", "Complete requests:      3000.0"), "not a count"},
		{"zero write errors", replace("Keep-Alive", "Write errors:           0\nKeep-Alive"), "zero, which ab does not print"},
		{"zero non-2xx", replace("Keep-Alive", "Non-2xx responses:      0\nKeep-Alive"), "zero, which ab does not print"},
		{"twice", good + good, "two"},
		{"malformed rate", replace("[#/sec] (mean)", "[#/sec]"), "malformed"},
		{"malformed time per request", replace("0.145 [ms] (mean)", "0.145 ms (mean)"), "malformed"},
		{"percentiles out of order", replace(" 99%      1", " 99%      0\n 99%      1"), "out of order"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseAB([]byte(tc.out))
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

// abOutput is an independent rendering of ab's summary, after the printf
// formats of ab.c's output_results, for the fuzz oracle.
type abOutput struct {
	complete, connect, receive, length, exceptions, extraFailed int64
	write, non2xx, keepAlive                                    int64
	keepAliveLine                                               bool
	elapsedMS                                                   int64
	percentilesMS                                               []int64 // 50 66 75 80 90 95 98 99 100
}

func (a abOutput) failed() int64 {
	return a.connect + a.receive + a.length + a.exceptions + a.extraFailed
}

func (a abOutput) rps() float64 { return float64(a.complete) / (float64(a.elapsedMS) / 1000) }

func (a abOutput) String() string {
	var b strings.Builder
	b.WriteString("This is ApacheBench, Version 2.3 <$Revision: 1903618 $>\n")
	b.WriteString("Copyright 1996 Adam Twiss, Zeus Technology Ltd, http://www.zeustech.net/\n")
	b.WriteString("Licensed to The Apache Software Foundation, http://www.apache.org/\n\n")
	b.WriteString("Benchmarking 127.0.0.1 (be patient).....done\n\n\n")
	b.WriteString("Server Software:        \nServer Hostname:        127.0.0.1\nServer Port:            8080\n\n")
	b.WriteString("Document Path:          /\nDocument Length:        17 bytes\n\n")
	fmt.Fprintf(&b, "Concurrency Level:      %d\n", 32)
	fmt.Fprintf(&b, "Time taken for tests:   %.3f seconds\n", float64(a.elapsedMS)/1000)
	fmt.Fprintf(&b, "Complete requests:      %d\n", a.complete)
	fmt.Fprintf(&b, "Failed requests:        %d\n", a.failed())
	if a.failed() != 0 {
		fmt.Fprintf(&b, "   (Connect: %d, Receive: %d, Length: %d, Exceptions: %d)\n", a.connect, a.receive, a.length, a.exceptions)
	}
	if a.write != 0 {
		fmt.Fprintf(&b, "Write errors:           %d\n", a.write)
	}
	if a.non2xx != 0 {
		fmt.Fprintf(&b, "Non-2xx responses:      %d\n", a.non2xx)
	}
	if a.keepAliveLine {
		fmt.Fprintf(&b, "Keep-Alive requests:    %d\n", a.keepAlive)
	}
	fmt.Fprintf(&b, "Total transferred:      %d bytes\nHTML transferred:       %d bytes\n", a.complete*160, a.complete*17)
	fmt.Fprintf(&b, "Requests per second:    %.2f [#/sec] (mean)\n", a.rps())
	fmt.Fprintf(&b, "Time per request:       %.3f [ms] (mean)\n", 1.5)
	fmt.Fprintf(&b, "Time per request:       %.3f [ms] (mean, across all concurrent requests)\n", 0.047)
	fmt.Fprintf(&b, "Transfer rate:          %.2f [Kbytes/sec] received\n\n", 3869.17)
	b.WriteString("Connection Times (ms)\n              min  mean[+/-sd] median   max\n")
	b.WriteString("Connect:        0    0   0.0      0       5\nTotal:          0    0   0.8      0      12\n\n")
	if a.percentilesMS != nil {
		b.WriteString("Percentage of the requests served within a certain time (ms)\n")
		for i, p := range []int{50, 66, 75, 80, 90, 95, 98, 99} {
			fmt.Fprintf(&b, " %3d%%  %5d\n", p, a.percentilesMS[i])
		}
		fmt.Fprintf(&b, " 100%%  %5d (longest request)\n", a.percentilesMS[8])
	}
	return b.String()
}

func checkABConsistent(t *testing.T, r ABResult) {
	t.Helper()
	for _, n := range []int64{r.Complete, r.Failed, r.FailedConnect, r.FailedReceive, r.FailedLength, r.FailedExceptions, r.WriteErrors, r.Non2xx, r.KeepAlive} {
		if n < 0 {
			t.Fatalf("negative count in %+v", r)
		}
	}
	if r.FailedConnect+r.FailedReceive+r.FailedLength+r.FailedExceptions > r.Failed || r.Elapsed < 0 || r.MeanPerRequest < 0 || r.RequestsPerSec < 0 {
		t.Fatalf("inconsistent result %+v", r)
	}
	for i := 1; i < len(r.Percentiles); i++ {
		if r.Percentiles[i].Percent <= r.Percentiles[i-1].Percent || r.Percentiles[i].Value < r.Percentiles[i-1].Value {
			t.Fatalf("percentiles out of order: %v", r.Percentiles)
		}
	}
}

func FuzzAB(f *testing.F) {
	files, _ := filepath.Glob("testdata/ab_*.stdout")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint32(1), uint32(0), uint32(0), uint32(0), uint32(0), uint16(0), uint32(0), uint32(0), uint32(1000), true)
	}
	f.Add([]byte{}, uint32(13726), uint32(3), uint32(12614), uint32(12622), uint32(6615), uint16(2), uint32(5), uint32(7), uint32(2001), false)
	f.Fuzz(func(t *testing.T, data []byte, complete, connect, receive, length, exceptions uint32, extra uint16, write, non2xx, elapsedMS uint32, keepAlive bool) {
		if r, err := ParseAB(data); err == nil {
			checkABConsistent(t, r)
		} else if !errors.As(err, new(*ParseError)) {
			t.Fatalf("error %v is not a *ParseError", err)
		}

		a := abOutput{
			complete: int64(complete), connect: int64(connect), receive: int64(receive), length: int64(length),
			exceptions: int64(exceptions), extraFailed: int64(extra), write: int64(write), non2xx: int64(non2xx),
			keepAliveLine: keepAlive, keepAlive: int64(complete) / 2, elapsedMS: int64(elapsedMS%100000) + 1,
		}
		if complete%3 != 0 {
			step := int64(elapsedMS % 1000)
			a.percentilesMS = []int64{0, step, step, 2 * step, 3 * step, 3 * step, 4 * step, 5 * step, 9 * step}
		}
		out := a.String()
		r, s, err := parseAB([]byte(out))
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		want := [...]int64{a.complete, a.failed(), a.connect, a.receive, a.length, a.exceptions, a.write, a.non2xx}
		got := [...]int64{r.Complete, r.Failed, r.FailedConnect, r.FailedReceive, r.FailedLength, r.FailedExceptions, r.WriteErrors, r.Non2xx}
		if got != want || s["Keep-Alive requests"] != keepAlive || keepAlive && r.KeepAlive != a.keepAlive {
			t.Fatalf("parsed %+v from\n%s", r, out)
		}
		if r.Elapsed != time.Duration(a.elapsedMS)*time.Millisecond || r.MeanPerRequest != 1500*time.Microsecond {
			t.Fatalf("elapsed %v, mean %v\n%s", r.Elapsed, r.MeanPerRequest, out)
		}
		if math.Abs(r.RequestsPerSec-a.rps()) > 0.005+1e-9*a.rps() {
			t.Fatalf("rps %v, want %v", r.RequestsPerSec, a.rps())
		}
		if len(r.Percentiles) != len(a.percentilesMS) {
			t.Fatalf("%d percentiles, want %d\n%s", len(r.Percentiles), len(a.percentilesMS), out)
		}
		for i, p := range r.Percentiles {
			if p.Value != time.Duration(a.percentilesMS[i])*time.Millisecond {
				t.Fatalf("percentile %v, want %dms", p, a.percentilesMS[i])
			}
		}
		checkABConsistent(t, r)
	})
}

package outside

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ABConfig is one run of ApacheBench: Concurrency clients, each sending
// HTTP/1.0 GET requests one after another, on a new connection each unless
// KeepAlive. Zero fields leave ab's own defaults.
//
// Every run passes -q (no progress lines) and -r: without -r, ab exits at
// the first error receiving a response and prints no summary, and we want
// that error counted, with everything else.
type ABConfig struct {
	// URL is the one URL every request asks for; it needs a path ("/").
	// Required.
	URL string
	// Concurrency is -c; zero means ab's default, 1.
	Concurrency int
	// Requests is -n, the number of requests. Zero means ab's default: 1,
	// or with Duration, no limit but time.
	Requests int
	// Duration is -t, in whole seconds: stop after that long. ab alone
	// would also stop after 50000 requests; without Requests, Args passes
	// a request limit no run reaches (a million a second), so that only
	// time counts.
	Duration time.Duration
	// KeepAlive is -k: reuse connections (HTTP/1.0 keep-alive).
	KeepAlive bool
	// Timeout is -s, in whole seconds: how long ab waits for a socket to
	// become ready before it gives up the whole run (and prints no
	// summary). Zero means ab's default, 30 s.
	Timeout time.Duration
	// VariableLength is -l: do not count a response whose body length
	// differs from the first response's as failed. That also hides a
	// connection closed without an answer (see the package
	// documentation).
	VariableLength bool
}

// abPerSecond is the -n that RunAB passes, per second of Duration, when
// there is no Requests: far more than ab reaches (it does tens of
// thousands a second on loopback), and no more, because ab allocates its
// table of per-request timings (32 bytes each) for all of them up front.
const abPerSecond = 1_000_000

// Args returns ab's command line (without the program name), or an error
// if c cannot be expressed in ab's flags.
func (c ABConfig) Args() ([]string, error) {
	if err := checkURL(c.URL, "http", "https"); err != nil {
		return nil, err
	}
	if p, _ := url.Parse(c.URL); p.Path == "" {
		return nil, fmt.Errorf("outside: ab URL %q has no path (ab refuses it): add \"/\"", c.URL)
	}
	if c.Concurrency < 0 || c.Requests < 0 || c.Requests > math.MaxInt32 {
		return nil, fmt.Errorf("outside: ab: concurrency %d, requests %d: want non-negative ints", c.Concurrency, c.Requests)
	}
	args := []string{"-q", "-r"}
	if c.KeepAlive {
		args = append(args, "-k")
	}
	if c.VariableLength {
		args = append(args, "-l")
	}
	if c.Concurrency > 0 {
		args = append(args, "-c", strconv.Itoa(c.Concurrency))
	}
	if c.Timeout != 0 {
		s, err := wholeSeconds("ab -s", c.Timeout)
		if err != nil {
			return nil, err
		}
		args = append(args, "-s", s)
	}
	// -t must come before -n: ab's -t sets the request limit to 50000,
	// and only a later -n overrides that.
	if c.Duration != 0 {
		s, err := wholeSeconds("ab -t", c.Duration)
		if err != nil {
			return nil, err
		}
		args = append(args, "-t", s)
	}
	if n := c.limit(); n > 0 {
		args = append(args, "-n", strconv.Itoa(n))
	}
	return append(args, c.URL), nil
}

// limit is the -n to pass, or 0 for none.
func (c ABConfig) limit() int {
	if c.Requests > 0 || c.Duration <= 0 {
		return c.Requests
	}
	return int(min(int64(c.Duration/time.Second)*abPerSecond, math.MaxInt32))
}

// ABResult is what ab printed at the end of a run.
type ABResult struct {
	// Complete is "Complete requests": requests ab finished, failed or
	// not, and whatever their status.
	Complete int64
	// Failed is "Failed requests": a count of failure events, not of
	// requests (one reset connection can count as a Receive, a Length
	// and an Exceptions failure at once), so it can exceed Complete.
	Failed int64
	// The breakdown of Failed that ab prints when it is not zero.
	FailedConnect, FailedReceive, FailedLength, FailedExceptions int64
	// WriteErrors is "Write errors": requests ab could not send (omitted
	// when zero).
	WriteErrors int64
	// Non2xx is "Non-2xx responses": responses whose status does not
	// begin with 2, 3xx included (omitted when zero).
	Non2xx int64
	// KeepAlive is "Keep-Alive requests": responses on a connection the
	// server kept open (printed with -k only).
	KeepAlive int64
	// Elapsed is "Time taken for tests".
	Elapsed time.Duration
	// RequestsPerSec is "Requests per second".
	RequestsPerSec float64
	// MeanPerRequest is the first "Time per request": the mean time a
	// client waited for a response.
	MeanPerRequest time.Duration
	// Percentiles is the "Percentage of the requests served within a
	// certain time" table (whole milliseconds); its last row, 100 %, is
	// the longest request.
	Percentiles []Percentile
	// Output is ab's whole standard output.
	Output string
}

// String summarises r on one line, for logs.
func (r ABResult) String() string {
	s := fmt.Sprintf("%d complete in %v (%.0f/s), %d keep-alive; failed %d (connect %d, receive %d, length %d, exceptions %d); write errors %d; non-2xx %d; mean %v",
		r.Complete, r.Elapsed, r.RequestsPerSec, r.KeepAlive, r.Failed, r.FailedConnect, r.FailedReceive, r.FailedLength, r.FailedExceptions,
		r.WriteErrors, r.Non2xx, r.MeanPerRequest)
	for _, p := range r.Percentiles {
		if p.Percent == 50 || p.Percent == 99 || p.Percent == 100 {
			s += fmt.Sprintf(", p%g %v", p.Percent, p.Value)
		}
	}
	return s
}

// RunAB runs ab as c says, bounded by ctx, and parses its output. It fails
// if ab is missing (the error wraps [exec.ErrNotFound]), exits non-zero
// (as it does after more than 10 failed connects, or when a socket stays
// silent for c.Timeout), or prints something [ParseAB] cannot read, or no
// "Keep-Alive requests" line although c.KeepAlive asked for keep-alive (a
// [*ParseError]).
func RunAB(ctx context.Context, c ABConfig) (ABResult, error) {
	args, err := c.Args()
	if err != nil {
		return ABResult{}, err
	}
	out, _, err := run(ctx, AB, args)
	if err != nil {
		return ABResult{}, err
	}
	r, s, err := parseAB(out)
	if err != nil {
		return r, err
	}
	if c.KeepAlive && !s["Keep-Alive requests"] {
		return r, parseErr(AB, out, "-k was given but there is no Keep-Alive requests line")
	}
	if c.Requests == 0 && c.Duration > 0 && r.Complete >= int64(c.limit()) {
		return r, fmt.Errorf("outside: ab reached the request limit RunAB set (%d) before its time limit (%v): raise abPerSecond", c.limit(), c.Duration)
	}
	return r, nil
}

var (
	abSeconds    = regexp.MustCompile(`^(\S+) seconds$`)
	abRPS        = regexp.MustCompile(`^(\S+) \[#/sec\] \(mean\)$`)
	abPerRequest = regexp.MustCompile(`^(\S+) \[ms\] \((mean|mean, across all concurrent requests)\)$`)
	abBreakdown  = regexp.MustCompile(`^\(Connect: ([0-9]+), Receive: ([0-9]+), Length: ([0-9]+), Exceptions: ([0-9]+)\)$`)
	abPercentile = regexp.MustCompile(`^([0-9]+)%\s+([0-9]+)( \(longest request\))?$`)
)

// abCounts are the labelled lines whose value is a count, and where it
// goes.
var abCounts = map[string]func(*ABResult) *int64{
	"Complete requests":   func(r *ABResult) *int64 { return &r.Complete },
	"Failed requests":     func(r *ABResult) *int64 { return &r.Failed },
	"Write errors":        func(r *ABResult) *int64 { return &r.WriteErrors },
	"Non-2xx responses":   func(r *ABResult) *int64 { return &r.Non2xx },
	"Keep-Alive requests": func(r *ABResult) *int64 { return &r.KeepAlive },
}

const abTable = "Percentage of the requests served within a certain time (ms)"

// ParseAB parses the standard output of ab 2.3. The "Time taken for
// tests", "Complete requests", "Failed requests" and "Requests per second"
// lines are required, and so is the breakdown of failures when Failed is
// not zero (and forbidden when it is); "Write errors" and "Non-2xx
// responses", which ab prints only when they are not zero, are errors if
// present with a zero; so is a breakdown that adds up to more than Failed,
// a line that appears twice or one that starts like a known line but does
// not read as one. Errors are [*ParseError]s.
func ParseAB(out []byte) (ABResult, error) {
	r, _, err := parseAB(out)
	return r, err
}

func parseAB(out []byte) (ABResult, seen, error) {
	r := ABResult{Output: string(out)}
	fail := func(format string, args ...any) (ABResult, seen, error) {
		return ABResult{}, nil, parseErr(AB, out, format, args...)
	}
	s := seen{}
	inTable := false
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if inTable {
			if m := abPercentile.FindStringSubmatch(line); m != nil {
				p, err1 := parseCount(m[1])
				ms, err2 := parseCount(m[2])
				if err := errors.Join(err1, err2); err != nil {
					return fail("percentile row %q: %v", line, err)
				}
				d, err := mulDuration(ms, time.Millisecond)
				if err != nil {
					return fail("percentile row %q: %v", line, err)
				}
				if n := len(r.Percentiles); n > 0 && (float64(p) <= r.Percentiles[n-1].Percent || d < r.Percentiles[n-1].Value) {
					return fail("percentile row %q is out of order", line)
				}
				r.Percentiles = append(r.Percentiles, Percentile{float64(p), d})
				continue
			}
			inTable = false
		}
		if line == abTable {
			if !s.once(line) {
				return fail("two percentile tables")
			}
			inTable = true
			continue
		}
		if strings.HasPrefix(line, "(Connect:") {
			m := abBreakdown.FindStringSubmatch(line)
			if m == nil {
				return fail("malformed breakdown of failures %q", line)
			}
			if !s.once("breakdown") {
				return fail("two breakdowns of failures")
			}
			var errs [4]error
			r.FailedConnect, errs[0] = parseCount(m[1])
			r.FailedReceive, errs[1] = parseCount(m[2])
			r.FailedLength, errs[2] = parseCount(m[3])
			r.FailedExceptions, errs[3] = parseCount(m[4])
			if err := errors.Join(errs[:]...); err != nil {
				return fail("breakdown of failures %q: %v", line, err)
			}
			continue
		}
		label, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		var err error
		switch label {
		case "Time taken for tests":
			if !s.once(label) {
				return fail("two %q lines", label)
			}
			m := abSeconds.FindStringSubmatch(value)
			if m == nil {
				return fail("malformed %q line %q", label, line)
			}
			var v float64
			if v, err = parseDecimal(m[1]); err == nil {
				r.Elapsed, err = scale(v, time.Second)
			}
		case "Requests per second":
			if !s.once(label) {
				return fail("two %q lines", label)
			}
			m := abRPS.FindStringSubmatch(value)
			if m == nil {
				return fail("malformed %q line %q", label, line)
			}
			r.RequestsPerSec, err = parseDecimal(m[1])
		case "Time per request":
			m := abPerRequest.FindStringSubmatch(value)
			if m == nil {
				return fail("malformed %q line %q", label, line)
			}
			if !s.once(label + m[2]) {
				return fail("two %q (%s) lines", label, m[2])
			}
			if m[2] == "mean" {
				var v float64
				if v, err = parseDecimal(m[1]); err == nil {
					r.MeanPerRequest, err = scale(v, time.Millisecond)
				}
			}
		default:
			field, ok := abCounts[label]
			if !ok {
				continue
			}
			if !s.once(label) {
				return fail("two %q lines", label)
			}
			p := field(&r)
			*p, err = parseCount(value)
			if err == nil && *p == 0 && (label == "Write errors" || label == "Non-2xx responses") {
				err = errors.New("zero, which ab does not print")
			}
		}
		if err != nil {
			return fail("%q line %q: %v", label, line, err)
		}
	}
	if l := s.missing("Time taken for tests", "Complete requests", "Failed requests", "Requests per second"); l != "" {
		return fail("no %q line", l)
	}
	if s["breakdown"] != (r.Failed > 0) {
		return fail("%d failed requests, and a breakdown: %v", r.Failed, s["breakdown"])
	}
	// Every failure ab breaks down also counts in Failed; Failed can be
	// larger (a response header ab cannot read counts there and as a
	// non-2xx response).
	var sum int64
	for _, n := range []int64{r.FailedConnect, r.FailedReceive, r.FailedLength, r.FailedExceptions} {
		if n > r.Failed-sum { // sum+n > Failed, without overflowing
			return fail("the breakdown of failures adds up to more than the %d failed", r.Failed)
		}
		sum += n
	}
	if s[abTable] && len(r.Percentiles) == 0 {
		return fail("a percentile table without rows")
	}
	return r, s, nil
}

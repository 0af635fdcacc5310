package outside

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// WrkConfig is one run of wrk: HTTP/1.1 over keep-alive connections,
// Connections of them shared among Threads, each sending its next request
// as soon as the previous response is complete. Zero fields leave wrk's
// own defaults.
type WrkConfig struct {
	// URL is the one URL every request asks for; required.
	URL string
	// Threads is -t; zero means wrk's default, 2.
	Threads int
	// Connections is -c, at least Threads; zero means wrk's default, 10.
	Connections int
	// Duration is -d, in whole seconds; zero means wrk's default, 10 s.
	Duration time.Duration
	// Timeout is --timeout, in whole seconds: a request without a
	// response after that long counts as a timeout error. Zero means
	// wrk's default, 2 s.
	Timeout time.Duration
	// Latency is --latency: print, and parse, the latency percentiles.
	Latency bool
	// Headers are extra request header lines ("Name: value"), each sent
	// with -H.
	Headers []string
}

// Args returns wrk's command line (without the program name), or an error
// if c cannot be expressed in wrk's flags.
func (c WrkConfig) Args() ([]string, error) {
	if err := checkURL(c.URL, "http", "https"); err != nil {
		return nil, err
	}
	if c.Threads < 0 || c.Connections < 0 || c.Threads > 0 && c.Connections > 0 && c.Connections < c.Threads {
		return nil, fmt.Errorf("outside: wrk: %d connections, %d threads: want connections ≥ threads ≥ 0", c.Connections, c.Threads)
	}
	var args []string
	if c.Threads > 0 {
		args = append(args, "-t", strconv.Itoa(c.Threads))
	}
	if c.Connections > 0 {
		args = append(args, "-c", strconv.Itoa(c.Connections))
	}
	if c.Duration != 0 {
		s, err := wholeSeconds("wrk -d", c.Duration)
		if err != nil {
			return nil, err
		}
		args = append(args, "-d", s+"s")
	}
	if c.Timeout != 0 {
		s, err := wholeSeconds("wrk --timeout", c.Timeout)
		if err != nil {
			return nil, err
		}
		args = append(args, "--timeout", s+"s")
	}
	if c.Latency {
		args = append(args, "--latency")
	}
	for _, h := range c.Headers {
		args = append(args, "-H", h)
	}
	return append(args, c.URL), nil
}

// WrkResult is what wrk printed at the end of a run.
type WrkResult struct {
	// Requests is the number of complete responses, whatever their
	// status ("N requests in …").
	Requests int64
	// Elapsed is how long the run took, as wrk measured it.
	Elapsed time.Duration
	// RequestsPerSec is wrk's "Requests/sec".
	RequestsPerSec float64
	// The socket errors, by kind ("Socket errors: connect …, read …,
	// write …, timeout …"; wrk omits the line when all are zero). See the
	// package documentation for what each counts.
	ConnectErrors, ReadErrors, WriteErrors, TimeoutErrors int64
	// Non2xx3xx is the number of responses with a status of 400 or more
	// ("Non-2xx or 3xx responses"; omitted when zero).
	Non2xx3xx int64
	// Latency is the thread-stats latency row.
	Latency WrkLatency
	// Output is wrk's whole standard output.
	Output string
}

// WrkLatency is wrk's latency summary, over the responses it received.
type WrkLatency struct {
	Avg, Stdev, Max time.Duration
	// Percentiles holds the "Latency Distribution" rows (50, 75, 90,
	// 99 %) when the run had --latency, else nil.
	Percentiles []Percentile
}

// SocketErrors returns the sum of the four kinds of socket errors.
func (r WrkResult) SocketErrors() int64 {
	return r.ConnectErrors + r.ReadErrors + r.WriteErrors + r.TimeoutErrors
}

// String summarises r on one line, for logs.
func (r WrkResult) String() string {
	s := fmt.Sprintf("%d requests in %v (%.0f/s); socket errors: connect %d, read %d, write %d, timeout %d; non-2xx/3xx %d; latency avg %v, stdev %v, max %v",
		r.Requests, r.Elapsed, r.RequestsPerSec, r.ConnectErrors, r.ReadErrors, r.WriteErrors, r.TimeoutErrors, r.Non2xx3xx,
		r.Latency.Avg, r.Latency.Stdev, r.Latency.Max)
	for _, p := range r.Latency.Percentiles {
		s += fmt.Sprintf(", p%g %v", p.Percent, p.Value)
	}
	return s
}

// RunWrk runs wrk as c says, bounded by ctx, and parses its output. It
// fails if wrk is missing (the error wraps [exec.ErrNotFound]), exits
// non-zero (as it does when its first connection is refused), or prints
// something [ParseWrk] cannot read, or no percentiles although c.Latency
// asked for them (a [*ParseError]).
func RunWrk(ctx context.Context, c WrkConfig) (WrkResult, error) {
	args, err := c.Args()
	if err != nil {
		return WrkResult{}, err
	}
	out, _, err := run(ctx, Wrk, args)
	if err != nil {
		return WrkResult{}, err
	}
	r, err := ParseWrk(out)
	if err != nil {
		return r, err
	}
	if c.Latency && r.Latency.Percentiles == nil {
		return r, parseErr(Wrk, out, "--latency was given but there is no latency distribution")
	}
	return r, nil
}

var (
	wrkRunning    = regexp.MustCompile(`^Running (\S+) test @ (\S+)$`)
	wrkLatency    = regexp.MustCompile(`^Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$`)
	wrkPercentile = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)%\s+(\S+)$`)
	wrkRequests   = regexp.MustCompile(`^([0-9]+) requests in (\S+), (\S+) read$`)
	wrkSocket     = regexp.MustCompile(`^Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)$`)
	wrkNon2xx     = regexp.MustCompile(`^Non-2xx or 3xx responses: ([0-9]+)$`)
	wrkRPS        = regexp.MustCompile(`^Requests/sec:\s+(\S+)$`)
)

// ParseWrk parses wrk 4's standard output. The "Running", latency,
// requests and "Requests/sec" lines are required; the socket-errors and
// non-2xx lines, which wrk prints only when their counts are not all zero,
// are optional, and an error if present with zeros. A line that starts like
// one of these but does not read as it should, a line that appears twice,
// more non-2xx responses than responses, or percentiles that are not in
// increasing order are errors too. Errors are [*ParseError]s.
func ParseWrk(out []byte) (WrkResult, error) {
	r := WrkResult{Output: string(out)}
	fail := func(format string, args ...any) (WrkResult, error) {
		return WrkResult{}, parseErr(Wrk, out, format, args...)
	}
	s := seen{}
	inDistribution := false
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if inDistribution {
			if m := wrkPercentile.FindStringSubmatch(line); m != nil {
				p, err1 := parseDecimal(m[1])
				d, err2 := parseUnitDuration(m[2])
				if err := errors.Join(err1, err2); err != nil {
					return fail("latency distribution row %q: %v", line, err)
				}
				if n := len(r.Latency.Percentiles); n > 0 && (p <= r.Latency.Percentiles[n-1].Percent || d < r.Latency.Percentiles[n-1].Value) {
					return fail("latency distribution row %q is out of order", line)
				}
				r.Latency.Percentiles = append(r.Latency.Percentiles, Percentile{p, d})
				continue
			}
			inDistribution = false
		}
		var m []string
		label := ""
		switch {
		case strings.HasPrefix(line, "Running "):
			label, m = "Running", wrkRunning.FindStringSubmatch(line)
		case line == "Latency Distribution":
			if !s.once(line) {
				return fail("two latency distributions")
			}
			inDistribution = true
			continue
		case strings.HasPrefix(line, "Latency "):
			label, m = "Latency", wrkLatency.FindStringSubmatch(line)
		case strings.Contains(line, " requests in "):
			label, m = "requests", wrkRequests.FindStringSubmatch(line)
		case strings.HasPrefix(line, "Socket errors:"):
			label, m = "Socket errors", wrkSocket.FindStringSubmatch(line)
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			label, m = "Non-2xx", wrkNon2xx.FindStringSubmatch(line)
		case strings.HasPrefix(line, "Requests/sec:"):
			label, m = "Requests/sec", wrkRPS.FindStringSubmatch(line)
		default:
			continue
		}
		if m == nil {
			return fail("malformed %s line %q", label, line)
		}
		if !s.once(label) {
			return fail("two %s lines", label)
		}
		var err error
		switch label {
		case "Latency":
			var errs [3]error
			r.Latency.Avg, errs[0] = parseUnitDuration(m[1])
			r.Latency.Stdev, errs[1] = parseUnitDuration(m[2])
			r.Latency.Max, errs[2] = parseUnitDuration(m[3])
			err = errors.Join(errs[:]...)
		case "requests":
			var errs [2]error
			r.Requests, errs[0] = parseCount(m[1])
			r.Elapsed, errs[1] = parseUnitDuration(m[2])
			err = errors.Join(errs[:]...)
		case "Socket errors":
			var errs [4]error
			r.ConnectErrors, errs[0] = parseCount(m[1])
			r.ReadErrors, errs[1] = parseCount(m[2])
			r.WriteErrors, errs[2] = parseCount(m[3])
			r.TimeoutErrors, errs[3] = parseCount(m[4])
			if err = errors.Join(errs[:]...); err == nil && r.ConnectErrors == 0 && r.ReadErrors == 0 && r.WriteErrors == 0 && r.TimeoutErrors == 0 {
				err = errors.New("all zero, which wrk does not print")
			}
		case "Non-2xx":
			if r.Non2xx3xx, err = parseCount(m[1]); err == nil && r.Non2xx3xx == 0 {
				err = errors.New("zero, which wrk does not print")
			}
		case "Requests/sec":
			r.RequestsPerSec, err = parseDecimal(m[1])
		}
		if err != nil {
			return fail("%s line %q: %v", label, line, err)
		}
	}
	if l := s.missing("Running", "Latency", "requests", "Requests/sec"); l != "" {
		return fail("no %s line", l)
	}
	if s["Latency Distribution"] && len(r.Latency.Percentiles) == 0 {
		return fail("a latency distribution without rows")
	}
	// wrk counts a response with a status of 400 or more both as a
	// request and as a non-2xx/3xx one.
	if r.Non2xx3xx > r.Requests {
		return fail("%d non-2xx/3xx responses out of %d", r.Non2xx3xx, r.Requests)
	}
	return r, nil
}

// checkURL checks that u is an absolute URL with one of schemes and a host.
func checkURL(u string, schemes ...string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("outside: URL %q: %w", u, err)
	}
	for _, s := range schemes {
		if p.Scheme == s && p.Host != "" {
			return nil
		}
	}
	return fmt.Errorf("outside: URL %q: want %s://host[:port]/…", u, strings.Join(schemes, " or "))
}

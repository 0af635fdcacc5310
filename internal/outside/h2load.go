package outside

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// H2loadConfig is one run of h2load: Clients connections, each with up to
// Streams requests in flight, for Duration or until Requests are done.
// An http:// URL speaks HTTP/2 without TLS, with prior knowledge (h2c); an
// https:// URL speaks HTTP/2 over TLS, negotiated with ALPN, and h2load
// does not verify the server's certificate. Zero fields leave h2load's own
// defaults.
type H2loadConfig struct {
	// URL is the one URL every request asks for; required.
	URL string
	// Clients is -c; zero means h2load's default, 1.
	Clients int
	// Streams is -m, the concurrent streams per client; zero means
	// h2load's default, 1.
	Streams int
	// Threads is -t; zero means h2load's default, 1.
	Threads int
	// Duration is -D: run for this long (in whole milliseconds),
	// whatever Requests says. Zero means a count-based run.
	Duration time.Duration
	// Requests is -n, the number of requests of a count-based run; zero
	// means h2load's default, 1. Ignored with Duration.
	Requests int
	// WarmUp is --warm-up-time (whole milliseconds), with Duration only:
	// requests in it are neither counted nor logged.
	WarmUp time.Duration
	// InactivityTimeout is -N (whole milliseconds): h2load gives up a
	// connection silent for that long, counting its requests in flight
	// as timed out. Zero means never.
	InactivityTimeout time.Duration
	// LogFile is the --log-file RunH2load passes and parses. RunH2load
	// empties it first (h2load appends). Empty means a temporary file,
	// removed after the run.
	LogFile string
}

// Args returns h2load's command line (without the program name), or an
// error if c cannot be expressed in h2load's flags. It passes c.LogFile
// as is (RunH2load fills in a temporary one).
func (c H2loadConfig) Args() ([]string, error) {
	if err := checkURL(c.URL, "http", "https"); err != nil {
		return nil, err
	}
	if c.Clients < 0 || c.Streams < 0 || c.Threads < 0 || c.Requests < 0 {
		return nil, fmt.Errorf("outside: h2load: clients %d, streams %d, threads %d, requests %d: want non-negative", c.Clients, c.Streams, c.Threads, c.Requests)
	}
	ms := func(flag string, d time.Duration) (string, error) {
		if d <= 0 || d%time.Millisecond != 0 {
			return "", fmt.Errorf("outside: h2load %s %v: want a positive whole number of milliseconds", flag, d)
		}
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms", nil
	}
	var args []string
	for _, f := range []struct {
		flag string
		n    int
	}{{"-c", c.Clients}, {"-m", c.Streams}, {"-t", c.Threads}} {
		if f.n > 0 {
			args = append(args, f.flag, strconv.Itoa(f.n))
		}
	}
	for _, f := range []struct {
		flag string
		d    time.Duration
	}{{"-D", c.Duration}, {"--warm-up-time", c.WarmUp}, {"-N", c.InactivityTimeout}} {
		if f.d == 0 {
			continue
		}
		s, err := ms(f.flag, f.d)
		if err != nil {
			return nil, err
		}
		args = append(args, f.flag, s)
	}
	if c.WarmUp != 0 && c.Duration == 0 {
		return nil, errors.New("outside: h2load --warm-up-time needs a Duration (-D)")
	}
	if c.Duration == 0 && c.Requests > 0 {
		args = append(args, "-n", strconv.Itoa(c.Requests))
	}
	if c.LogFile != "" {
		args = append(args, "--log-file="+c.LogFile)
	}
	return append(args, c.URL), nil
}

// H2loadResult is what h2load printed at the end of a run, and its
// per-request log.
type H2loadResult struct {
	// The "requests:" line. See the package documentation for what
	// h2load counts in each; note that Succeeded+Failed == Total always
	// holds, because h2load computes Failed so at the end.
	Total, Started, Done, Succeeded, Failed, Errored, Timeout int64
	// The "status codes:" line: responses by status class, counted when
	// their header arrived, whether or not the stream then completed.
	Status2xx, Status3xx, Status4xx, Status5xx int64
	// Elapsed is "finished in".
	Elapsed time.Duration
	// RequestsPerSec is h2load's req/s: completed streams per second.
	RequestsPerSec float64
	// Protocol is "Application protocol" (h2c, h2, http/1.1), or "" when
	// h2load never connected.
	Protocol string
	// RequestTime is the "time for request" row, over the requests that
	// completed.
	RequestTime H2loadTimes
	// ProcessRequestFailures holds N of every "Process Request Failure:N"
	// line, in order. h2load prints one each time a client could not
	// submit its next request, which after the server's GOAWAY is every
	// time; N is that thread's running count of failed requests at that
	// moment, including ones the client never sent.
	ProcessRequestFailures []int64
	// Log is the per-request log (--log-file), one entry per request
	// counted in Done.
	Log []H2loadLogEntry
	// Output is h2load's whole standard output.
	Output string
}

// H2loadTimes is one row of h2load's timing table.
type H2loadTimes struct {
	Min, Max, Mean, SD time.Duration
}

// H2loadLogEntry is one line of h2load's --log-file: a request h2load
// counted as done.
type H2loadLogEntry struct {
	// Start is when h2load handed the request's HEADERS frame to nghttp2
	// to send (it prints microseconds since the epoch); the epoch itself
	// for a request it never sent (see [H2loadLogEntry.Sent]).
	Start time.Time
	// Status is the response's HTTP status, or -1 for a stream that ended
	// with an error: reset by the server, refused because it was above
	// the last stream ID of the server's GOAWAY, or never sent.
	Status int
	// Duration is how long the request took, to the end of its stream;
	// meaningless for a request never sent.
	Duration time.Duration
}

// Sent reports whether h2load sent the request. One it submitted but
// nghttp2 then refused to send, because the server's GOAWAY had arrived
// while its HEADERS frame waited in the queue, is logged with status -1
// and a start time of 0: h2load records the start just before the frame
// is written.
func (e H2loadLogEntry) Sent() bool { return e.Start.UnixMicro() != 0 }

// Failed reports whether the request failed: its stream ended with an
// error, or its status was not 2xx. This is stricter than h2load, which
// counts 3xx as success.
func (e H2loadLogEntry) Failed() bool { return e.Status < 200 || e.Status > 299 }

// LogFailed returns how many requests of r.Log h2load sent and saw fail
// (see [H2loadLogEntry.Sent] and [H2loadLogEntry.Failed]).
func (r H2loadResult) LogFailed() int {
	n := 0
	for _, e := range r.Log {
		if e.Sent() && e.Failed() {
			n++
		}
	}
	return n
}

// LogUnsent returns how many requests of r.Log h2load never sent (see
// [H2loadLogEntry.Sent]). h2load counts them as failed and errored.
func (r H2loadResult) LogUnsent() int {
	n := 0
	for _, e := range r.Log {
		if !e.Sent() {
			n++
		}
	}
	return n
}

// NotDone returns Started−Done: requests h2load submitted but never
// counted as done and never logged. They are the requests in flight when a
// Duration ended, and also, indistinguishably, requests lost with a
// connection that ended under them, which h2load counts nowhere else (see
// the package documentation).
func (r H2loadResult) NotDone() int64 { return r.Started - r.Done }

// String summarises r on one line, for logs.
func (r H2loadResult) String() string {
	unsent := r.LogUnsent()
	return fmt.Sprintf("requests: %d total, %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout; status %d 2xx, %d 3xx, %d 4xx, %d 5xx; log: %d sent, %d of them failed, %d never sent; %d Process Request Failure lines; %.0f req/s, mean %v, max %v",
		r.Total, r.Started, r.Done, r.Succeeded, r.Failed, r.Errored, r.Timeout, r.Status2xx, r.Status3xx, r.Status4xx, r.Status5xx,
		len(r.Log)-unsent, r.LogFailed(), unsent, len(r.ProcessRequestFailures), r.RequestsPerSec, r.RequestTime.Mean, r.RequestTime.Max)
}

// RunH2load runs h2load as c says, bounded by ctx, and parses its output
// and its log. It fails if h2load is missing (the error wraps
// [exec.ErrNotFound]), exits non-zero, prints something [ParseH2load]
// cannot read, writes a log [ParseH2loadLog] cannot read, or a log whose
// number of entries is not the Done of its summary (a [*ParseError]).
func RunH2load(ctx context.Context, c H2loadConfig) (H2loadResult, error) {
	if c.LogFile == "" {
		f, err := os.CreateTemp("", "h2load-*.log")
		if err != nil {
			return H2loadResult{}, fmt.Errorf("outside: h2load log: %w", err)
		}
		f.Close()
		defer os.Remove(f.Name())
		c.LogFile = f.Name()
	} else if err := os.WriteFile(c.LogFile, nil, 0o600); err != nil {
		return H2loadResult{}, fmt.Errorf("outside: emptying h2load's log: %w", err)
	}
	args, err := c.Args()
	if err != nil {
		return H2loadResult{}, err
	}
	out, _, err := run(ctx, H2load, args)
	if err != nil {
		return H2loadResult{}, err
	}
	r, err := ParseH2load(out)
	if err != nil {
		return r, err
	}
	b, err := os.ReadFile(c.LogFile)
	if err != nil {
		return r, fmt.Errorf("outside: h2load log: %w", err)
	}
	if r.Log, err = ParseH2loadLog(b); err != nil {
		return r, err
	}
	// h2load writes a log line exactly where it counts a request done.
	if int64(len(r.Log)) != r.Done {
		return r, parseErr(H2load, out, "%d requests done but %d lines in the log %s", r.Done, len(r.Log), c.LogFile)
	}
	return r, nil
}

var (
	h2Finished = regexp.MustCompile(`^finished in (\S+), (\S+) req/s, (\S+)B/s$`)
	h2Requests = regexp.MustCompile(`^requests: ([0-9]+) total, ([0-9]+) started, ([0-9]+) done, ([0-9]+) succeeded, ([0-9]+) failed, ([0-9]+) errored, ([0-9]+) timeout$`)
	h2Status   = regexp.MustCompile(`^status codes: ([0-9]+) 2xx, ([0-9]+) 3xx, ([0-9]+) 4xx, ([0-9]+) 5xx$`)
	h2Times    = regexp.MustCompile(`^time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)%$`)
	h2Failure  = regexp.MustCompile(`^Process Request Failure:([0-9]+)$`)
	h2Protocol = regexp.MustCompile(`^Application protocol: (\S+)$`)
)

// ParseH2load parses the standard output of h2load (nghttp2 1.52). The
// "finished in", "requests:", "status codes:" and "time for request:"
// lines are required; a line that starts like one of those (or like
// "Process Request Failure:") but does not read as one, or appears twice,
// is an error, and so are counts h2load cannot print: Succeeded+Failed
// other than Total, or more Errored than Failed. Errors are
// [*ParseError]s.
func ParseH2load(out []byte) (H2loadResult, error) {
	r := H2loadResult{Output: string(out)}
	fail := func(format string, args ...any) (H2loadResult, error) {
		return H2loadResult{}, parseErr(H2load, out, format, args...)
	}
	s := seen{}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		var re *regexp.Regexp
		label := ""
		switch {
		case strings.HasPrefix(line, "finished in "):
			label, re = "finished in", h2Finished
		case strings.HasPrefix(line, "requests: "):
			label, re = "requests", h2Requests
		case strings.HasPrefix(line, "status codes: "):
			label, re = "status codes", h2Status
		case strings.HasPrefix(line, "time for request:"):
			label, re = "time for request", h2Times
		case strings.HasPrefix(line, "Process Request Failure:"):
			label, re = "Process Request Failure", h2Failure
		case strings.HasPrefix(line, "Application protocol:"):
			label, re = "Application protocol", h2Protocol
		default:
			continue
		}
		m := re.FindStringSubmatch(line)
		if m == nil {
			return fail("malformed %s line %q", label, line)
		}
		if label != "Process Request Failure" && !s.once(label) {
			return fail("two %s lines", label)
		}
		var err error
		switch label {
		case "finished in":
			var errs [2]error
			r.Elapsed, errs[0] = parseUnitDuration(m[1])
			r.RequestsPerSec, errs[1] = parseDecimal(m[2])
			err = errors.Join(errs[:]...)
		case "requests":
			var errs [7]error
			for i, p := range []*int64{&r.Total, &r.Started, &r.Done, &r.Succeeded, &r.Failed, &r.Errored, &r.Timeout} {
				*p, errs[i] = parseCount(m[i+1])
			}
			err = errors.Join(errs[:]...)
		case "status codes":
			var errs [4]error
			for i, p := range []*int64{&r.Status2xx, &r.Status3xx, &r.Status4xx, &r.Status5xx} {
				*p, errs[i] = parseCount(m[i+1])
			}
			err = errors.Join(errs[:]...)
		case "time for request":
			var errs [5]error
			for i, p := range []*time.Duration{&r.RequestTime.Min, &r.RequestTime.Max, &r.RequestTime.Mean, &r.RequestTime.SD} {
				*p, errs[i] = parseUnitDuration(m[i+1])
			}
			_, errs[4] = parseDecimal(m[5])
			err = errors.Join(errs[:]...)
		case "Process Request Failure":
			var n int64
			n, err = parseCount(m[1])
			r.ProcessRequestFailures = append(r.ProcessRequestFailures, n)
		case "Application protocol":
			r.Protocol = m[1]
		}
		if err != nil {
			return fail("%s line %q: %v", label, line, err)
		}
	}
	if l := s.missing("finished in", "requests", "status codes", "time for request"); l != "" {
		return fail("no %s line", l)
	}
	// h2load's main() sets failed to total−succeeded (in unsigned
	// arithmetic) just before printing, and every errored request is
	// also a failed one.
	if r.Succeeded > r.Total || r.Total-r.Succeeded != r.Failed {
		return fail("%d succeeded + %d failed is not the %d total", r.Succeeded, r.Failed, r.Total)
	}
	if r.Errored > r.Failed {
		return fail("%d errored but only %d failed", r.Errored, r.Failed)
	}
	return r, nil
}

// ParseH2loadLog parses the file h2load --log-file writes: one line per
// request it counted as done, tab-separated: start time in microseconds
// since the epoch, status code (-1 for a stream that ended with an error),
// duration in microseconds. Columns after the third, which h2load says it
// may add, are ignored. A line that does not read so, a status outside
// 0–999, or a last line without its newline (a log cut short) is an error
// (a [*ParseError] quoting the log). An empty log has no entries.
func ParseH2loadLog(b []byte) ([]H2loadLogEntry, error) {
	fail := func(format string, args ...any) ([]H2loadLogEntry, error) {
		return nil, parseErr(H2load, b, "log: "+format, args...)
	}
	if len(b) == 0 {
		return nil, nil
	}
	if b[len(b)-1] != '\n' {
		return fail("the last line has no newline: the log was cut short")
	}
	entries := make([]H2loadLogEntry, 0, bytes.Count(b, []byte{'\n'}))
	for i, line := range strings.Split(string(b[:len(b)-1]), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 3 {
			return fail("line %d %q: want 3 tab-separated columns", i+1, line)
		}
		start, err1 := parseCount(f[0])
		dur, err2 := parseCount(f[2])
		status := -1
		var err3 error
		if f[1] != "-1" {
			var n int64
			if n, err3 = parseCount(f[1]); err3 == nil && n > 999 {
				err3 = fmt.Errorf("status %d", n)
			}
			status = int(n)
		}
		if err := errors.Join(err1, err2, err3); err != nil {
			return fail("line %d %q: %v", i+1, line, err)
		}
		d, err := mulDuration(dur, time.Microsecond)
		if err != nil {
			return fail("line %d %q: %v", i+1, line, err)
		}
		entries = append(entries, H2loadLogEntry{Start: time.UnixMicro(start), Status: status, Duration: d})
	}
	return entries, nil
}

package outside

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// What dnsperf 2.10 (Debian 12's) counts, read from its source
// (dnsperf.c) and checked against the captured outputs in testdata:
//
//   - A query is sent when its datagram (or, over TCP, its message) was
//     written whole; one whose write failed goes back to be sent again and
//     is not counted. dnsperf never resends a query it has sent.
//   - Every query sent stays in flight until its answer arrives
//     (completed, whatever the response code), until it has been in
//     flight for -t (lost, printed as a "[Timeout]" line, or "> T" with
//     -v), or until dnsperf is interrupted (SIGINT: interrupted, "> I").
//     -q bounds the queries in flight: while that many are, nothing more
//     is sent, so one outage of the server loses at most -q queries and
//     stalls the run for -t.
//   - When the time limit (-l) or the runs through the file (-n) are
//     over, dnsperf stops sending and waits until every query in flight
//     has completed or is lost; so Sent == Completed + Lost + Interrupted
//     in every summary, and a summary without an interruption has no
//     query in flight left.
//   - An answer whose ID names no query in flight (a late answer to a lost
//     one) is not counted: it is a warning on standard error.
//   - A receive error other than "try again" is fatal: dnsperf exits 1
//     without statistics. Unconnected UDP sockets never see a refused
//     port, so against no server every query is lost.
//   - Over TCP, when the server closes a connection dnsperf connects again
//     (Reconnections), and the queries in flight on the old one are lost
//     after -t: dnsperf does not send them again, although RFC 7766 asks
//     clients to.

// DnsperfConfig is one run of dnsperf (DNS-OARC's, 2.10): queries read
// from DataFile, sent to Server by Clients sockets, at most MaxOutstanding
// unanswered at a time and MaxQPS a second, for Duration or Runs passes
// through the file. Zero fields leave dnsperf's own defaults.
type DnsperfConfig struct {
	// Server is host:port; required. The host is an address or a name
	// dnsperf resolves (-s), the port -p.
	Server string
	// DataFile is -d, one query a line ("www.example.test A"); required:
	// without it dnsperf reads its standard input, which RunDnsperf
	// leaves empty.
	DataFile string
	// Mode is -m: "udp" (dnsperf's default), "tcp", "dot" or "doh".
	Mode string
	// Clients is -c, the number of sockets (for tcp, connections);
	// zero means dnsperf's default, 1.
	Clients int
	// Threads is -T, pairs of sender and receiver threads; zero means 1.
	Threads int
	// MaxOutstanding is -q, the queries in flight at most; zero means
	// dnsperf's default, 100. dnsperf sends nothing more while that many
	// are unanswered, so it also bounds how many one outage can lose.
	MaxOutstanding int
	// MaxQPS is -Q, the sending rate at most; zero means no limit.
	MaxQPS int
	// Duration is -l, in whole microseconds: stop sending after this
	// long, whatever Runs says. Zero means no time limit.
	Duration time.Duration
	// Runs is -n: stop after this many passes through DataFile. Zero
	// means one pass without Duration, no limit with it.
	Runs int
	// Timeout is -t, in whole microseconds: a query unanswered this long
	// after it was sent is lost. Zero means dnsperf's default, 5 s. At
	// the end of a run dnsperf waits for the queries in flight, up to
	// this long.
	Timeout time.Duration
	// StatsInterval is -S, in whole microseconds: print the rate of
	// answers every interval ([DnsperfResult.Intervals]).
	StatsInterval time.Duration
	// EDNS is -e: add an OPT record to every query.
	EDNS bool
	// Verbose is -v: print a line for every answer, loss and interrupted
	// query ([DnsperfResult.Answers]).
	Verbose bool
}

// Args returns dnsperf's command line (without the program name), or an
// error if c cannot be expressed in dnsperf's flags.
func (c DnsperfConfig) Args() ([]string, error) {
	host, port, err := net.SplitHostPort(c.Server)
	if err != nil || host == "" {
		return nil, fmt.Errorf("outside: dnsperf server %q: want host:port", c.Server)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return nil, fmt.Errorf("outside: dnsperf server %q: port %q is not 1-65535", c.Server, port)
	}
	if c.DataFile == "" {
		return nil, errors.New("outside: dnsperf needs a DataFile (-d): it would read the queries from its standard input")
	}
	switch c.Mode {
	case "", "udp", "tcp", "dot", "doh":
	default:
		return nil, fmt.Errorf("outside: dnsperf mode %q: want udp, tcp, dot or doh", c.Mode)
	}
	if c.Clients < 0 || c.Threads < 0 || c.MaxOutstanding < 0 || c.MaxQPS < 0 || c.Runs < 0 {
		return nil, fmt.Errorf("outside: dnsperf: clients %d, threads %d, outstanding %d, qps %d, runs %d: want non-negative",
			c.Clients, c.Threads, c.MaxOutstanding, c.MaxQPS, c.Runs)
	}
	args := []string{"-s", host, "-p", port, "-d", c.DataFile}
	if c.Mode != "" {
		args = append(args, "-m", c.Mode)
	}
	for _, f := range []struct {
		flag string
		n    int
	}{{"-c", c.Clients}, {"-T", c.Threads}, {"-q", c.MaxOutstanding}, {"-Q", c.MaxQPS}, {"-n", c.Runs}} {
		if f.n > 0 {
			args = append(args, f.flag, strconv.Itoa(f.n))
		}
	}
	for _, f := range []struct {
		flag string
		d    time.Duration
	}{{"-l", c.Duration}, {"-t", c.Timeout}, {"-S", c.StatsInterval}} {
		if f.d == 0 {
			continue
		}
		// dnsperf reads these as decimal seconds, to the microsecond.
		if f.d < 0 || f.d%time.Microsecond != 0 {
			return nil, fmt.Errorf("outside: dnsperf %s %v: want a positive whole number of microseconds", f.flag, f.d)
		}
		args = append(args, f.flag, strconv.FormatFloat(f.d.Seconds(), 'f', -1, 64))
	}
	if c.EDNS {
		args = append(args, "-e")
	}
	if c.Verbose {
		args = append(args, "-v")
	}
	return args, nil
}

// DnsperfResult is what dnsperf printed at the end of a run.
type DnsperfResult struct {
	// Sent, Completed, Lost and Interrupted are the "Queries" lines.
	// Completed are queries answered (whatever the response code); Lost
	// are queries left unanswered for the timeout (-t), which dnsperf
	// also waits out at the end of a run; Interrupted are the queries in
	// flight when dnsperf was interrupted (SIGINT), printed only then.
	// Sent == Completed + Lost + Interrupted always holds: dnsperf keeps
	// every query it sent in flight until one of those ends it.
	Sent, Completed, Lost, Interrupted int64
	// Rcodes counts the answers by response code, under dnsperf's names
	// (NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, …,
	// rcode11 to rcode15); they sum to Completed.
	Rcodes map[string]int64
	// RequestSize and ResponseSize are the average packet sizes in bytes
	// (dnsperf truncates them; 0 when nothing was sent or answered).
	RequestSize, ResponseSize int64
	// RunTime is from the start to when dnsperf stopped sending, or to
	// the last answer if later.
	RunTime time.Duration
	// QPS is Completed / RunTime.
	QPS float64
	// Latency is over the answered queries: Avg, Min and Max (zeros when
	// none was answered) and StdDev (zero unless at least two were, or
	// when dnsperf printed "nan" for it, as its formula can when the
	// latencies are all equal).
	Latency DnsperfLatency
	// Connection statistics, printed for the connection-oriented modes
	// (tcp, dot, doh) once a connection was made: Reconnections counts
	// the connections dnsperf made again after one ended (the server
	// closed it, or dnsperf's num-queries-per-conn), and ConnLatency is
	// how long the connections took to establish.
	HasConnStats  bool
	Reconnections int64
	ConnLatency   DnsperfLatency
	// End is why the test ended: "time limit", "end of file" or
	// "interruption".
	End string
	// Timeouts counts the "[Timeout] Query timed out" lines (or, with
	// Verbose, the "> T" ones): dnsperf prints one for each lost query.
	Timeouts int
	// Intervals are the lines StatsInterval asks for: the rate of
	// answers over each interval.
	Intervals []DnsperfInterval
	// Answers are the lines Verbose asks for, in order.
	Answers []DnsperfAnswer
	// Warnings are the lines dnsperf wrote to its standard error that
	// begin "Warning: " (RunDnsperf fills them in): an answer received
	// after its query was counted lost ("unexpected (maybe timed out)
	// id") is one of them.
	Warnings []string
	// Output is dnsperf's whole standard output.
	Output string
}

// DnsperfLatency is one latency line of dnsperf's statistics.
type DnsperfLatency struct {
	Avg, Min, Max, StdDev time.Duration
}

// DnsperfInterval is one line of -S output: at At, dnsperf had received
// QPS answers a second since the line before.
type DnsperfInterval struct {
	At  time.Time
	QPS float64
}

// DnsperfAnswer is one line of -v output: a query's response code and
// latency, or Rcode "T" (lost: timed out) or "I" (interrupted), which
// have no latency. Query is the line of the data file it came from.
type DnsperfAnswer struct {
	Rcode   string
	Query   string
	Latency time.Duration
}

// Unexpected returns how many of r.Warnings say that an answer arrived
// whose query was no longer in flight: a late answer to a lost query, or
// an answer nobody asked for.
func (r DnsperfResult) Unexpected() int {
	n := 0
	for _, w := range r.Warnings {
		if strings.Contains(w, "unexpected") {
			n++
		}
	}
	return n
}

// String summarises r on one line, for logs.
func (r DnsperfResult) String() string {
	var rc []string
	for _, name := range dnsperfRcodes {
		if n := r.Rcodes[name]; n > 0 {
			rc = append(rc, fmt.Sprintf("%s %d", name, n))
		}
	}
	s := fmt.Sprintf("queries: %d sent, %d completed, %d lost, %d interrupted; rcodes: %s; %.0f qps over %v; latency avg %v, min %v, max %v, sd %v; %d warnings; end: %s",
		r.Sent, r.Completed, r.Lost, r.Interrupted, strings.Join(rc, ", "), r.QPS, r.RunTime.Round(time.Millisecond),
		r.Latency.Avg, r.Latency.Min, r.Latency.Max, r.Latency.StdDev, len(r.Warnings), r.End)
	if r.HasConnStats {
		s += fmt.Sprintf("; %d reconnections, connect avg %v, max %v", r.Reconnections, r.ConnLatency.Avg, r.ConnLatency.Max)
	}
	return s
}

// RunDnsperf runs dnsperf as c says, bounded by ctx, and parses its
// output. It fails if dnsperf is missing (the error wraps
// [exec.ErrNotFound]), exits non-zero (it does on a fatal error, such as
// a receive that failed, and prints no statistics then), or prints
// something [ParseDnsperf] cannot read. A run that ctx ends is killed and
// is an error: dnsperf prints its statistics only when it ends by itself
// or on SIGINT.
func RunDnsperf(ctx context.Context, c DnsperfConfig) (DnsperfResult, error) {
	args, err := c.Args()
	if err != nil {
		return DnsperfResult{}, err
	}
	out, errOut, err := run(ctx, Dnsperf, args)
	if err != nil {
		return DnsperfResult{}, err
	}
	r, err := ParseDnsperf(out)
	if err != nil {
		return r, err
	}
	for _, line := range strings.Split(string(errOut), "\n") {
		if strings.HasPrefix(line, "Warning: ") {
			r.Warnings = append(r.Warnings, line)
		}
	}
	return r, nil
}

// dnsperfRcodes are the names dnsperf gives the 16 response codes, in
// their order (dns.c).
var dnsperfRcodes = [16]string{
	"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
	"NXRRSET", "NOTAUTH", "NOTZONE", "rcode11", "rcode12", "rcode13", "rcode14", "rcode15",
}

var (
	dpCount    = regexp.MustCompile(`^Queries (sent|completed|lost|interrupted):\s+([0-9]+)(?: \(([0-9]+\.[0-9]{2})%\))?$`)
	dpRcode    = regexp.MustCompile(`^(\S+) ([0-9]+) \(([0-9]+\.[0-9]{2})%\)$`)
	dpSizes    = regexp.MustCompile(`^Average packet size:\s+request ([0-9]+), response ([0-9]+)$`)
	dpRunTime  = regexp.MustCompile(`^Run time \(s\):\s+([0-9]+\.[0-9]{6})$`)
	dpQPS      = regexp.MustCompile(`^Queries per second:\s+([0-9]+\.[0-9]{6})$`)
	dpLatency  = regexp.MustCompile(`^Average Latency \(s\):\s+([0-9]+\.[0-9]{6}) \(min ([0-9]+\.[0-9]{6}), max ([0-9]+\.[0-9]{6})\)$`)
	dpStdDev   = regexp.MustCompile(`^Latency StdDev \(s\):\s+([0-9]+\.[0-9]{6}|-?nan)$`)
	dpReconn   = regexp.MustCompile(`^Reconnections:\s+([0-9]+)$`)
	dpComplete = regexp.MustCompile(`^\[Status\] Testing complete \((time limit|end of file|interruption)\)$`)
	dpInterval = regexp.MustCompile(`^([0-9]+)\.([0-9]{6}): ([0-9]+\.[0-9]{6})$`)
	dpTimeout  = regexp.MustCompile(`^\[Timeout\] (?:Query|Update) timed out: msg id [0-9]+$`)
	dpVerbose  = regexp.MustCompile(`^> (\S+) (.+?)(?: ([0-9]+\.[0-9]{6}))?$`)
)

// ParseDnsperf parses the standard output of dnsperf 2.10. The "Testing
// complete", "Queries sent", "completed" and "lost", "Response codes",
// "Average packet size", "Run time", "Queries per second" and "Average
// Latency" lines are required, and "Latency StdDev" when more than one
// query was answered; a line that starts like one of those but does not
// read as one, or appears twice in its section, is an error, and so are
// counts dnsperf cannot print: Completed+Lost+Interrupted other than Sent,
// response codes that do not sum to Completed, interrupted queries in a
// run that was not interrupted, a percentage or rate that is not the one
// the counts give, an average packet size with nothing to average,
// latencies out of order. Errors are [*ParseError]s.
func ParseDnsperf(out []byte) (DnsperfResult, error) {
	r := DnsperfResult{Output: string(out), Rcodes: map[string]int64{}}
	fail := func(format string, args ...any) (DnsperfResult, error) {
		return DnsperfResult{}, parseErr(Dnsperf, out, format, args...)
	}
	s := seen{}
	var pcts []dnsperfShare
	// The connection statistics repeat the latency lines' labels.
	section := ""
	var err error
	for _, raw := range strings.Split(string(out), "\n") {
		line := strings.TrimSpace(raw)
		label := ""
		switch {
		case line == "Connection Statistics:":
			if !s.once("Connection Statistics") {
				return fail("two Connection Statistics sections")
			}
			section, r.HasConnStats = "connection ", true
			continue
		case strings.HasPrefix(line, "[Status] Testing complete"):
			label = "Testing complete"
		case strings.HasPrefix(line, "Queries ") && strings.Contains(line, ":") && !strings.HasPrefix(line, "Queries per second"):
			label = "Queries line"
		case strings.HasPrefix(line, "Response codes:"):
			label = "Response codes"
		case strings.HasPrefix(line, "Average packet size:"):
			label = "Average packet size"
		case strings.HasPrefix(line, "Run time (s):"):
			label = "Run time"
		case strings.HasPrefix(line, "Queries per second:"):
			label = "Queries per second"
		case strings.HasPrefix(line, "Average Latency (s):"):
			label = section + "Average Latency"
		case strings.HasPrefix(line, "Latency StdDev (s):"):
			label = section + "Latency StdDev"
		case strings.HasPrefix(line, "Reconnections:"):
			label = "Reconnections"
		case strings.HasPrefix(line, "[Timeout]"):
			if !dpTimeout.MatchString(line) {
				return fail("malformed [Timeout] line %q", line)
			}
			r.Timeouts++
			continue
		case strings.HasPrefix(line, "> "):
			m := dpVerbose.FindStringSubmatch(line)
			if m == nil {
				return fail("malformed verbose line %q", line)
			}
			a := DnsperfAnswer{Rcode: m[1], Query: m[2]}
			switch {
			case a.Rcode == "T" || a.Rcode == "I":
				if m[3] != "" {
					// "> T name 0.000100" reads as a query named
					// "name 0.000100": dnsperf prints no latency there.
					a.Query = m[2] + " " + m[3]
				}
				if a.Rcode == "T" {
					r.Timeouts++
				}
			case m[3] == "" || !isRcodeName(a.Rcode):
				return fail("malformed verbose line %q", line)
			default:
				if a.Latency, err = parseSeconds(m[3]); err != nil {
					return fail("verbose line %q: %v", line, err)
				}
			}
			r.Answers = append(r.Answers, a)
			continue
		default:
			if m := dpInterval.FindStringSubmatch(line); m != nil {
				sec, err1 := parseCount(m[1])
				us, err2 := parseCount(m[2])
				qps, err3 := parseDecimal(m[3])
				if err := errors.Join(err1, err2, err3); err != nil || sec > math.MaxInt64/1000000-1 {
					return fail("interval line %q: %v", line, err)
				}
				r.Intervals = append(r.Intervals, DnsperfInterval{At: time.UnixMicro(sec*1e6 + us), QPS: qps})
			}
			continue
		}
		// The Queries lines are each labelled by their count's name.
		var m []string
		switch label {
		case "Queries line":
			if m = dpCount.FindStringSubmatch(line); m == nil {
				return fail("malformed Queries line %q", line)
			}
			label = "Queries " + m[1]
		case "Testing complete":
			m = dpComplete.FindStringSubmatch(line)
		case "Response codes":
			m = []string{line, strings.TrimSpace(strings.TrimPrefix(line, "Response codes:"))}
		case "Average packet size":
			m = dpSizes.FindStringSubmatch(line)
		case "Run time":
			m = dpRunTime.FindStringSubmatch(line)
		case "Queries per second":
			m = dpQPS.FindStringSubmatch(line)
		case "Average Latency", "connection Average Latency":
			m = dpLatency.FindStringSubmatch(line)
		case "Latency StdDev", "connection Latency StdDev":
			m = dpStdDev.FindStringSubmatch(line)
		case "Reconnections":
			m = dpReconn.FindStringSubmatch(line)
		}
		if m == nil {
			return fail("malformed %s line %q", label, line)
		}
		if !s.once(label) {
			return fail("two %s lines", label)
		}
		switch label {
		case "Testing complete":
			r.End = m[1]
		case "Queries sent":
			if m[3] != "" {
				return fail("malformed Queries sent line %q", line)
			}
			r.Sent, err = parseCount(m[2])
		case "Queries completed", "Queries lost", "Queries interrupted":
			if m[3] == "" {
				return fail("malformed %s line %q: no percentage", label, line)
			}
			p := map[string]*int64{"Queries completed": &r.Completed, "Queries lost": &r.Lost, "Queries interrupted": &r.Interrupted}[label]
			if *p, err = parseCount(m[2]); err == nil {
				pcts = append(pcts, dnsperfShare{what: label, n: *p, printed: m[3]})
			}
		case "Response codes":
			err = r.parseRcodes(m[1], &pcts)
		case "Average packet size":
			var errs [2]error
			r.RequestSize, errs[0] = parseCount(m[1])
			r.ResponseSize, errs[1] = parseCount(m[2])
			err = errors.Join(errs[:]...)
		case "Run time":
			r.RunTime, err = parseSeconds(m[1])
		case "Queries per second":
			r.QPS, err = parseDecimal(m[1])
		case "Average Latency", "connection Average Latency":
			l := &r.Latency
			if section != "" {
				l = &r.ConnLatency
			}
			var errs [3]error
			for i, p := range []*time.Duration{&l.Avg, &l.Min, &l.Max} {
				*p, errs[i] = parseSeconds(m[i+1])
			}
			err = errors.Join(errs[:]...)
		case "Latency StdDev", "connection Latency StdDev":
			l := &r.Latency
			if section != "" {
				l = &r.ConnLatency
			}
			// Equal latencies can make dnsperf's sum-of-squares
			// formula take the root of a rounding error below zero.
			if !strings.HasSuffix(m[1], "nan") {
				l.StdDev, err = parseSeconds(m[1])
			}
		case "Reconnections":
			if section == "" {
				return fail("a Reconnections line outside the Connection Statistics")
			}
			r.Reconnections, err = parseCount(m[1])
		}
		if err != nil {
			return fail("%s line %q: %v", label, line, err)
		}
	}
	if l := s.missing("Testing complete", "Queries sent", "Queries completed", "Queries lost", "Response codes",
		"Average packet size", "Run time", "Queries per second", "Average Latency"); l != "" {
		return fail("no %s line", l)
	}
	if r.Completed > 1 && !s["Latency StdDev"] {
		return fail("no Latency StdDev line, with %d queries completed", r.Completed)
	}
	if r.Completed <= 1 && s["Latency StdDev"] {
		return fail("a Latency StdDev line, with %d queries completed", r.Completed)
	}
	if s["Queries interrupted"] && r.Interrupted == 0 {
		return fail("a Queries interrupted line of 0: dnsperf prints it only when it interrupted queries")
	}
	if r.HasConnStats && (!s["Reconnections"] || !s["connection Average Latency"]) {
		return fail("Connection Statistics without Reconnections or Average Latency")
	}
	if err := r.check(pcts); err != nil {
		return fail("%v", err)
	}
	return r, nil
}

// parseRcodes parses the list after "Response codes:": "NOERROR 4800
// (80.00%), NXDOMAIN 1200 (20.00%)", empty when nothing was answered.
func (r *DnsperfResult) parseRcodes(list string, pcts *[]dnsperfShare) error {
	if list == "" {
		return nil
	}
	last := -1
	for _, item := range strings.Split(list, ", ") {
		m := dpRcode.FindStringSubmatch(item)
		if m == nil {
			return fmt.Errorf("response code %q: want NAME COUNT (PERCENT%%)", item)
		}
		i := rcodeIndex(m[1])
		if i < 0 {
			return fmt.Errorf("response code %q: unknown name %q", item, m[1])
		}
		// dnsperf prints them in the order of their codes, only those
		// it counted.
		if i <= last {
			return fmt.Errorf("response code %s out of order, or twice", m[1])
		}
		last = i
		n, err := parseCount(m[2])
		if err != nil {
			return fmt.Errorf("response code %q: %v", item, err)
		}
		if n == 0 {
			return fmt.Errorf("response code %s counted 0 times: dnsperf leaves those out", m[1])
		}
		r.Rcodes[m[1]] = n
		*pcts = append(*pcts, dnsperfShare{what: "response code " + m[1], n: n, printed: m[3], ofCompleted: true})
	}
	return nil
}

// dnsperfShare is a count and the percentage dnsperf printed beside it:
// of the queries sent, or for a response code of those completed.
type dnsperfShare struct {
	what        string
	n           int64
	ofCompleted bool
	printed     string
}

// check refuses counts that dnsperf's accounting cannot produce.
func (r DnsperfResult) check(pcts []dnsperfShare) error {
	if r.Completed > r.Sent || r.Lost > r.Sent-r.Completed || r.Interrupted != r.Sent-r.Completed-r.Lost {
		return fmt.Errorf("%d completed + %d lost + %d interrupted is not the %d sent", r.Completed, r.Lost, r.Interrupted, r.Sent)
	}
	if r.Interrupted > 0 && r.End != "interruption" {
		return fmt.Errorf("%d queries interrupted in a run that ended by %s", r.Interrupted, r.End)
	}
	var sum int64
	for _, n := range r.Rcodes {
		if sum += n; sum < 0 || sum > r.Completed {
			break
		}
	}
	if sum != r.Completed {
		return fmt.Errorf("the response codes count %d answers, not the %d completed", sum, r.Completed)
	}
	// Percentages: of Sent for the Queries lines, of Completed for the
	// response codes, printed with two decimals; 0.00 when the base is 0.
	for _, p := range pcts {
		of := r.Sent
		if p.ofCompleted {
			of = r.Completed
		}
		want := 0.0
		if of > 0 {
			want = 100 * float64(p.n) / float64(of)
		}
		got, err := parseDecimal(p.printed)
		if err != nil || math.Abs(got-want) > 0.0051 {
			return fmt.Errorf("%s: %d is not %s%% of %d", p.what, p.n, p.printed, of)
		}
	}
	if r.Sent == 0 && r.RequestSize != 0 || r.Completed == 0 && r.ResponseSize != 0 {
		return fmt.Errorf("average packet sizes %d and %d with %d sent and %d completed", r.RequestSize, r.ResponseSize, r.Sent, r.Completed)
	}
	// dnsperf prints QPS as Completed over the run time it printed (to
	// the microsecond), with six decimals; 0 for a run time of 0.
	want := 0.0
	if r.RunTime > 0 {
		want = float64(r.Completed) / r.RunTime.Seconds()
	}
	if math.Abs(r.QPS-want) > 1e-6+want*1e-9 {
		return fmt.Errorf("%f queries per second, but %d completed in %v make %f", r.QPS, r.Completed, r.RunTime, want)
	}
	l := r.Latency
	if r.Completed == 0 && l != (DnsperfLatency{}) {
		return fmt.Errorf("latencies %+v with no query completed", l)
	}
	if l.Min > l.Avg || l.Avg > l.Max {
		return fmt.Errorf("latency min %v, average %v, max %v: out of order", l.Min, l.Avg, l.Max)
	}
	if c := r.ConnLatency; c.Min > c.Avg || c.Avg > c.Max {
		return fmt.Errorf("connection latency min %v, average %v, max %v: out of order", c.Min, c.Avg, c.Max)
	}
	return nil
}

func rcodeIndex(name string) int {
	for i, n := range dnsperfRcodes {
		if n == name {
			return i
		}
	}
	return -1
}

func isRcodeName(name string) bool { return rcodeIndex(name) >= 0 }

// parseSeconds parses dnsperf's seconds with six decimals ("0.000101"),
// exactly, to the microsecond.
func parseSeconds(s string) (time.Duration, error) {
	whole, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 6 {
		return 0, fmt.Errorf("%q is not seconds with six decimals", s)
	}
	sec, err1 := parseCount(whole)
	us, err2 := parseCount(frac)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%q is not seconds: %v", s, err)
	}
	if sec > math.MaxInt64/int64(time.Second)-1 {
		return 0, fmt.Errorf("%q does not fit a time.Duration", s)
	}
	return time.Duration(sec)*time.Second + time.Duration(us)*time.Microsecond, nil
}

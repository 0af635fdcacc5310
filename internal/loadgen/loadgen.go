// Package loadgen is an HTTP/1.1 load generator for upgrade tests and
// benchmarks. It counts every failed request and never retries one.
//
// net/http's Transport re-sends an idempotent request when a reused
// keep-alive connection turns out to be dead (persistConn.shouldRetryRequest
// and Request.isReplayable in net/http). That dead keep-alive connection is
// exactly the failure an upgrade causes, so a client built on http.Client
// would report zero failures against a server that drops requests. This
// package therefore writes request lines by hand on raw connections and
// parses responses with [http.ReadResponse]; a request that fails is
// recorded and the next request starts afresh.
//
// Traffic goes only to loopback addresses or unix sockets: [Run] refuses any
// other target, because load tests here must never leave the machine.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a shape of traffic.
type Kind string

const (
	// KeepAlive: each worker owns one persistent connection and sends GET /
	// back to back on it. A response that says Connection: close makes the
	// worker close the connection and dial a new one for its next request;
	// that is how a draining server asks clients to go away, not a retry.
	KeepAlive Kind = "keepalive"
	// NewConn: every request goes on a fresh connection and carries
	// Connection: close.
	NewConn Kind = "newconn"
	// Slow: GET /?sleep=<Config.Sleep> on keep-alive connections (same
	// reuse rule as KeepAlive), so Workers requests are always in flight
	// inside the server when an upgrade starts.
	Slow Kind = "slow"
	// Stream: GET /stream?dur=<Config.StreamDur> on keep-alive connections.
	// The server announces X-Lines: <n> and sends n lines; a response with
	// fewer lines, or whose body is cut short, fails with [ShortStream].
	Stream Kind = "stream"
)

// Defaults for the zero fields of [Config].
const (
	DefaultWorkers     = 4
	DefaultSleep       = time.Second
	DefaultStreamDur   = time.Second
	DefaultTimeout     = 10 * time.Second
	DefaultMaxRequests = 10_000_000
)

// maxBehind is how late a worker on Config.Interval's schedule may run
// and still send the requests it missed. It is the bench's bound for its
// other clients (examples/extra/bench, pacer), so that every kind there
// is paced alike: long enough to make up for a slow response or a
// reconnection during an upgrade, short enough that a server that
// stalled for longer gets no burst.
const maxBehind = 250 * time.Millisecond

// maxErrors bounds Result.Errors: the first failures explain a run, and a
// run with a million failures must not keep a million strings.
const maxErrors = 20

// Config describes one load run. Zero fields take the documented defaults.
type Config struct {
	// Kind is the traffic shape; required.
	Kind Kind
	// Network is "tcp" (also "tcp4", "tcp6") or "unix". Empty means "tcp".
	Network string
	// Addr is host:port for tcp, whose host must be a loopback address or
	// "localhost", or the socket path for unix.
	Addr string
	// Workers is the number of concurrent clients. Zero means
	// DefaultWorkers.
	Workers int
	// Sleep is how long each Slow request asks the server to wait. Zero
	// means DefaultSleep.
	Sleep time.Duration
	// StreamDur is how long each Stream response lasts. Zero means
	// DefaultStreamDur.
	StreamDur time.Duration
	// Timeout bounds one request: dial, write and the whole response body.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxRequests bounds the number of requests the run starts, over all
	// workers. Zero means DefaultMaxRequests.
	MaxRequests int64
	// Pace is a pause each worker takes after every request. Zero means
	// none (as fast as the server answers). The rate it gives falls short
	// of Workers/Pace by the requests' own latency; Interval holds a rate.
	Pace time.Duration
	// Interval puts each worker on a fixed schedule: it starts a request
	// every Interval, worker i offset by i*Interval/Workers so that the
	// load is even, for Workers/Interval requests per second in all. A
	// worker's requests stay sequential: one that is late (its previous
	// request took longer than Interval) starts at once, so the worker
	// catches up and the rate holds; a worker more than 250 ms behind (a
	// server that stalled) skips the slots it missed, keeping its offset,
	// rather than send them in one burst. Zero means no schedule; setting
	// both Interval and Pace is an error.
	Interval time.Duration
	// ReuseCheck makes a worker look, without blocking, whether the server
	// has already closed a kept-alive connection (its FIN or RST, or
	// unsolicited bytes, have arrived) before sending the next request on
	// it, and dial a new one instead if so, as browsers and net/http's
	// Transport do. That request was never sent, so this is no retry;
	// Result.ClosedIdle counts such connections. Off by default: a server
	// that closes a connection a client may be reusing is what upgrade
	// tests must catch, whatever the timing; the check only narrows the
	// race to the requests already on their way (unix only).
	ReuseCheck bool
	// Samples makes Run record a [Sample] for every request, for latency
	// analysis around upgrades. It costs memory proportional to the number
	// of requests.
	Samples bool
}

// Class is the kind of a failed request.
type Class string

// Failure classes. A request fails with exactly one of them.
const (
	// Refused: the dial failed with ECONNREFUSED (nobody listening).
	Refused Class = "refused"
	// Reset: ECONNRESET or EPIPE at any stage.
	Reset Class = "reset"
	// EOF: the connection was closed before or while a response was read
	// (io.EOF or io.ErrUnexpectedEOF), for example a keep-alive connection
	// the server closed while the request was on its way.
	EOF Class = "eof"
	// Timeout: the request did not complete within Config.Timeout.
	Timeout Class = "timeout"
	// Status: a complete response with a status outside 2xx.
	Status Class = "status"
	// ShortStream: a Stream response with fewer lines than its X-Lines
	// header announced, or whose body ended early (EOF or reset).
	ShortStream Class = "short-stream"
	// Other: anything else (malformed response, unexpected errno, …); the
	// text in Result.Errors tells what.
	Other Class = "other"
)

// Classes lists every failure class in the order Result.String prints them.
var Classes = []Class{Refused, Reset, EOF, Timeout, Status, ShortStream, Other}

// Sample is one request, recorded when Config.Samples is set.
type Sample struct {
	// Start is when the request started (before the dial, if any).
	Start time.Time
	// Latency runs from Start to the end of the response body, or to the
	// failure.
	Latency time.Duration
	// Class is empty for a successful request.
	Class Class
	// PID is the response's X-Pid, or 0 when no response header arrived or
	// it had none.
	PID int
	// Reconnect is the part of Latency spent dialling (a dial that
	// failed included) because the server had ended the worker's
	// keep-alive connection: with Connection: close, or by closing or
	// resetting it (an eof or reset failure, or Config.ReuseCheck finding
	// it closed). It is 0 for a request sent on an open connection, for
	// the first dial of a worker, for a dial after the worker itself gave
	// a connection up (timeout, bad response), and for every NewConn
	// request (each dials; none is a reconnection).
	Reconnect time.Duration
}

// Run sends cfg's traffic until ctx is done or cfg.MaxRequests requests
// have been started, then returns what happened.
//
// Once ctx is done no new request starts, but requests already in flight
// run to completion (each is bounded by cfg.Timeout), so the run never
// cancels a request itself and never counts one of its own cancellations
// as a failure. Run returns an error only for an invalid cfg.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{Kind: cfg.Kind}, err
	}
	var started atomic.Int64
	workers := make([]*worker, cfg.Workers)
	var wg sync.WaitGroup
	begin := time.Now()
	for i := range workers {
		w := newWorker(i, &cfg)
		workers[i] = w
		wg.Go(func() { w.run(ctx, begin, &started) })
	}
	wg.Wait()
	results := make([]Result, len(workers))
	for i, w := range workers {
		results[i] = w.res
	}
	res := Merge(results...)
	res.Kind = cfg.Kind
	res.Elapsed = time.Since(begin)
	return res, nil
}

func (c Config) withDefaults() (Config, error) {
	switch c.Kind {
	case KeepAlive, NewConn, Slow, Stream:
	default:
		return c, fmt.Errorf("loadgen: unknown kind %q", c.Kind)
	}
	if c.Network == "" {
		c.Network = "tcp"
	}
	switch c.Network {
	case "tcp", "tcp4", "tcp6":
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return c, fmt.Errorf("loadgen: bad tcp address %q: %w", c.Addr, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return c, fmt.Errorf("loadgen: refusing to send load to %q: only loopback addresses and unix sockets are allowed", c.Addr)
		}
	case "unix":
		if c.Addr == "" {
			return c, errors.New("loadgen: empty unix socket path")
		}
	default:
		return c, fmt.Errorf("loadgen: unsupported network %q (want tcp or unix)", c.Network)
	}
	if c.Workers < 0 || c.Sleep < 0 || c.StreamDur < 0 || c.Timeout < 0 || c.MaxRequests < 0 || c.Pace < 0 || c.Interval < 0 {
		return c, errors.New("loadgen: negative Workers, Sleep, StreamDur, Timeout, MaxRequests, Pace or Interval")
	}
	if c.Pace > 0 && c.Interval > 0 {
		return c, errors.New("loadgen: Pace and Interval are exclusive: a pause after each request, or a fixed schedule")
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Sleep == 0 {
		c.Sleep = DefaultSleep
	}
	if c.StreamDur == 0 {
		c.StreamDur = DefaultStreamDur
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxRequests == 0 {
		c.MaxRequests = DefaultMaxRequests
	}
	return c, nil
}

// worker is one client. It owns its connection and its partial Result, so
// the request path takes no locks; Run merges the partial results at the
// end.
type worker struct {
	id  int
	cfg *Config

	rawReq []byte        // the request, rendered once
	req    *http.Request // only its Method matters to http.ReadResponse

	conn       net.Conn
	connName   string // conn's local address, for error texts
	br         *bufio.Reader
	reqsOnConn int // requests sent on conn, including the current one
	// redial says that conn is nil because the server ended the last
	// one, so the next dial is a reconnection (Sample.Reconnect). It
	// stays set through dials that fail.
	redial bool

	timer *time.Timer // for Pace and Interval; nil until first needed

	buf []byte // body read buffer
	res Result
}

func newWorker(id int, cfg *Config) *worker {
	var path string
	switch cfg.Kind {
	case KeepAlive, NewConn:
		path = "/"
	case Slow:
		path = "/?sleep=" + url.QueryEscape(cfg.Sleep.String())
	case Stream:
		path = "/stream?dur=" + url.QueryEscape(cfg.StreamDur.String())
	}
	host := cfg.Addr
	if cfg.Network == "unix" {
		host = "localhost"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: hitless-loadgen\r\n", path, host)
	if cfg.Kind == NewConn {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return &worker{
		id:     id,
		cfg:    cfg,
		rawReq: b.Bytes(),
		req:    &http.Request{Method: http.MethodGet},
		buf:    make([]byte, 32<<10),
		res:    newResult(cfg.Kind),
	}
}

// run sends requests until ctx is done or started reaches MaxRequests.
// begin is the start of the run, from which Interval's schedule counts.
func (w *worker) run(ctx context.Context, begin time.Time, started *atomic.Int64) {
	defer w.drop()
	every := w.cfg.Interval
	slot := begin.Add(time.Duration(int64(w.id) * int64(every) / int64(w.cfg.Workers)))
	for ctx.Err() == nil && started.Add(1) <= w.cfg.MaxRequests {
		if every > 0 {
			if !w.sleep(ctx, time.Until(slot)) {
				return
			}
			slot = nextSlot(slot, time.Now(), every)
		}
		w.request()
		if w.cfg.Pace > 0 && !w.sleep(ctx, w.cfg.Pace) {
			return
		}
	}
}

// nextSlot returns the slot after the one a request due at slot fills
// when it starts at now (not before slot). A request at most maxBehind
// late fills its own slot, so the next one, maybe also past, starts at
// once: that is how a worker catches up. One later than that fills the
// last slot that has passed, so the slots before it are dropped and the
// worker keeps its offset.
func nextSlot(slot, now time.Time, every time.Duration) time.Time {
	if late := now.Sub(slot); late > maxBehind {
		slot = slot.Add(late / every * every)
	}
	return slot.Add(every)
}

// sleep waits d (not at all if d <= 0) and reports whether ctx is still
// live. It reuses one timer per worker, so that a paced request costs no
// allocation.
func (w *worker) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-ctx.Done():
		w.timer.Stop()
		return false
	case <-w.timer.C:
		return true
	}
}

// outcome is what one request came to.
type outcome struct {
	class  Class // empty on success
	err    error
	pid    int
	respAt time.Time // zero when no response header arrived
	// reconnect is the time spent dialling for Sample.Reconnect.
	reconnect time.Duration
}

func (w *worker) request() {
	start := time.Now()
	o := w.do(start.Add(w.cfg.Timeout))
	lat := time.Since(start)
	r := &w.res
	r.Requests++
	r.Latency.Record(lat)
	if !o.respAt.IsZero() {
		r.PIDs[o.pid]++
		if _, ok := r.FirstSeen[o.pid]; !ok {
			r.FirstSeen[o.pid] = o.respAt
		}
		r.LastSeen[o.pid] = o.respAt
	}
	if o.class == "" {
		r.OK++
	} else {
		r.Failures[o.class]++
		if len(r.Errors) < maxErrors {
			r.Errors = append(r.Errors, fmt.Sprintf("%s %s worker %d: %v",
				start.Format(errTimeFormat), o.class, w.id, o.err))
		}
	}
	if w.cfg.Samples {
		r.Samples = append(r.Samples, Sample{Start: start, Latency: lat, Class: o.class, PID: o.pid, Reconnect: o.reconnect})
	}
}

// errTimeFormat is fixed-width so that Merge can order error lines by
// sorting the strings.
const errTimeFormat = "15:04:05.000000"

// do performs one request that must be over by deadline. Any failure
// closes the connection: after a failure its state is unknown, and the
// next request must not inherit it.
func (w *worker) do(deadline time.Time) (o outcome) {
	// fail says which request on which connection failed: a failure on
	// request 2+ of a kept-alive connection is the close-while-reused race
	// that upgrades cause; one on request 1 is not. The local address
	// matches the failure with the server's logs or a packet capture.
	fail := func(c Class, stage string, err error) outcome {
		if w.conn != nil {
			// Eof and reset mean the server ended the connection; on a
			// timeout or a bad response it is this worker that gives
			// it up, and the next dial is no reconnection.
			if k := classify(err); k == EOF || k == Reset {
				w.redial = w.cfg.Kind != NewConn
			}
			err = fmt.Errorf("request %d on connection from %s: %s: %w", w.reqsOnConn, w.connName, stage, err)
		} else {
			err = fmt.Errorf("%s: %w", stage, err)
		}
		w.drop()
		o.class, o.err = c, err
		return o
	}
	if w.conn != nil && w.cfg.ReuseCheck && (w.br.Buffered() > 0 || PeerClosed(w.conn)) {
		w.res.ClosedIdle++
		w.drop()
		w.redial = true
	}
	if w.conn == nil {
		var dialStart time.Time
		if w.redial {
			dialStart = time.Now()
		}
		d := net.Dialer{Deadline: deadline}
		c, err := d.Dial(w.cfg.Network, w.cfg.Addr)
		if w.redial {
			o.reconnect = time.Since(dialStart)
		}
		if err != nil {
			return fail(classify(err), "dial", err)
		}
		w.redial = false
		w.conn = c
		w.connName = "unix socket"
		if a := c.LocalAddr(); a != nil && a.String() != "" {
			w.connName = a.String()
		}
		if w.br == nil {
			w.br = bufio.NewReaderSize(c, 4096)
		} else {
			w.br.Reset(c)
		}
		w.reqsOnConn = 0
	}
	w.reqsOnConn++
	if err := w.conn.SetDeadline(deadline); err != nil {
		return fail(classify(err), "set deadline", err)
	}
	if _, err := w.conn.Write(w.rawReq); err != nil {
		return fail(classify(err), "write", err)
	}
	// Peek first so the error can say whether the server sent nothing at
	// all, which is what the close of a connection it thought idle looks
	// like.
	if _, err := w.br.Peek(1); err != nil {
		return fail(classify(err), "no response byte", err)
	}
	resp, err := http.ReadResponse(w.br, w.req)
	if err != nil {
		return fail(classify(err), "read response header", err)
	}
	o.respAt = time.Now()
	o.pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	lines, err := w.readBody(resp.Body)
	resp.Body.Close()
	if err != nil {
		c := classify(err)
		if w.cfg.Kind == Stream && (c == EOF || c == Reset) {
			c = ShortStream
		}
		return fail(c, fmt.Sprintf("read body (%s, %d lines so far)", resp.Status, lines), err)
	}
	var c Class
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		c, err = Status, fmt.Errorf("status %s", resp.Status)
	case w.cfg.Kind != Stream:
	default:
		want, aerr := strconv.Atoi(resp.Header.Get("X-Lines"))
		switch {
		case aerr != nil:
			c, err = Other, fmt.Errorf("bad X-Lines header %q", resp.Header.Get("X-Lines"))
		case lines < want:
			c, err = ShortStream, fmt.Errorf("got %d of %d lines", lines, want)
		case lines > want:
			c, err = Other, fmt.Errorf("got %d lines, X-Lines said %d", lines, want)
		}
	}
	if c != "" {
		// The response was complete, so the connection is still usable;
		// fail closes it anyway, which costs one dial and keeps one rule.
		return fail(c, "response", err)
	}
	if resp.Close || w.cfg.Kind == NewConn {
		w.drop()
		w.redial = w.cfg.Kind != NewConn
	}
	return o
}

// readBody reads body to its end and counts the newlines in it.
func (w *worker) readBody(body io.Reader) (lines int, err error) {
	for {
		n, err := body.Read(w.buf)
		lines += bytes.Count(w.buf[:n], []byte{'\n'})
		if err == io.EOF {
			return lines, nil
		}
		if err != nil {
			return lines, err
		}
	}
}

func (w *worker) drop() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

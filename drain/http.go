package drain

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout is the default for HTTP.IdleTimeout.
const DefaultIdleTimeout = time.Second

// DefaultNoticeTimeout is the default for HTTP.NoticeTimeout.
const DefaultNoticeTimeout = time.Second

// DefaultSpread is the default for HTTP.Spread.
const DefaultSpread = 250 * time.Millisecond

// pollInterval is how often a drain looks for connections that stayed idle
// long enough to close, and for the end of the drain. Connection state
// changes arrive through http.Server.ConnState, which cannot block, so the
// drain polls rather than being woken per change; 10 ms keeps the old
// generation's exit prompt without measurable cost.
const pollInterval = 10 * time.Millisecond

// HTTP serves an *http.Server so that it can be drained without failing a
// request. Serve through it (not through Server.Serve directly): it wraps
// Server.Handler, Server.ConnState, Server.BaseContext and
// Server.ConnContext, the first time it serves, to track connections, to
// mark responses during the drain and to let handlers find [WrapUp].
//
// It drains HTTP/1.x (lame duck), HTTP/2 over TLS and h2c (GOAWAY; enable
// h2c with Server.Protocols before serving), and connections handlers
// hijack through the ResponseWriter (WebSocket, CONNECT): those stay
// tracked until the handler closes them, and are closed at the deadline.
//
// An HTTP may not be reused after Drain.
type HTTP struct {
	// Server is the server to drain. Its Handler (nil means
	// http.DefaultServeMux) and ConnState are wrapped on first use; do not
	// change them afterwards.
	Server *http.Server
	// Name names the server in reports. Empty means "http".
	Name string
	// IdleTimeout is how long a keep-alive connection may stay idle during
	// the drain before it is closed; longer, up to ten times as long, for a
	// connection whose client has itself left it idle longer between
	// requests (twice its longest such gap). A client that sends its next request
	// within it gets an answer marked "Connection: close"; closing an idle
	// connection always risks racing a request that is just being sent, so
	// the drain waits this long for the client to use or close it first.
	// Zero or negative means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// NoticeTimeout bounds the first phase of an HTTP/2 connection's
	// drain: how long the drain waits for the client to acknowledge the
	// notice GOAWAY (the round trip of the PING sent after it) before the
	// server's final GOAWAY names the last stream it will serve. The
	// acknowledgement normally ends the wait after one round trip (tens of
	// microseconds on loopback, the WAN's round trip otherwise); the bound
	// only matters for a client that does not answer PINGs. Zero or
	// negative means DefaultNoticeTimeout.
	NoticeTimeout time.Duration
	// Spread is how long the drain takes to tell its connections to go
	// away: one after another at even intervals over Spread, rather than
	// all at once. Every client told to go reconnects, to the next
	// generation, which has just started; a TLS handshake costs a
	// millisecond or more of CPU on each side, and a few hundred of them
	// at the same instant queue behind each other, so the requests that
	// pay for them wait many times longer than any other (32 connections
	// over TLS on two cores: 3–31 ms each at once, against 2 ms alone).
	// A connection whose turn has not come is served as before. The
	// spread is capped at half the time the drain's context leaves, so
	// that the last connections still have time to end. Zero means
	// DefaultSpread; negative means all at once.
	Spread time.Duration

	setup     sync.Once
	setupErr  error
	twoPhase  bool // the HTTP/2 connections are tapped (see h2Tap)
	notices   sync.WaitGroup
	noticing  int // HTTP/2 connections in the first phase of their drain
	draining  atomic.Bool
	wrap      wrapUp
	mu        sync.Mutex
	conns     map[net.Conn]*connInfo
	hijacked  map[net.Conn]*connInfo // handed to handlers; removed when they close them
	cutting   bool                   // closes of hijacked connections from now on are cuts
	listeners map[net.Listener]struct{}
	serving   sync.WaitGroup // Serve calls still in their accept loop
	drainedAt time.Time
	ended     int
	open      int
	cut       int // hijacked connections closed at the deadline
	lastEnded time.Duration
}

type connInfo struct {
	state http.ConnState
	since time.Time // when it entered state
	// h2 marks an HTTP/2 connection (TLS with ALPN "h2", or h2c). Its
	// state hooks come from the HTTP/2 server, and it must never be
	// closed while idle: it gets a GOAWAY instead (see Drain).
	h2 bool
	// checked says whether the connection's protocol has been looked at.
	checked bool
	// longestIdle is the longest the client left the connection idle
	// between two requests (HTTP/1.x); see idleWait.
	longestIdle time.Duration
	// tap, for an HTTP/2 connection, lets the drain send the notice
	// GOAWAY; noticed says the drain has begun doing so.
	tap     *h2Tap
	noticed bool
	// goAt is when, during the drain, the connection's turn to be told to
	// go away comes (see HTTP.Spread); turned says it has come, and wrap
	// is closed then, for the handlers of its requests (see WrapUp).
	goAt   time.Time
	turned atomic.Bool
	wrap   wrapUp
}

// connKey is the context key under which a connection's *connInfo
// travels in its requests' contexts.
type connKey struct{}

// unwrapTapped returns the connection as the drain tracks it, and its tap
// if it has one: net/http's hooks name a TLS connection the HTTP/2 server
// serves through a tap by the tap's wrapper or by the *tls.Conn inside it,
// depending on the hook and the Go release.
func unwrapTapped(c net.Conn) (net.Conn, *h2Tap) {
	if w, ok := c.(*tlsH2Conn); ok {
		return w.Conn, w.tapped()
	}
	return c, nil
}

// Serve accepts connections on ln and serves them with Server, like
// http.Server.Serve. It returns http.ErrServerClosed once Drain has begun.
func (h *HTTP) Serve(ln net.Listener) error {
	h.init()
	// Only with UnencryptedHTTP2 can a cleartext connection be HTTP/2
	// (h2c); the state hooks do not say, its first bytes do. TLS
	// connections from a listener of the caller's are tapped as those of
	// ServeTLS are.
	h2c := h.Server.Protocols != nil && h.Server.Protocols.UnencryptedHTTP2()
	if h2c || h.twoPhase {
		ln = sniffListener{Listener: ln, h2c: h2c, tap: h.twoPhase}
	}
	return h.serve(ln, h.Server.Serve)
}

// ServeTLS is Serve for TLS connections; see http.Server.ServeTLS.
func (h *HTTP) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	return h.serve(ln, func(ln net.Listener) error { return h.serveTLS(ln, certFile, keyFile) })
}

// serve registers ln, so that Drain closes it and waits for its accept
// loop, and runs serve on it.
func (h *HTTP) serve(ln net.Listener, serve func(net.Listener) error) error {
	h.init()
	if h.setupErr != nil {
		ln.Close()
		return h.setupErr
	}
	h.mu.Lock()
	if h.draining.Load() {
		h.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	h.listeners[ln] = struct{}{}
	h.serving.Add(1)
	h.mu.Unlock()
	defer h.serving.Done()
	err := serve(ln)
	if h.draining.Load() {
		// Drain closed the listener to stop accepting; that is a clean end.
		return http.ErrServerClosed
	}
	return err
}

func (h *HTTP) init() {
	if h.Server == nil {
		panic("drain: HTTP.Server is nil")
	}
	h.setup.Do(func() {
		h.conns = make(map[net.Conn]*connInfo)
		h.hijacked = make(map[net.Conn]*connInfo)
		h.listeners = make(map[net.Listener]struct{})
		// The server travels in every request's context from the base
		// context, which costs nothing per request (unlike
		// Request.WithContext), so handlers can find WrapUp.
		userBase := h.Server.BaseContext
		h.Server.BaseContext = func(ln net.Listener) context.Context {
			ctx := context.Background()
			if userBase != nil {
				ctx = userBase(ln)
			}
			return context.WithValue(ctx, serverKey{}, h)
		}
		next := h.Server.Handler
		if next == nil {
			next = http.DefaultServeMux
		}
		h.Server.Handler = h.lameDuck(next)
		// Each connection's record travels in its requests' contexts
		// (net/http derives them from the connection's), so that a
		// response or a handler learns of its connection's turn without
		// a lookup.
		userConnCtx := h.Server.ConnContext
		h.Server.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if userConnCtx != nil {
				ctx = userConnCtx(ctx, c)
			}
			return context.WithValue(ctx, connKey{}, h.register(c))
		}
		h.setupErr = h.setupHTTP2()
		userHook := h.Server.ConnState
		h.Server.ConnState = func(c net.Conn, s http.ConnState) {
			h.track(c, s)
			if userHook != nil {
				userHook(c, s)
			}
		}
	})
}

// register returns the record of a connection just accepted, which
// ConnContext sees before the connection's first state change.
func (h *HTTP) register(c net.Conn) *connInfo {
	c, _ = unwrapTapped(c)
	h.mu.Lock()
	defer h.mu.Unlock()
	ci := h.conns[c]
	if ci == nil {
		ci = &connInfo{state: http.StateNew, since: time.Now()}
		h.conns[c] = ci
	}
	return ci
}

func (h *HTTP) track(c net.Conn, s http.ConnState) {
	// Known by the *tls.Conn inside it: before Go 1.27 net/http reports
	// that as new and closed, the HTTP/2 server the wrapper.
	c, tap := unwrapTapped(c)
	h.mu.Lock()
	defer h.mu.Unlock()
	switch s {
	case http.StateNew:
		ci := h.conns[c]
		if ci == nil {
			// Served without ConnContext (a server of net/http's own,
			// such as one of Serve's HTTP/2 connections).
			ci = &connInfo{}
			h.conns[c] = ci
		}
		ci.state, ci.since = s, time.Now()
		if h.draining.Load() && ci.goAt.IsZero() {
			// Accepted just before the listener closed, and not yet
			// known when the drain gave out turns: its turn is now.
			h.open++
			ci.goAt = h.drainedAt
			h.turnLocked(ci)
		}
	case http.StateActive, http.StateIdle:
		ci := h.conns[c]
		if ci == nil {
			return
		}
		if !ci.checked {
			// Once per connection: TLS connections negotiate HTTP/2 in
			// the handshake, and h2c ones send their preface, before the
			// first state change.
			ci.checked = true
			if tap != nil {
				ci.h2, ci.tap = true, tap
			}
			switch c := c.(type) {
			case *tls.Conn:
				ci.h2 = ci.h2 || c.ConnectionState().NegotiatedProtocol == "h2"
			case *sniffConn:
				if c.h2.Load() {
					ci.h2, ci.tap = true, c.tap.Load()
				}
			}
		}
		now := time.Now()
		if ci.state == http.StateIdle && s == http.StateActive {
			ci.longestIdle = max(ci.longestIdle, now.Sub(ci.since))
		}
		ci.state, ci.since = s, now
	case http.StateHijacked:
		// The handler owns the connection from now on; it stays
		// tracked until the handler closes it (see hijackedConn).
		if ci, ok := h.conns[c]; ok {
			delete(h.conns, c)
			h.hijacked[c] = ci
		}
	case http.StateClosed:
		if ci, ok := h.conns[c]; ok {
			if ci.tap != nil {
				ci.tap.ended()
			}
			delete(h.conns, c)
			h.endedLocked()
		}
	}
}

// endedLocked counts a connection that ended gracefully.
func (h *HTTP) endedLocked() {
	if h.draining.Load() {
		h.ended++
		h.lastEnded = time.Since(h.drainedAt)
	}
}

// forgetHijacked removes a hijacked connection its handler closed.
func (h *HTTP) forgetHijacked(c net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.hijacked[c]; !ok {
		return
	}
	delete(h.hijacked, c)
	if h.cutting {
		h.cut++
		return
	}
	h.endedLocked()
}

// Drain stops accepting, closes WrapUp, lets requests in flight finish,
// closes each HTTP/1.x keep-alive connection after its next response
// (which carries "Connection: close") or after it stayed idle for
// IdleTimeout, and waits for the handlers of hijacked connections to close
// them. HTTP/2 connections (h2c, and TLS unless the server set its own
// TLSNextProto) are drained in two phases (RFC 9113 §6.8): a PING, after
// which the server's output is held back (buffered); once the client has
// acknowledged it and been quiet for its round trip, a GOAWAY naming the
// highest possible stream, which refuses nothing, tells it to open no
// more, followed by a PING and the held output; once that PING is
// acknowledged (or NoticeTimeout passed), every stream the client opened
// before it knew has reached the server, and http.Server.Shutdown sends
// the final GOAWAY naming the last of them. Each connection closes when
// its streams are done. A request the client sent is never refused. (The
// final GOAWAYs go out together once no HTTP/1.x connection is left;
// a server with its own TLSNextProto gets net/http's single GOAWAY with
// the next response, which can refuse a stream in flight.) Drain returns
// when no connection is left.
//
// If ctx is done first, it closes the remaining connections (hijacked ones
// included), counts those busy with a request and every hijacked one as
// cut, and returns an error wrapping ctx.Err() with the report.
//
// ctx bounds the drain; without a deadline a drain can wait forever on a
// request that never ends. Drain is not meant to be called twice.
func (h *HTTP) Drain(ctx context.Context) (Report, error) {
	h.init()
	start := time.Now()
	name := h.Name
	if name == "" {
		name = "http"
	}
	idle := h.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}

	// Stop accepting first: the next generation accepts on the same
	// sockets, so nothing queued on them is refused. Then mark every later
	// response, and tell long-lived handlers.
	h.mu.Lock()
	h.draining.Store(true)
	h.drainedAt = start
	h.open = len(h.conns) + len(h.hijacked)
	h.giveTurnsLocked(ctx, start)
	listeners := h.listeners
	h.listeners = map[net.Listener]struct{}{}
	h.mu.Unlock()
	for ln := range listeners {
		ln.Close()
	}
	h.wrap.fire()
	// A connection accepted just before the close is registered (its
	// StateNew hook runs) by the accept loop before that loop returns; until
	// every loop has returned, an empty connection set does not mean the
	// drain is done. Exiting earlier would drop such a connection unanswered.
	accepting := make(chan struct{})
	go func() { h.serving.Wait(); close(accepting) }()

	report := func(busy int) Report {
		h.mu.Lock()
		defer h.mu.Unlock()
		return Report{Name: name, Open: h.open, Ended: h.ended, Cut: busy + h.cut,
			Duration: time.Since(start), LastEnded: h.lastEnded}
	}

	notice := h.NoticeTimeout
	if notice <= 0 {
		notice = DefaultNoticeTimeout
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	acceptDone := false
	var shutdown chan error // non-nil once Shutdown runs
	shutdownDone := false
	for {
		acceptDone = acceptDone || isClosed(accepting)
		h1, rest, noticing := h.sweep(ctx, idle, notice)
		if acceptDone && h1 == 0 && noticing == 0 && shutdown == nil {
			// Only HTTP/2 and hijacked connections are left, if any, and
			// every HTTP/2 client has had its turn, the notice GOAWAY and
			// a round trip to act on it. Shutdown sends every HTTP/2 connection
			// its final GOAWAY and leaves hijacked ones alone; no HTTP/1.x
			// connection is left for it to close while a client reuses
			// it. It also lets Serve return and releases the server's
			// resources.
			shutdown = make(chan error, 1)
			go func() { shutdown <- h.Server.Shutdown(ctx) }()
		}
		if shutdownDone && h1 == 0 && rest == 0 {
			h.notices.Wait()
			return report(0), nil
		}
		wake := accepting
		if acceptDone {
			wake = nil
		}
		select {
		case <-tick.C:
		case <-wake: // look again at once
		case <-shutdown:
			shutdownDone = true
			shutdown = make(chan error) // never ready again
		case <-ctx.Done():
			h.mu.Lock()
			h.turnAllLocked() // the handlers still waiting for their turn: it is over
			h.mu.Unlock()
			busy := h.cutHijacked()
			// Close also closes connections the tracking has not seen yet,
			// and makes the accept loops return.
			h.Server.Close()
			<-accepting
			if shutdown != nil && !shutdownDone {
				<-shutdown // returns at once: ctx is done
			}
			h.notices.Wait() // they end with ctx, or with their connections
			r := report(busy)
			return r, cutError(name, r.Cut, ctx.Err())
		}
	}
}

// cutHijacked closes the hijacked connections, counting them as cut, and
// returns how many other connections are busy (and will be cut by
// Server.Close).
func (h *HTTP) cutHijacked() int {
	h.mu.Lock()
	h.cutting = true
	hijacked := make([]net.Conn, 0, len(h.hijacked))
	for c := range h.hijacked {
		hijacked = append(hijacked, c)
		delete(h.hijacked, c)
		h.cut++
	}
	busy := 0
	for _, ci := range h.conns {
		if ci.state == http.StateActive {
			busy++
		}
	}
	h.mu.Unlock()
	for _, c := range hijacked {
		c.Close()
	}
	return busy
}

// sweep closes HTTP/1.x connections that have been idle (or new without a
// request) for at least idle since the later of their last state change
// and the start of the drain, and sends the notice GOAWAY to HTTP/2
// connections that have not had it (see noticeLocked). It returns how many
// HTTP/1.x connections remain, how many others (HTTP/2, hijacked), and how
// many HTTP/2 connections are still in the first phase of their drain.
func (h *HTTP) sweep(ctx context.Context, idle, notice time.Duration) (h1, rest, noticing int) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ci := range h.conns {
		if !now.Before(ci.goAt) {
			h.turnLocked(ci)
		}
	}
	for _, ci := range h.hijacked {
		if !now.Before(ci.goAt) {
			h.turnLocked(ci)
		}
	}
	noticing = h.noticeLocked(ctx, notice)
	for c, ci := range h.conns {
		if ci.h2 {
			rest++
			continue
		}
		h1++
		if !ci.turned.Load() || ci.state != http.StateIdle && ci.state != http.StateNew {
			continue
		}
		since := ci.since
		if since.Before(ci.goAt) {
			since = ci.goAt
		}
		if now.Sub(since) >= idleWait(idle, ci) {
			// The server sees the close and reports StateClosed, which
			// counts the connection as ended.
			c.Close()
		}
	}
	return h1, rest + len(h.hijacked), noticing
}

// giveTurnsLocked gives every connection its turn to be told to go away,
// at even intervals over the spread from start (see HTTP.Spread); the
// order is the map's, which is as good as any. The caller holds mu.
func (h *HTTP) giveTurnsLocked(ctx context.Context, start time.Time) {
	spread := spreadFor(ctx, h.Spread)
	n := len(h.conns) + len(h.hijacked)
	k := 0
	for _, m := range []map[net.Conn]*connInfo{h.conns, h.hijacked} {
		for _, ci := range m {
			ci.goAt = start.Add(time.Duration(int64(spread) * int64(k) / int64(max(n, 1))))
			k++
		}
	}
}

// spreadFor is the spread a drain under ctx uses for the setting s (see
// HTTP.Spread): DefaultSpread for zero, none for a negative one, at most
// half the time ctx leaves.
func spreadFor(ctx context.Context, s time.Duration) time.Duration {
	if s == 0 {
		s = DefaultSpread
	}
	s = max(s, 0)
	if d, ok := ctx.Deadline(); ok {
		s = min(s, time.Until(d)/2)
	}
	return max(s, 0)
}

// turnLocked marks the connection's turn as come: its next HTTP/1.x
// response says "Connection: close", an HTTP/2 one gets the notice GOAWAY,
// and the handlers of its requests see WrapUp. The caller holds mu.
func (h *HTTP) turnLocked(ci *connInfo) {
	if !ci.turned.Load() {
		ci.turned.Store(true)
		ci.wrap.fire()
	}
}

// turnAllLocked gives every connection its turn at once. The caller holds
// mu.
func (h *HTTP) turnAllLocked() {
	for _, ci := range h.conns {
		h.turnLocked(ci)
	}
	for _, ci := range h.hijacked {
		h.turnLocked(ci)
	}
}

// maxIdleWaits bounds idleWait, in IdleTimeouts.
const maxIdleWaits = 10

// idleWait is how long an idle HTTP/1.x connection is left alone during
// the drain before it is closed: IdleTimeout, or, for a client that has
// itself left this connection idle longer between two requests (one that
// polls, or one too loaded to keep up), twice the longest such gap, up to
// maxIdleWaits IdleTimeouts. Its next request then comes while the drain
// waits, and is answered with "Connection: close", instead of racing the
// close. (wrk with 8000 connections on two cores, whose requests on a
// connection come up to 1.4 s apart, saw a few hundred closed under its
// requests with a plain one-second wait.)
func idleWait(idle time.Duration, ci *connInfo) time.Duration {
	if ci.state != http.StateIdle {
		return idle // new, without a request yet: nothing to go by
	}
	return max(idle, min(2*ci.longestIdle, maxIdleWaits*idle))
}

// Draining reports whether Drain has begun.
func (h *HTTP) Draining() bool { return h.draining.Load() }

// WrapUp returns a channel that is closed when Drain begins. Handlers of
// long-lived work (streams, hijacked connections) select on it, or on
// [WrapUp] of their request's context, to finish at a clean protocol
// boundary. Safe for concurrent use, at any time.
func (h *HTTP) WrapUp() <-chan struct{} { return h.wrap.channel() }

// serverKey is the context key under which an HTTP travels in its
// requests' contexts.
type serverKey struct{}

// WrapUp returns a channel that is closed when, during the drain of the
// server handling the request whose context is ctx, the turn of the
// request's connection comes to be told to go away (see HTTP.Spread: at
// the drain's start, or up to Spread later); nil (a channel that is never
// ready) if the request is not served through an [HTTP]. A WebSocket
// handler, for example, selects on it to send a close frame 1001 "going
// away" and end:
//
//	select {
//	case msg := <-incoming:
//		...
//	case <-drain.WrapUp(r.Context()):
//		conn.Close(websocket.StatusGoingAway, "server restarting")
//		return
//	}
func WrapUp(ctx context.Context) <-chan struct{} {
	if ci, ok := ctx.Value(connKey{}).(*connInfo); ok {
		return ci.wrap.channel()
	}
	if h, ok := ctx.Value(serverKey{}).(*HTTP); ok {
		return h.WrapUp()
	}
	return nil
}

// lameDuck marks responses written during the drain, once their
// connection's turn has come (see HTTP.Spread), with "Connection: close".
// The decision is taken when the response header is written, not when the
// request arrived, so a slow response already in flight then carries it
// too, and its connection closes right after it.
func (h *HTTP) lameDuck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A tapped HTTP/2 connection gets its GOAWAYs from the drain: the
		// server would turn "Connection: close" into a GOAWAY of its own
		// at once, which refuses the streams the client is opening.
		lw := &lameDuckWriter{ResponseWriter: w, h: h, ctx: r.Context(), tapped: h.twoPhase && r.ProtoMajor == 2}
		next.ServeHTTP(lw, r)
		if !lw.wroteHeader && !lw.tapped && lw.told() {
			// The server writes the header after we return.
			w.Header().Set("Connection", "close")
		}
	})
}

type lameDuckWriter struct {
	http.ResponseWriter
	h           *HTTP
	ctx         context.Context // the request's, which carries its connection's record
	tapped      bool
	wroteHeader bool
}

// told reports whether the response's connection has been told to go
// away: the drain has begun and the connection's turn has come.
// The record is looked up only once the drain has begun: before, every
// response is an ordinary one and pays nothing for the lookup.
func (w *lameDuckWriter) told() bool {
	if !w.h.draining.Load() {
		return false
	}
	ci, ok := w.ctx.Value(connKey{}).(*connInfo)
	return !ok || ci.turned.Load()
}

func (w *lameDuckWriter) WriteHeader(code int) {
	if !w.wroteHeader && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.wroteHeader = true
		if !w.tapped && w.told() && code != http.StatusSwitchingProtocols {
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *lameDuckWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps net/http's sendfile path for handlers that use io.Copy.
func (w *lameDuckWriter) ReadFrom(r io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

// Flush implements http.Flusher, which streaming handlers assert directly.
func (w *lameDuckWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack implements http.Hijacker for WebSocket and CONNECT handlers. The
// connection it returns stays tracked until the handler closes it.
func (w *lameDuckWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("drain: response writer does not support hijacking")
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &hijackedConn{Conn: c, h: w.h}, brw, nil
}

// hijackedConn is a hijacked connection; closing it ends it for the drain.
type hijackedConn struct {
	net.Conn
	h    *HTTP
	once sync.Once
}

// Close closes the connection; the first call ends it for the drain.
func (c *hijackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.h.forgetHijacked(c.Conn) })
	return err
}

// NetConn returns the hijacked connection itself, like tls.Conn.NetConn.
func (c *hijackedConn) NetConn() net.Conn { return c.Conn }

// Unwrap lets http.ResponseController reach the server's writer.
func (w *lameDuckWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

package drain

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout is the default for HTTP.IdleTimeout.
const DefaultIdleTimeout = time.Second

// pollInterval is how often a drain looks for connections that stayed idle
// long enough to close, and for the end of the drain. Connection state
// changes arrive through http.Server.ConnState, which cannot block, so the
// drain polls rather than being woken per change; 10 ms keeps the old
// generation's exit prompt without measurable cost.
const pollInterval = 10 * time.Millisecond

// HTTP serves an *http.Server so that it can be drained without failing a
// request. Serve through it (not through Server.Serve directly): it wraps
// Server.Handler and Server.ConnState, the first time it serves, to track
// connections and to mark responses during the drain.
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
	// the drain before it is closed. A client that sends its next request
	// within it gets an answer marked "Connection: close"; closing an idle
	// connection always risks racing a request that is just being sent, so
	// the drain waits this long for the client to use or close it first.
	// Zero or negative means DefaultIdleTimeout.
	IdleTimeout time.Duration

	setup     sync.Once
	draining  atomic.Bool
	mu        sync.Mutex
	conns     map[net.Conn]*connInfo
	listeners map[net.Listener]struct{}
	serving   sync.WaitGroup // Serve calls still in their accept loop
	drainedAt time.Time
	ended     int
	open      int
}

type connInfo struct {
	state http.ConnState
	since time.Time // when it entered state
}

// Serve accepts connections on ln and serves them with Server, like
// http.Server.Serve. It returns http.ErrServerClosed once Drain has begun.
func (h *HTTP) Serve(ln net.Listener) error {
	h.init()
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
	err := h.Server.Serve(ln)
	if h.draining.Load() {
		// Drain closed the listener to stop accepting; that is a clean end.
		return http.ErrServerClosed
	}
	return err
}

// ServeTLS is Serve for TLS connections; see http.Server.ServeTLS.
func (h *HTTP) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	h.init()
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
	err := h.Server.ServeTLS(ln, certFile, keyFile)
	if h.draining.Load() {
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
		h.listeners = make(map[net.Listener]struct{})
		next := h.Server.Handler
		if next == nil {
			next = http.DefaultServeMux
		}
		h.Server.Handler = h.lameDuck(next)
		userHook := h.Server.ConnState
		h.Server.ConnState = func(c net.Conn, s http.ConnState) {
			h.track(c, s)
			if userHook != nil {
				userHook(c, s)
			}
		}
	})
}

func (h *HTTP) track(c net.Conn, s http.ConnState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch s {
	case http.StateNew:
		h.conns[c] = &connInfo{state: s, since: time.Now()}
		if h.draining.Load() {
			h.open++
		}
	case http.StateActive, http.StateIdle:
		if ci := h.conns[c]; ci != nil {
			ci.state, ci.since = s, time.Now()
		}
	case http.StateHijacked, http.StateClosed:
		// A hijacked connection is the handler's from now on; tracking it
		// is the job of a hijack-aware drainer.
		if _, ok := h.conns[c]; ok {
			delete(h.conns, c)
			if h.draining.Load() {
				h.ended++
			}
		}
	}
}

// Drain stops accepting, lets requests in flight finish, closes each
// keep-alive connection after its next response (which carries
// "Connection: close") or after it stayed idle for IdleTimeout, and returns
// when no connection is left. If ctx is done first, it closes the remaining
// connections, counts those busy with a request as cut, and returns
// ctx.Err() with the report.
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
	// response.
	h.mu.Lock()
	h.draining.Store(true)
	h.drainedAt = start
	h.open = len(h.conns)
	listeners := h.listeners
	h.listeners = map[net.Listener]struct{}{}
	h.mu.Unlock()
	for ln := range listeners {
		ln.Close()
	}
	// A connection accepted just before the close is registered (its
	// StateNew hook runs) by the accept loop before that loop returns; until
	// every loop has returned, an empty connection set does not mean the
	// drain is done. Exiting earlier would drop such a connection unanswered.
	accepting := make(chan struct{})
	go func() { h.serving.Wait(); close(accepting) }()

	report := func(cut int) Report {
		h.mu.Lock()
		defer h.mu.Unlock()
		return Report{Name: name, Open: h.open, Ended: h.ended, Cut: cut, Duration: time.Since(start)}
	}

	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	acceptDone := false
	for {
		acceptDone = acceptDone || isClosed(accepting)
		if h.closeIdle(idle) == 0 && acceptDone {
			// Nothing is left; Shutdown only lets Serve return and releases
			// the server's resources.
			err := h.Server.Shutdown(ctx)
			return report(0), err
		}
		wake := accepting
		if acceptDone {
			wake = nil
		}
		select {
		case <-tick.C:
		case <-wake: // look again at once
		case <-ctx.Done():
			cut := h.busy()
			// Close also closes connections the tracking has not seen yet,
			// and makes the accept loops return.
			h.Server.Close()
			<-accepting
			return report(cut), fmt.Errorf("drain %s: %d connection(s) cut at the deadline: %w", name, cut, ctx.Err())
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// closeIdle closes connections that have been idle (or new without a
// request) for at least idle since the later of their last state change and
// the start of the drain, and returns how many connections remain.
func (h *HTTP) closeIdle(idle time.Duration) int {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for c, ci := range h.conns {
		if ci.state != http.StateIdle && ci.state != http.StateNew {
			continue
		}
		since := ci.since
		if since.Before(h.drainedAt) {
			since = h.drainedAt
		}
		if now.Sub(since) >= idle {
			// The server sees the close and reports StateClosed, which
			// counts the connection as ended.
			c.Close()
		}
	}
	return len(h.conns)
}

func (h *HTTP) busy() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ci := range h.conns {
		if ci.state == http.StateActive {
			n++
		}
	}
	return n
}

// Draining reports whether Drain has begun.
func (h *HTTP) Draining() bool { return h.draining.Load() }

// lameDuck marks responses written during the drain with "Connection:
// close". The decision is taken when the response header is written, not
// when the request arrived, so a slow response already in flight when the
// drain begins carries it too, and its connection closes right after it.
func (h *HTTP) lameDuck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lw := &lameDuckWriter{ResponseWriter: w, draining: &h.draining}
		next.ServeHTTP(lw, r)
		if !lw.wroteHeader && h.draining.Load() {
			// The server writes the header after we return.
			w.Header().Set("Connection", "close")
		}
	})
}

type lameDuckWriter struct {
	http.ResponseWriter
	draining    *atomic.Bool
	wroteHeader bool
}

func (w *lameDuckWriter) WriteHeader(code int) {
	if !w.wroteHeader && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.wroteHeader = true
		if w.draining.Load() && code != http.StatusSwitchingProtocols {
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

// Hijack implements http.Hijacker for WebSocket and CONNECT handlers.
func (w *lameDuckWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("drain: response writer does not support hijacking")
	}
	return hj.Hijack()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *lameDuckWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

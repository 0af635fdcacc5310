//lint:file-ignore SA1019 x/net's deprecated http2.ClientConn is the one HTTP/2 client that runs over a net.Conn we dial and never resends a request: net/http's Transport (and x/net's) retry a request a GOAWAY refused, which would hide exactly the failures an upgrade causes.

package main

// The load clients for the kinds that internal/loadgen does not speak:
// h2c, HTTP/2 over TLS, gRPC unary and WebSocket echo (wsclient.go). Each
// one drives t.Conns connections, paced to t.Rate requests per second in
// all, and never sends a request twice: a request the client library would
// have resent on its own is recorded as failed.
//
// Pacing: connection i sends its requests every Conns/Rate seconds, the
// connections offset from each other by 1/Rate so that the load is even.
// A request starts at its scheduled time, or at once if the previous one
// ran late, so that a connection catches up after a slow response and
// the rate holds; a connection more than maxBehind late (a server that
// stopped) drops the slots it missed rather than send them in one burst.
// Requests on one connection are sequential, as loadgen's are.
//
// The connections are dialled before the first request, so that the
// first requests do not pay for 32 handshakes at once. A connection that
// must be redialled later is dialled lazily, by the next request, whose
// latency includes the dial (and TLS handshake): that is what a user
// whose connection the server ended pays, and what loadgen does for
// HTTP/1.1.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hitlessgo/hitless/internal/timeline"
)

// target is what a client drives.
type target struct {
	Addr  string      // host:port
	TLS   *tls.Config // non-nil for HTTP/2 over TLS
	Rate  int         // requests (or messages) per second, over all connections
	Conns int         // connections
}

// kindClient drives one traffic kind until ctx is done, never retrying,
// and returns every request it started, in order of Start.
type kindClient func(ctx context.Context, t target) ([]timeline.Request, error)

// clients maps kind names to clients; main.go adds the HTTP/1.1 and raw
// TCP kinds in its init.
var clients = map[string]kindClient{
	"h2c":            h2Client(false),
	"h2-tls":         h2Client(true),
	"grpc-unary":     grpcUnary,
	"websocket-echo": wsEcho,
}

// requestTimeout bounds one request (dial included). Requests in flight
// when ctx ends are let finish within it rather than cut, which would
// count as failures the server did not cause.
const requestTimeout = 5 * time.Second

// onFailure, if set before the clients start, is told why each failed
// request failed, from the clients' goroutines at once: the bench or a
// test can show the first few reasons.
var onFailure func(client string, r timeline.Request, err error)

func failure(client string, r timeline.Request, err error) {
	if err != nil && onFailure != nil {
		onFailure(client, r, err)
	}
}

// maxBehind is how late a connection may run and still catch up.
const maxBehind = 250 * time.Millisecond

// pacer schedules one connection's requests.
type pacer struct {
	next  time.Time
	every time.Duration
}

// wait sleeps until the next request is due (at once if it is late) and
// reports whether ctx is still live.
func (p *pacer) wait(ctx context.Context) bool {
	if d := time.Until(p.next); d > 0 {
		tm := time.NewTimer(d)
		select {
		case <-ctx.Done():
			tm.Stop()
			return false
		case <-tm.C:
		}
	} else if -d > maxBehind {
		p.next = time.Now() // far behind: drop the slots missed
	}
	p.next = p.next.Add(p.every)
	return ctx.Err() == nil
}

// connLoop is one connection's client: it returns the requests it made.
type connLoop func(ctx context.Context, id int, p *pacer) []timeline.Request

// drive runs t.Conns connection loops until ctx is done and merges what
// they saw.
func drive(ctx context.Context, t target, loop connLoop) ([]timeline.Request, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	every := time.Duration(int64(t.Conns) * int64(time.Second) / int64(t.Rate))
	start := time.Now()
	results := make([][]timeline.Request, t.Conns)
	var wg sync.WaitGroup
	for i := range t.Conns {
		p := &pacer{next: start.Add(time.Duration(i) * every / time.Duration(t.Conns)), every: every}
		wg.Go(func() { results[i] = loop(ctx, i, p) })
	}
	wg.Wait()
	all := slices.Concat(results...)
	slices.SortFunc(all, func(a, b timeline.Request) int { return a.Start.Compare(b.Start) })
	return all, nil
}

// check refuses a target with no load, or off this machine: load must
// never leave it.
func (t target) check() error {
	if t.Rate <= 0 || t.Conns <= 0 {
		return fmt.Errorf("bench: rate %d and conns %d must be positive", t.Rate, t.Conns)
	}
	host, _, err := net.SplitHostPort(t.Addr)
	if err != nil {
		return fmt.Errorf("bench: address %q: %w", t.Addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("bench: %q is not a loopback address", t.Addr)
	}
	return nil
}

// predial dials n connections at once, bounded by requestTimeout. One that
// fails is left nil (zero) for its first request to dial, and to fail
// on if it still cannot.
func predial[C comparable](ctx context.Context, n int, dial func(context.Context) (C, error)) []C {
	ctx, cancel := requestCtx(ctx)
	defer cancel()
	conns := make([]C, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() { conns[i], _ = dial(ctx) })
	}
	wg.Wait()
	return conns
}

// requestCtx bounds one request but outlives ctx, so that a request in
// flight when the run ends is answered, not cancelled.
func requestCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
}

// h2Client sends GET / over HTTP/2, one x/net ClientConn per connection,
// whose RoundTrip never resends (the retry loop is in Transport, unused
// here). When the connection can take no new request (the server's
// GOAWAY arrived), it is closed and the next request dials another; so
// does a request that found the connection unusable in the instant
// between that check and taking a stream ("client conn not usable"): it
// was never sent. A request the GOAWAY refused after it was sent
// ("graceful shutdown GOAWAY") is one Transport would have resent: it
// counts as failed.
func h2Client(useTLS bool) kindClient {
	return func(ctx context.Context, t target) ([]timeline.Request, error) {
		scheme := "http"
		var tlsConf *tls.Config
		if useTLS {
			if t.TLS == nil {
				return nil, errors.New("bench: h2-tls needs a TLS config")
			}
			scheme = "https"
			tlsConf = t.TLS.Clone()
			tlsConf.NextProtos = []string{"h2"}
			if tlsConf.ServerName == "" {
				tlsConf.ServerName, _, _ = net.SplitHostPort(t.Addr)
			}
			if tlsConf.ClientSessionCache == nil {
				// As browsers do: a reconnection offers its session for
				// resumption, which a new generation takes only if it
				// shares the old one's session ticket keys.
				tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(t.Conns)
			}
		}
		url := scheme + "://" + t.Addr + "/"
		tr := &http2.Transport{AllowHTTP: true}
		dial := func(ctx context.Context) (*http2.ClientConn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", t.Addr)
			if err != nil {
				return nil, err
			}
			if tlsConf != nil {
				tc := tls.Client(c, tlsConf)
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return nil, err
				}
				if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
					c.Close()
					return nil, fmt.Errorf("ALPN chose %q, not h2", p)
				}
				c = tc
			}
			cc, err := tr.NewClientConn(c)
			if err != nil {
				c.Close()
				return nil, err
			}
			return cc, nil
		}
		// redial opens the connection a request needs because its last
		// one ended, and counts the time in the request's Reconnect.
		redial := func(ctx context.Context, r *timeline.Request) (*http2.ClientConn, error) {
			start := time.Now()
			cc, err := dial(ctx)
			r.Reconnect += time.Since(start)
			return cc, err
		}
		if err := t.check(); err != nil {
			return nil, err
		}
		conns := predial(ctx, t.Conns, dial)
		return drive(ctx, t, func(ctx context.Context, id int, p *pacer) []timeline.Request {
			var out []timeline.Request
			cc := conns[id]
			defer func() {
				if cc != nil {
					cc.Close()
				}
			}()
			for p.wait(ctx) {
				if cc != nil && !cc.CanTakeNewRequest() {
					cc.Close()
					cc = nil
				}
				rctx, cancel := requestCtx(ctx)
				r := timeline.Request{Start: time.Now()}
				pid, err := func() (int, error) {
					if cc == nil {
						var err error
						cc, err = redial(rctx, &r)
						if err != nil {
							return 0, err
						}
					}
					req, err := http.NewRequestWithContext(rctx, "GET", url, nil)
					if err != nil {
						return 0, err
					}
					resp, err := cc.RoundTrip(req)
					if err != nil && isUnsent(err) {
						// The GOAWAY arrived after CanTakeNewRequest and
						// before the request took a stream: it never left
						// this process, and the client had been told to
						// go elsewhere in time. Sending it on a new
						// connection is what any client does, not a
						// resend.
						cc.Close()
						cc, err = redial(rctx, &r)
						if err != nil {
							return 0, err
						}
						resp, err = cc.RoundTrip(req)
					}
					if err != nil {
						return 0, err
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
					switch {
					case err != nil:
						return pid, err
					case resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2:
						return pid, fmt.Errorf("%s %s", resp.Proto, resp.Status)
					}
					return pid, nil
				}()
				r.Latency, r.PID, r.Failed = time.Since(r.Start), pid, err != nil
				cancel()
				failure(scheme, r, err)
				out = append(out, r)
				if err != nil && cc != nil {
					// Its state is unknown now; the next request starts
					// on a fresh connection.
					cc.Close()
					cc = nil
				}
			}
			return out
		})
	}
}

// errTransparentRetry fails a call that gRPC answered only by resending
// it: its first attempt met a connection the server's GOAWAY had closed.
var errTransparentRetry = errors.New("answered only after gRPC's transparent retry")

// callKey marks a call's context with its *callMarks.
type callKey struct{}

// callMarks is what grpc-go's stats say of one call.
type callMarks struct {
	retried atomic.Bool  // gRPC made a transparent retry attempt for it
	picked  atomic.Int64 // when (UnixNano) it got a connection after waiting for one; 0 if it never waited
}

// retrySpotter is a stats handler that sees gRPC's transparent retries
// (of RPCs a GOAWAY kept from the server, which grpc-go resends whatever
// WithDisableRetry says) and calls that had to wait for a connection (the
// one they would have used had gone away, and grpc-go was opening the
// next), and marks the call they belong to. The attempt's context
// descends from the call's, so the mark is found there.
type retrySpotter struct{}

func (retrySpotter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (retrySpotter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	m, ok := ctx.Value(callKey{}).(*callMarks)
	if !ok {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		if s.IsTransparentRetryAttempt {
			m.retried.Store(true)
		}
	case *stats.DelayedPickComplete:
		m.picked.CompareAndSwap(0, time.Now().UnixNano())
	}
}
func (retrySpotter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (retrySpotter) HandleConn(context.Context, stats.ConnStats)                       {}

// grpcUnary calls hitless.example.Echo/Echo, one ClientConn per
// connection (gRPC reconnects it itself after a GOAWAY, on the next
// call), with configured retries off and transparent retries, which
// cannot be turned off, counted as failures. The answer "<pid>: <text>"
// names the serving process.
func grpcUnary(ctx context.Context, t target) ([]timeline.Request, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	conns := make([]*grpc.ClientConn, t.Conns)
	defer func() {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
	}()
	for i := range conns {
		cc, err := grpc.NewClient("passthrough:///"+t.Addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDisableRetry(), grpc.WithStatsHandler(retrySpotter{}))
		if err != nil {
			return nil, err
		}
		conns[i] = cc
		cc.Connect()
	}
	// The first calls should not pay for the connections' set-up; a
	// connection not ready in time is left to its first call.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	for _, cc := range conns {
		for s := cc.GetState(); s != connectivity.Ready && cc.WaitForStateChange(wctx, s); s = cc.GetState() {
		}
	}
	cancel()
	return drive(ctx, t, func(ctx context.Context, id int, p *pacer) []timeline.Request {
		cc := conns[id]
		var out []timeline.Request
		for n := 0; p.wait(ctx); n++ {
			marks := new(callMarks)
			rctx, cancel := requestCtx(ctx)
			rctx = context.WithValue(rctx, callKey{}, marks)
			text := fmt.Sprintf("conn %d call %d", id, n)
			reply := new(wrapperspb.StringValue)
			r := timeline.Request{Start: time.Now()}
			err := cc.Invoke(rctx, "/hitless.example.Echo/Echo", wrapperspb.String(text), reply)
			r.Latency = time.Since(r.Start)
			if at := marks.picked.Load(); at != 0 {
				r.Reconnect = time.Unix(0, at).Sub(r.Start)
			}
			cancel()
			pid, rest, _ := strings.Cut(reply.GetValue(), ": ")
			r.PID, _ = strconv.Atoi(pid)
			switch {
			case err != nil:
			case marks.retried.Load():
				err = errTransparentRetry
			case rest != text:
				err = fmt.Errorf("answer %q for %q", reply.GetValue(), text)
			}
			r.Failed = err != nil
			failure("grpc", r, err)
			out = append(out, r)
		}
		return out
	})
}

// isUnsent reports whether err is x/net's "client conn not usable": the
// request did not get a stream, so no byte of it was written. x/net does
// not export the error; its text is stable since 2016.
func isUnsent(err error) bool { return strings.Contains(err.Error(), "http2: client conn not usable") }

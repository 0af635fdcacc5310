package main

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// carrier serves each QUIC connection with an http3.Server of its own and
// drains them one by one, each with a GOAWAY that no request crosses.
//
// quic-go's Server.Shutdown sends a single GOAWAY naming the last request
// stream it accepted, and rejects every stream above it. A client that
// sends one request at a time on a connection opens its next stream only
// once it has read the whole response to the last one; so a GOAWAY sent
// while a request is in progress, and delivered before that request's
// response ends, reaches the client before its next request leaves, and
// the client sends that request on a new connection instead. The request
// in progress (or the first to arrive after the drain began) is the
// GOAWAY's carrier: the carrier shuts its connection's Server down, and
// holds back the end of its response for notice, the time the GOAWAY
// (written by quic-go on another stream, from another goroutine) needs to
// leave first.
//
// A connection on which no request arrives gets its GOAWAY once it has been
// idle for idle: a client that sends a request just as that GOAWAY leaves
// has it rejected. Waiting for idle makes that unlikely, but only a
// two-step GOAWAY in quic-go would make it impossible (see the package
// documentation).
type carrier struct {
	h      http.Handler
	notice time.Duration
	idle   time.Duration
	ln     *quic.Listener  // set before serve
	tr     *quic.Transport // set before serve

	mu       sync.Mutex
	conns    map[*connState]struct{} // from the handshake's start to the connection's end
	draining bool
	start    time.Time // of the drain
	ended    chan struct{}
	rep      carrierReport
}

// connState is one connection's: what the carrier knows of its requests.
type connState struct {
	conn   *quic.Conn    // nil until the handshake is done
	srv    *http3.Server // its own
	active int           // requests in progress
	last   time.Time     // when the last request ended, or the connection was accepted
	goAway time.Time     // when its Shutdown began; zero before
	cut    bool
}

// carrierReport counts what one drain did to the connections.
type carrierReport struct {
	Open, Ended, Cut int
	LastEnded        time.Duration
	carried, idle    int // GOAWAYs carried by a request, sent to an idle connection
}

type connKey struct{}

func newCarrier(h http.Handler, notice, idle time.Duration) *carrier {
	return &carrier{h: h, notice: notice, idle: idle, conns: make(map[*connState]struct{}), ended: make(chan struct{}, 1)}
}

// connContext is the quic.Transport's ConnContext: it tracks a connection
// from its first packet, so that the drain also waits for handshakes that
// were under way when the previous generation handed the socket over
// (the router passes their packets to this generation until they end).
func (c *carrier) connContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	st := &connState{}
	c.mu.Lock()
	c.conns[st] = struct{}{}
	if c.draining {
		c.rep.Open++
	}
	c.mu.Unlock()
	// ctx ends when the connection does, or its handshake fails.
	context.AfterFunc(ctx, func() { c.remove(st) })
	return context.WithValue(ctx, connKey{}, st), nil
}

func (c *carrier) remove(st *connState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.conns[st]; !ok {
		return
	}
	delete(c.conns, st)
	if c.draining {
		if !st.cut {
			c.rep.Ended++
			c.rep.LastEnded = time.Since(c.start)
		}
		select {
		case c.ended <- struct{}{}:
		default:
		}
	}
}

// serve accepts connections until the listener is closed.
func (c *carrier) serve(ln *quic.Listener) error {
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			return err
		}
		st, _ := conn.Context().Value(connKey{}).(*connState)
		if st == nil { // not from this Transport's ConnContext; cannot happen
			conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeInternalError), "")
			continue
		}
		srv := &http3.Server{Handler: c.wrap(st)}
		c.mu.Lock()
		st.conn, st.srv, st.last = conn, srv, time.Now()
		c.mu.Unlock()
		go func() {
			srv.ServeQUICConn(conn)
			// The connection is the caller's to close (ServeQUICConn
			// returns when it has ended, or the server was closed).
			conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		}()
	}
}

// wrap is the handler of st's connection: c.h, and the carrier's part.
func (c *carrier) wrap(st *connState) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		st.active++
		if c.draining && st.goAway.IsZero() {
			c.rep.carried++
			c.goAwayLocked(st)
		}
		c.mu.Unlock()
		defer func() {
			// The end of the response (its last data and FIN go out when
			// the handler returns) waits until the GOAWAY has had notice
			// to leave. The check and the decrement are one step: once
			// active is down, the drain no longer takes this request for
			// a carrier, and while it is up, the drain's GOAWAY is seen
			// here.
			c.mu.Lock()
			since := st.goAway
			if since.IsZero() {
				c.doneLocked(st)
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			if d := c.notice - time.Since(since); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-r.Context().Done():
				}
				t.Stop()
			}
			c.mu.Lock()
			c.doneLocked(st)
			c.mu.Unlock()
		}()
		c.h.ServeHTTP(w, r)
	})
}

// doneLocked records the end of a request on st's connection. c.mu is held.
func (c *carrier) doneLocked(st *connState) {
	st.active--
	st.last = time.Now()
}

// goAwayLocked starts the graceful shutdown of st's connection: quic-go
// sends GOAWAY naming the last request it accepted, and the client closes
// the connection once its requests are answered. c.mu is held.
func (c *carrier) goAwayLocked(st *connState) {
	st.goAway = time.Now()
	srv := st.srv
	// Shutdown returns when the connection has ended; the drain's deadline
	// is the carrier's to enforce (it closes the connection).
	go srv.Shutdown(context.Background())
}

// Shutdown drains every connection: those with a request in progress get
// their GOAWAY now (that request is the carrier), the others with their
// next request, or once idle. It returns when every connection has ended,
// or closes those left when ctx is done; then it closes the listener and
// the transport.
func (c *carrier) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.draining = true
	c.start = time.Now()
	c.rep.Open += len(c.conns)
	for st := range c.conns {
		if st.srv != nil && st.active > 0 && st.goAway.IsZero() {
			c.rep.carried++
			c.goAwayLocked(st)
		}
	}
	c.mu.Unlock()

	tick := time.NewTicker(max(c.idle/10, 10*time.Millisecond))
	defer tick.Stop()
	var err error
	for {
		c.mu.Lock()
		now := time.Now()
		for st := range c.conns {
			if st.srv != nil && st.active == 0 && st.goAway.IsZero() && now.Sub(st.last) >= c.idle {
				c.rep.idle++
				c.goAwayLocked(st)
			}
		}
		n := len(c.conns)
		c.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-c.ended:
			continue
		case <-tick.C:
			continue
		case <-ctx.Done():
			err = ctx.Err()
		}
		c.mu.Lock()
		var cut []*quic.Conn
		for st := range c.conns {
			st.cut = true
			c.rep.Cut++
			if st.conn != nil {
				cut = append(cut, st.conn)
			}
		}
		c.mu.Unlock()
		for _, conn := range cut {
			conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "drain deadline")
		}
		break
	}
	// Handshakes still under way (cut above) end with the transport.
	c.ln.Close()
	c.tr.Close()
	return err
}

func (c *carrier) report() carrierReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rep
}

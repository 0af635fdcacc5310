package main

// The WebSocket echo client.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/hitlessgo/hitless/internal/loadgen"
	"github.com/hitlessgo/hitless/internal/timeline"
)

// wsEcho sends a text message on a WebSocket to /ws and waits for its
// echo, one message at a time per connection. The server greets each
// connection with "HELLO <pid>". When a generation drains it sends
// "BYE <pid>" and goes on echoing: the client finishes the message it has
// outstanding (a BYE read while waiting is not its echo, which still
// comes), closes with 1000 and sends the next message on a new
// connection, to the next generation (no message was lost, so this is no
// retry). A server that closes with 1001 "going away" instead (one whose
// clients were not expected to know BYE) is followed the same way, and a
// message that crossed that close frame is never echoed. A message sent
// and never echoed is a failure, and is not resent.
//
// Leaving does not hold up the next message: the close handshake runs on
// its own goroutine while the next message dials, as a browser's close()
// does. A close handshake that breaks is recorded as a failed request
// although no message was lost, as raw-tcp records a broken leave: an
// upgrade must not show clients errors of any kind.
func wsEcho(ctx context.Context, t target) ([]timeline.Request, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	conns := predial(ctx, t.Conns, func(ctx context.Context) (*wsConn, error) { return wsDial(ctx, t.Addr) })
	return drive(ctx, t, func(ctx context.Context, id int, p *pacer) []timeline.Request {
		var (
			out     []timeline.Request
			leaving sync.WaitGroup
			mu      sync.Mutex // guards out while leaves run
		)
		record := func(r timeline.Request) {
			mu.Lock()
			defer mu.Unlock()
			out = append(out, r)
		}
		leave := func(c *wsConn) {
			leaving.Go(func() {
				start := time.Now()
				if err := c.close(websocket.StatusNormalClosure); err != nil {
					r := timeline.Request{Start: start, Latency: time.Since(start), Failed: true, PID: c.pid}
					failure("ws", r, fmt.Errorf("close handshake: %w", err))
					record(r)
				}
			})
		}
		c := conns[id]
		for n := 0; p.wait(ctx); n++ {
			if c != nil && c.ended() {
				if c.bye {
					leave(c)
				} else {
					c.close(websocket.StatusNormalClosure) // already closed by the server
				}
				c = nil
			}
			rctx, cancel := requestCtx(ctx)
			r := timeline.Request{Start: time.Now()}
			msg := []byte(fmt.Sprintf("conn %d message %d", id, n))
			send := func() error {
				if c == nil {
					var err error
					began := time.Now()
					c, err = wsDial(rctx, t.Addr)
					r.Reconnect += time.Since(began)
					if err != nil {
						return err
					}
				}
				r.PID = c.pid
				return c.conn.Write(rctx, websocket.MessageText, msg)
			}
			err := send()
			if err != nil && errors.Is(err, net.ErrClosed) && c != nil && c.goneAway() {
				// The library had answered the server's close 1001 (which
				// arrived after ended() looked) before this message could
				// be written: nothing was sent, so it goes to the next
				// generation, as if ended() had seen the close. Not a
				// resend; its latency includes the reconnection.
				c.close(websocket.StatusNormalClosure)
				c = nil
				err = send()
			}
			if err == nil {
				err = c.echo(rctx, msg)
			}
			r.Latency, r.Failed = time.Since(r.Start), err != nil
			cancel()
			failure("ws", r, err)
			record(r)
			switch {
			case err != nil && c != nil:
				c.close(websocket.StatusNormalClosure)
				c = nil
			case c != nil && c.bye:
				// Nothing is outstanding: go now, so that the old
				// generation can exit, rather than at the next message.
				leave(c)
				c = nil
			}
		}
		if c != nil {
			leave(c)
		}
		leaving.Wait()
		return out
	})
}

// wsConn is one WebSocket with a goroutine reading it, so that the
// server's BYE or close frame is seen as soon as it arrives, before the
// next message is sent into it.
type wsConn struct {
	conn  *websocket.Conn
	raw   net.Conn // under conn, to peek at
	pid   int
	bye   bool // the server has sent BYE
	reads chan wsRead
	done  chan struct{} // closed when the reader has returned
	end   error         // the read error that ended the connection, once seen
}

// closeWait bounds the wait for a frame the socket holds but the reader
// has not delivered.
const closeWait = 50 * time.Millisecond

type wsRead struct {
	data []byte
	err  error
}

func wsDial(ctx context.Context, addr string) (*wsConn, error) {
	var raw net.Conn
	tr := &http.Transport{
		DisableKeepAlives: true, // one TCP connection per WebSocket, never a pooled one
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			raw = c
			return c, err
		},
	}
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		return nil, err
	}
	c := &wsConn{conn: conn, raw: raw, reads: make(chan wsRead, 1), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := conn.Read(context.Background())
			c.reads <- wsRead{data, err}
			if err != nil {
				return
			}
		}
	}()
	hello, err := c.next(ctx)
	pid, perr := strconv.Atoi(strings.TrimPrefix(string(hello), "HELLO "))
	if err == nil && perr != nil {
		err = fmt.Errorf("hello %q", hello)
	}
	if err != nil {
		c.close(websocket.StatusProtocolError)
		return nil, err
	}
	c.pid = pid
	return c, nil
}

// next returns the next message, or the error that ended the connection.
func (c *wsConn) next(ctx context.Context) ([]byte, error) {
	if c.end != nil {
		return nil, c.end
	}
	select {
	case r := <-c.reads:
		if r.err != nil {
			c.end = r.err
		}
		return r.data, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ended reports whether the connection should be left before the next
// message: the server sent BYE, or ended it with close 1001, while it was
// idle (only BYE or a close can arrive then: nothing is owed). Any other
// end, or another message, is left for the next message to fail on: it is
// a failure the server caused, not a clean hand-over.
func (c *wsConn) ended() bool {
	if c.end == nil && !c.bye {
		var r wsRead
		got := false
		select {
		case r = <-c.reads:
			got = true
		default:
			// Bytes in the socket that the reader goroutine has not had
			// the CPU to read yet (common while a new generation starts)
			// are a BYE or a close on its way: wait for it rather than
			// send into it.
			if c.raw != nil && loadgen.PeerClosed(c.raw) {
				tm := time.NewTimer(closeWait)
				select {
				case r = <-c.reads:
					got = true
				case <-tm.C:
				}
				tm.Stop()
			}
		}
		switch {
		case !got:
		case r.err != nil:
			c.end = r.err
		case c.isBye(r.data):
			c.bye = true
		default:
			c.end = fmt.Errorf("unexpected message %q", r.data)
		}
	}
	return c.bye || c.end != nil && websocket.CloseStatus(c.end) == websocket.StatusGoingAway
}

// isBye reports whether data is this connection's BYE.
func (c *wsConn) isBye(data []byte) bool { return string(data) == "BYE "+strconv.Itoa(c.pid) }

// echo waits for msg's echo. A BYE that arrives first is noted and the
// wait goes on: the server echoes every message it received before the
// client closed.
func (c *wsConn) echo(ctx context.Context, msg []byte) error {
	for {
		got, err := c.next(ctx)
		switch {
		case err != nil:
			return err
		case string(got) == string(msg):
			// Checked first: a message that is itself "BYE <pid>" is
			// echoed as such, and if this copy was the BYE, the echo
			// that follows it is taken for the BYE when idle, to the
			// same effect.
			return nil
		case !c.bye && c.isBye(got):
			c.bye = true
		default:
			return fmt.Errorf("echo %q for %q", got, msg)
		}
	}
}

// goneAway waits (up to closeWait) for the reader to deliver the error
// that ended the connection and reports whether it was close 1001.
func (c *wsConn) goneAway() bool {
	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	for c.end == nil {
		if _, err := c.next(ctx); err != nil && c.end == nil {
			return false // timed out: the reader saw nothing
		}
	}
	return websocket.CloseStatus(c.end) == websocket.StatusGoingAway
}

// close ends the connection, with a close handshake unless the server
// has already closed it, and waits (bounded) for its reader. The error is
// the close handshake's: nil if the server sent a close frame back,
// whatever its code (a server that closed with 1001 as the client closed
// has ended the handshake as well as an answer would).
func (c *wsConn) close(code websocket.StatusCode) error {
	var err error
	if c.end == nil {
		// A clean close handshake, so the server sees a client that left,
		// not a broken connection.
		if err = c.conn.Close(code, ""); websocket.CloseStatus(err) != -1 {
			err = nil
		}
	}
	c.conn.CloseNow()
	tm := time.NewTimer(requestTimeout)
	defer tm.Stop()
	for {
		select {
		case <-c.reads: // unblocks the reader, which then sees the close
		case <-c.done:
			return err
		case <-tm.C:
			return err
		}
	}
}

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
	"time"

	"github.com/coder/websocket"

	"github.com/hitlessgo/hitless/internal/loadgen"
	"github.com/hitlessgo/hitless/internal/timeline"
)

// wsEcho sends a text message on a WebSocket to /ws and waits for its
// echo. The server greets each connection with "HELLO <pid>". When a
// generation drains it closes with 1001 "going away": the connection is
// dropped and the next message dials the next generation (no message was
// lost, so this is no retry). A message sent and never echoed, for
// example one that crossed that close frame, is a failure, and is not
// resent.
func wsEcho(ctx context.Context, t target) ([]timeline.Request, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	conns := predial(ctx, t.Conns, func(ctx context.Context) (*wsConn, error) { return wsDial(ctx, t.Addr) })
	return drive(ctx, t, func(ctx context.Context, id int, p *pacer) []timeline.Request {
		var out []timeline.Request
		c := conns[id]
		defer func() {
			if c != nil {
				c.close(websocket.StatusNormalClosure)
			}
		}()
		for n := 0; p.wait(ctx); n++ {
			if c != nil && c.ended() {
				c.close(websocket.StatusNormalClosure)
				c = nil
			}
			rctx, cancel := requestCtx(ctx)
			r := timeline.Request{Start: time.Now()}
			msg := []byte(fmt.Sprintf("conn %d message %d", id, n))
			send := func() error {
				if c == nil {
					var err error
					c, err = wsDial(rctx, t.Addr)
					dialed("ws", r.Start, err)
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
				var got []byte
				if got, err = c.next(rctx); err == nil && string(got) != string(msg) {
					err = fmt.Errorf("echo %q for %q", got, msg)
				}
			}
			r.Latency, r.Failed = time.Since(r.Start), err != nil
			cancel()
			failure("ws", r, err)
			out = append(out, r)
			if err != nil && c != nil {
				c.close(websocket.StatusNormalClosure)
				c = nil
			}
		}
		return out
	})
}

// wsConn is one WebSocket with a goroutine reading it, so that the
// server's close frame is seen as soon as it arrives, before the next
// message is sent into it.
type wsConn struct {
	conn  *websocket.Conn
	raw   net.Conn // under conn, to peek at
	pid   int
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

// ended reports whether the server ended the connection with close 1001
// while it was idle (only a close or a break can arrive then: nothing is
// owed). Any other end is left for the next message to fail on: it is a
// failure the server caused, not a clean hand-over.
func (c *wsConn) ended() bool {
	if c.end == nil {
		var r wsRead
		got := false
		select {
		case r = <-c.reads:
			got = true
		default:
			// Bytes in the socket that the reader goroutine has not had
			// the CPU to read yet (common while a new generation starts)
			// are a close on its way: wait for it rather than send into
			// it.
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
		if got {
			if r.err == nil {
				r.err = fmt.Errorf("unexpected message %q", r.data)
			}
			c.end = r.err
		}
	}
	return c.end != nil && websocket.CloseStatus(c.end) == websocket.StatusGoingAway
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

// close ends the connection and waits (bounded) for its reader.
func (c *wsConn) close(code websocket.StatusCode) {
	if c.end == nil {
		// A clean close handshake, so the server sees a client that left,
		// not a broken connection.
		c.conn.Close(code, "")
	}
	c.conn.CloseNow()
	tm := time.NewTimer(requestTimeout)
	defer tm.Stop()
	for {
		select {
		case <-c.reads: // unblocks the reader, which then sees the close
		case <-c.done:
			return
		case <-tm.C:
			return
		}
	}
}

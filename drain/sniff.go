package drain

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
)

// h2Preface is enough of the client preface (h2ClientPreface) to tell an
// HTTP/2 connection with prior knowledge (h2c) from HTTP/1.x: no HTTP/1.x
// request begins with it, PRI being reserved.
var h2Preface = []byte(h2ClientPreface[:len("PRI * HTTP/2.0\r\n")])

// sniffListener marks the connections it accepts that begin with the
// HTTP/2 preface (if h2c) and taps those (if tap; see h2Tap), so that the
// drain sends them a GOAWAY instead of closing them when idle, and its two
// GOAWAYs if tapped. TLS connections (from a listener that makes them) go
// to tapTLS instead.
type sniffListener struct {
	net.Listener
	h2c, tap bool
}

func (l sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		if l.tap {
			return tapTLS(tc), nil
		}
		return c, nil
	}
	if !l.h2c {
		return c, nil
	}
	return &sniffConn{Conn: c, noTap: !l.tap}, nil
}

// sniffConn looks at the first bytes read from a connection; once they are
// the HTTP/2 preface, it passes everything the server reads and writes
// through a tap.
type sniffConn struct {
	net.Conn
	noTap bool                  // mark HTTP/2, but leave it alone (its server is not ours to drain in two phases)
	h2    atomic.Bool           // the preface was seen
	tap   atomic.Pointer[h2Tap] // set by the reading goroutine, used by the writing one too
	head  []byte                // the first bytes, until len(h2Preface) or a mismatch
	known bool                  // only touched by the reading goroutine
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if t := c.tap.Load(); t != nil {
		t.read(p[:n])
		return n, err
	}
	if !c.known && n > 0 {
		before := len(c.head)
		c.head = append(c.head, p[:min(n, len(h2Preface)-len(c.head))]...)
		switch {
		case !bytes.HasPrefix(h2Preface, c.head):
			c.known, c.head = true, nil
		case len(c.head) == len(h2Preface):
			if !c.noTap {
				// net/http reads the whole preface itself; the tap passes
				// over it, counting from the connection's first byte.
				t := newH2Tap(c.Conn)
				t.read(h2Preface[:before])
				t.read(p[:n])
				c.tap.Store(t)
			}
			c.h2.Store(true)
			c.known, c.head = true, nil
		}
	}
	return n, err
}

// Write passes an HTTP/2 server's output through the tap.
func (c *sniffConn) Write(p []byte) (int, error) {
	if t := c.tap.Load(); t != nil {
		return t.write(p)
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps net/http's sendfile path (HTTP/1.x only: an HTTP/2
// server writes frames, through Write).
func (c *sniffConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok && c.tap.Load() == nil {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// CloseWrite keeps net/http's graceful close of HTTP/1.x connections.
func (c *sniffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NetConn returns the underlying connection.
func (c *sniffConn) NetConn() net.Conn { return c.Conn }

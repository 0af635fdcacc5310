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

// prefaceSniffer looks at the first bytes a server reads from a
// connection for the HTTP/2 client preface. Only the reading goroutine
// uses it.
type prefaceSniffer struct {
	head  []byte // the first bytes, until len(h2Preface) or a mismatch
	known bool   // whether the connection is known to be HTTP/2 or not
}

// look takes p, the next bytes the server read, and reports whether they
// complete the preface; then before is how many of its bytes came before
// p. Once the answer is known, look returns false at once.
func (s *prefaceSniffer) look(p []byte) (h2 bool, before int) {
	if s.known || len(p) == 0 {
		return false, 0
	}
	before = len(s.head)
	s.head = append(s.head, p[:min(len(p), len(h2Preface)-len(s.head))]...)
	switch {
	case !bytes.HasPrefix(h2Preface, s.head):
		s.known, s.head = true, nil
	case len(s.head) == len(h2Preface):
		s.known, s.head = true, nil
		return true, before
	}
	return false, 0
}

// tapFrom returns a tap for a connection whose preface the server has just
// read, the last of it in p: servers read the whole preface themselves,
// and the tap passes over it, counting from the connection's first byte.
func tapFrom(c net.Conn, p []byte, before int) *h2Tap {
	t := newH2Tap(c)
	t.read(h2Preface[:before])
	t.read(p)
	return t
}

// sniffConn looks at the first bytes read from a connection; once they are
// the HTTP/2 preface, it passes everything the server reads and writes
// through a tap.
type sniffConn struct {
	net.Conn
	noTap bool                  // mark HTTP/2, but leave it alone (its server is not ours to drain in two phases)
	h2    atomic.Bool           // the preface was seen
	tap   atomic.Pointer[h2Tap] // set by the reading goroutine, used by the writing one too
	sniff prefaceSniffer
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if t := c.tap.Load(); t != nil {
		t.read(p[:n])
		return n, err
	}
	if h2, before := c.sniff.look(p[:n]); h2 {
		if !c.noTap {
			c.tap.Store(tapFrom(c.Conn, p[:n], before))
		}
		c.h2.Store(true)
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

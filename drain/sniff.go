package drain

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
)

// h2Preface is how every HTTP/2 connection with prior knowledge (h2c)
// begins; no HTTP/1.x request begins with it, PRI being reserved.
var h2Preface = []byte("PRI * HTTP/2.0\r\n")

// sniffListener marks the connections it accepts that begin with the
// HTTP/2 preface, so that the drain sends them a GOAWAY instead of closing
// them when idle.
type sniffListener struct{ net.Listener }

func (l sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c}, nil
}

// sniffConn looks at the first bytes read from a connection.
type sniffConn struct {
	net.Conn
	h2    atomic.Bool
	head  []byte // the first bytes, until len(h2Preface) or a mismatch
	known bool   // only touched by the reading goroutine
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.known && n > 0 {
		c.head = append(c.head, p[:min(n, len(h2Preface)-len(c.head))]...)
		switch {
		case !bytes.HasPrefix(h2Preface, c.head):
			c.known, c.head = true, nil
		case len(c.head) == len(h2Preface):
			c.h2.Store(true)
			c.known, c.head = true, nil
		}
	}
	return n, err
}

// ReadFrom keeps net/http's sendfile path.
func (c *sniffConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
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

// Package h2watch follows the HTTP/2 frames a client reads from its
// connection, for tests that must see whether, when and how a server said
// GOAWAY. The bytes must be the frames themselves: a cleartext connection
// (h2c, gRPC without TLS), or a TLS one above its encryption.
package h2watch

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"time"
)

const (
	headerLen = 9
	goAway    = 0x7
)

// Conn is a client's connection whose incoming frames it follows. The
// server sends no preface of its own, so what the client reads is frames
// from the first byte.
type Conn struct {
	net.Conn
	mu      sync.Mutex
	buf     []byte
	codes   []uint32 // the error codes of the GOAWAYs read
	first   time.Time
	end     error
	closing bool
}

// Read reads from the connection and follows the frames read.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p[:n]...)
	for len(c.buf) >= headerLen {
		length := int(c.buf[0])<<16 | int(c.buf[1])<<8 | int(c.buf[2])
		if len(c.buf) < headerLen+length {
			break
		}
		if c.buf[3] == goAway && length >= 8 {
			if len(c.codes) == 0 {
				c.first = time.Now()
			}
			c.codes = append(c.codes, binary.BigEndian.Uint32(c.buf[headerLen+4:headerLen+8]))
		}
		c.buf = c.buf[headerLen+length:]
	}
	if err != nil && c.end == nil && !c.closing {
		c.end = err
	}
	return n, err
}

// GoAways returns the error codes of the GOAWAY frames read so far, in
// order, and when the first one arrived (zero if none has).
func (c *Conn) GoAways() (codes []uint32, first time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint32(nil), c.codes...), c.first
}

// End returns the read error that ended the connection, nil if none has
// or if it came after Closing.
func (c *Conn) End() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.end
}

// Closing says the client is about to close the connection itself: a read
// error from then on is its own doing, not the server's, and End does not
// report it.
func (c *Conn) Closing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
}

// Dialer dials TCP connections and watches each; a client's dial hook.
// Safe for concurrent use.
type Dialer struct {
	mu    sync.Mutex
	conns []*Conn
}

// DialContext dials addr and returns the connection, watched.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	w := &Conn{Conn: c}
	d.mu.Lock()
	d.conns = append(d.conns, w)
	d.mu.Unlock()
	return w, nil
}

// Conns returns the connections dialled so far, in order.
func (d *Dialer) Conns() []*Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*Conn(nil), d.conns...)
}

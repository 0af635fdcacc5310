package drain

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The two-phase GOAWAY of RFC 9113 §6.8. A single GOAWAY, which is all
// net/http's HTTP/2 server sends, names the last stream the server has
// seen; a stream the client opened meanwhile, still on the wire, is refused
// with it. A client that re-sends such a request hides the refusal; one that
// does not (h2load, many proxies and SDKs) fails it. Instead the drain first
// sends a GOAWAY naming the highest possible stream (no stream is refused,
// the client only learns to open no more) followed by a PING, and only once
// the PING's acknowledgement is back, which the client sends after it has
// read the GOAWAY, does the server send its own GOAWAY with the real last
// stream: every stream the client opened before it knew has reached the
// server by then.
//
// net/http's HTTP/2 server has no API to send frames of one's own, so the
// drain puts a tap between it and the connection: the tap follows the
// server's output frame by frame (a frame header says how long the frame
// is) and writes the drain's frames only between two of the server's, and
// follows the input to see the PING's acknowledgement, which the server
// ignores as one it did not ask for (RFC 9113 §6.7 forbids answering it).

const (
	frameHeaderLen = 9
	frameGoAway    = 0x7
	framePing      = 0x6
	flagAck        = 0x1
	// maxStreamID is the highest stream identifier, 2^31-1: a GOAWAY
	// naming it refuses nothing.
	maxStreamID = 1<<31 - 1
)

// h2ClientPreface is what every HTTP/2 client sends before its frames.
const h2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frameCursor follows a stream of HTTP/2 frames that arrives in pieces of
// any size.
type frameCursor struct {
	hdr  [frameHeaderLen]byte
	nhdr int // bytes of the current frame's header seen so far
	left int // once the header is complete: payload bytes not yet seen
}

// atBoundary reports whether the cursor stands between two frames.
func (c *frameCursor) atBoundary() bool { return c.nhdr == 0 }

// inPayload reports whether the cursor is inside a frame's payload.
func (c *frameCursor) inPayload() bool { return c.nhdr == frameHeaderLen }

// next moves the cursor over the start of p: over header bytes until the
// header is complete, or over payload bytes until the payload is. It
// returns how many bytes it took and whether a frame ended there; called
// in a loop, it visits every frame end in p. After a frame ended, its
// header stays readable until the next one begins.
func (c *frameCursor) next(p []byte) (n int, ended bool) {
	if c.nhdr < frameHeaderLen {
		n = copy(c.hdr[c.nhdr:], p)
		c.nhdr += n
		if c.nhdr < frameHeaderLen {
			return n, false
		}
		c.left = c.length()
		if c.left > 0 {
			return n, false
		}
	} else {
		n = min(c.left, len(p))
		c.left -= n
		if c.left > 0 {
			return n, false
		}
	}
	c.nhdr = 0
	return n, true
}

// length is the payload length of the frame whose header the cursor has
// read.
func (c *frameCursor) length() int { return int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2]) }

// frameType is the type of the frame whose header the cursor has read.
func (c *frameCursor) frameType() byte { return c.hdr[3] }

// flags are the flags of the frame whose header the cursor has read.
func (c *frameCursor) flags() byte { return c.hdr[4] }

// h2Tap watches one HTTP/2 connection in both directions for the drain.
// Its write side is called with everything the server writes, its read side
// with everything the server reads.
type h2Tap struct {
	conn net.Conn // the connection the server writes to, for the tap's own frames
	born time.Time

	wmu     sync.Mutex
	out     frameCursor
	started bool       // the server has written a whole frame (its SETTINGS come first)
	pending *injection // the tap's frames, waiting for the end of the server's current frame
	// holding: the server's output since a frame boundary waits in held
	// (see release); the server goes on, reading included.
	holding bool
	held    []byte

	lastRead atomic.Int64 // when the client's bytes last arrived, in ns since born

	// Only the server's reading goroutine touches these.
	in      frameCursor
	skip    int       // bytes of the client preface still to pass over
	payload []byte    // the payload so far of a PING acknowledgement being read
	pings   [2]uint64 // the payloads of the tap's PINGs: the probe, then the one after the notice

	ackOnce [2]sync.Once
	acks    [2]chan struct{} // closed when the PING with the same index is acknowledged

	closeOnce sync.Once
	closed    chan struct{} // the connection has ended
}

// injection is frames of the tap's own, to be written between two of the
// server's.
type injection struct {
	frames []byte
	// hold, if set, holds the server's output back after the frames, until
	// release.
	hold bool
	sent chan struct{} // closed once the frames are written (or failed)
}

// maxHeld bounds the output held back; past it the tap lets it go (and
// the notice then goes out at the next frame boundary, behind it).
const maxHeld = 1 << 20

// newH2Tap taps the connection c that the server writes to; its read side
// expects the connection from its first byte, the client preface.
func newH2Tap(c net.Conn) *h2Tap {
	t := &h2Tap{conn: c, born: time.Now(), skip: len(h2ClientPreface), closed: make(chan struct{})}
	for i := range t.acks {
		t.acks[i] = make(chan struct{})
	}
	// The payloads only have to be ones this connection's client did not
	// make up; random ones also keep them from matching a PING the
	// server sent for its own keep-alive.
	var b [8]byte
	rand.Read(b[:])
	t.pings[0] = binary.BigEndian.Uint64(b[:])
	t.pings[1] = t.pings[0] ^ 1
	return t
}

// write writes p, the server's output, and the tap's pending frames at the
// first frame end in it.
func (t *h2Tap) write(p []byte) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.holding {
		t.follow(p)
		if len(t.held)+len(p) <= maxHeld {
			t.held = append(t.held, p...)
			return len(p), nil
		}
		t.holding = false
		if _, err := t.conn.Write(t.held); err != nil {
			t.held = nil
			return 0, err
		}
		t.held = nil
		return t.conn.Write(p)
	}
	if t.pending == nil {
		t.follow(p)
		return t.conn.Write(p)
	}
	done := 0
	for rest := p; len(rest) > 0; {
		n, ended := t.out.next(rest)
		rest = rest[n:]
		done += n
		if !ended {
			continue
		}
		t.started = true
		if k, err := t.conn.Write(p[:done]); err != nil {
			return k, err
		}
		err := t.injectLocked()
		t.follow(rest)
		if err != nil || len(rest) == 0 {
			return done, err
		}
		if t.holding {
			t.held = append(t.held, rest...)
			return len(p), nil
		}
		k, err := t.conn.Write(rest)
		return done + k, err
	}
	return t.conn.Write(p)
}

// follow moves the output cursor over p, which contains no place the tap
// writes at.
func (t *h2Tap) follow(p []byte) {
	for len(p) > 0 {
		n, ended := t.out.next(p)
		p = p[n:]
		t.started = t.started || ended
	}
}

// send queues frames to go out between two of the server's frames: at
// once if the server stands between frames, else at the end of the frame
// it is writing. The returned channel is closed once they are written (or
// the write failed).
func (t *h2Tap) send(in *injection) <-chan struct{} {
	in.sent = make(chan struct{})
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.pending = in
	if t.started && t.out.atBoundary() {
		t.injectLocked()
	}
	return in.sent
}

// injectLocked writes the pending frames, and begins holding the server's
// output back if they ask for it. The caller holds wmu.
func (t *h2Tap) injectLocked() error {
	in := t.pending
	t.pending = nil
	defer close(in.sent)
	_, err := t.conn.Write(in.frames)
	t.holding = in.hold && err == nil
	return err
}

// release writes frames, then the output held back since the injection
// that began the hold, and ends the hold. If the hold has ended already
// (the held output grew past maxHeld), the frames go out at the next frame
// boundary instead.
func (t *h2Tap) release(frames []byte) <-chan struct{} {
	t.wmu.Lock()
	if !t.holding {
		t.wmu.Unlock()
		return t.send(&injection{frames: frames})
	}
	defer t.wmu.Unlock()
	t.holding = false
	done := make(chan struct{})
	defer close(done)
	if _, err := t.conn.Write(frames); err == nil {
		t.conn.Write(t.held)
	}
	t.held = nil
	return done
}

// awaitQuiet returns once the client has sent nothing for quiet, or after
// limit.
func (t *h2Tap) awaitQuiet(quiet, limit time.Duration) {
	start := time.Since(t.born)
	for {
		now := time.Since(t.born)
		silent := now - max(start, time.Duration(t.lastRead.Load()))
		if silent >= quiet || now-start >= limit {
			return
		}
		time.Sleep(min(quiet-silent, limit-(now-start)))
	}
}

// read looks at p, what the server has just read, for the acknowledgements
// of the tap's PINGs.
func (t *h2Tap) read(p []byte) {
	if len(p) == 0 {
		return
	}
	t.lastRead.Store(int64(time.Since(t.born)))
	if t.skip > 0 {
		k := min(t.skip, len(p))
		t.skip -= k
		p = p[k:]
	}
	for len(p) > 0 {
		payload := t.in.inPayload()
		n, ended := t.in.next(p)
		ack := t.in.frameType() == framePing && t.in.flags()&flagAck != 0 && t.in.length() == 8
		if ack && payload {
			t.payload = append(t.payload, p[:n]...)
		}
		p = p[n:]
		if !ended || !ack {
			continue
		}
		if len(t.payload) == 8 {
			got := binary.BigEndian.Uint64(t.payload)
			for i, want := range t.pings {
				if got == want {
					t.ackOnce[i].Do(func() { close(t.acks[i]) })
				}
			}
		}
		t.payload = t.payload[:0]
	}
}

// drain runs the first phase of the connection's drain, bounded by ctx:
//
//  1. a PING, at a frame boundary, after which the server's output is held
//     back (buffered: the server goes on, reading included). The client
//     acknowledges it once it has read everything before it, and it does
//     so as it sends what reading that made it send: a client that queues
//     its next request when a response ends (nghttp2) writes those
//     requests then. The PING's round trip (bounded by wait) says how
//     long this client takes;
//  2. once the client has also been silent for that long (at least
//     minQuiet, at most maxQuiet, and no longer than five times that in
//     all), the notice GOAWAY and a second PING go out, then the held
//     output. The GOAWAY so arrives on its own, after the client has acted
//     on every response before it: a client that read it behind responses
//     in the same pass would refuse to send the requests it had just
//     queued for them (nghttp2 does);
//  3. the second PING's acknowledgement: the client has read the notice,
//     so every stream it opened before reached the server (bounded by
//     wait).
//
// It returns when the server may send its final GOAWAY, or when the
// connection ends; the output is never left held.
func (t *h2Tap) drain(ctx context.Context, wait time.Duration) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	awaitAck := func(i int) bool {
		timer.Reset(wait)
		select {
		case <-t.acks[i]:
		case <-timer.C:
		case <-t.closed:
			return false
		case <-ctx.Done():
			return false
		}
		return true
	}
	select {
	case <-t.send(&injection{frames: pingFrame(t.pings[0]), hold: true}):
	case <-t.closed:
		return
	case <-ctx.Done():
		return
	}
	notice := t.notice()
	defer func() {
		if notice != nil {
			t.release(notice) // on every way out: the held output must go
		}
	}()
	start := time.Now()
	if !awaitAck(0) {
		return
	}
	quiet := min(max(time.Since(start), minQuiet), maxQuiet)
	t.awaitQuiet(quiet, 5*quiet)
	released := t.release(notice)
	notice = nil
	select {
	case <-released:
	case <-t.closed:
		return
	case <-ctx.Done():
		return
	}
	awaitAck(1)
}

// minQuiet and maxQuiet bound how long a client must have been silent,
// after it acknowledged the PING that began the hold, before the notice
// GOAWAY goes out: at least long enough for the rest of what it sent with
// the acknowledgement to arrive, at most what a slow WAN client needs.
const (
	minQuiet = time.Millisecond
	maxQuiet = 200 * time.Millisecond
)

// notice is a GOAWAY that refuses nothing, then a PING whose
// acknowledgement says the client has read it.
func (t *h2Tap) notice() []byte {
	b := make([]byte, 0, 2*(frameHeaderLen+8))
	b = appendFrameHeader(b, 8, frameGoAway, 0)
	b = binary.BigEndian.AppendUint32(b, maxStreamID)
	b = binary.BigEndian.AppendUint32(b, 0) // NO_ERROR
	return append(b, pingFrame(t.pings[1])...)
}

// pingFrame is a PING with the given payload.
func pingFrame(payload uint64) []byte {
	b := appendFrameHeader(make([]byte, 0, frameHeaderLen+8), 8, framePing, 0)
	return binary.BigEndian.AppendUint64(b, payload)
}

func appendFrameHeader(b []byte, length int, typ, flags byte) []byte {
	b = append(b, byte(length>>16), byte(length>>8), byte(length), typ, flags)
	return binary.BigEndian.AppendUint32(b, 0) // stream 0: the connection
}

// ended tells the tap its connection has ended, so that nobody waits for
// an acknowledgement that cannot come.
func (t *h2Tap) ended() { t.closeOnce.Do(func() { close(t.closed) }) }

// tlsH2Conn is a connection over TLS whose HTTP/2 frames pass through a
// tap. It keeps the *tls.Conn's methods, ConnectionState among them: the
// HTTP/2 server takes the request's TLS state from it. The tap is set once
// the handshake has chosen HTTP/2 (see tapTLS).
type tlsH2Conn struct {
	*tls.Conn
	tap     atomic.Pointer[h2Tap]
	decided atomic.Bool // whether the handshake's protocol has been looked at
}

// tapped returns the connection's tap, nil for one that is not HTTP/2 (or
// not yet known to be).
func (c *tlsH2Conn) tapped() *h2Tap {
	if !c.decided.Load() {
		st := c.Conn.ConnectionState()
		if !st.HandshakeComplete {
			return nil
		}
		if st.NegotiatedProtocol == "h2" && c.tap.Load() == nil {
			c.tap.CompareAndSwap(nil, newH2Tap(c.Conn))
		}
		c.decided.Store(true)
	}
	return c.tap.Load()
}

func (c *tlsH2Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if t := c.tapped(); t != nil {
		t.read(p[:n])
	}
	return n, err
}

func (c *tlsH2Conn) Write(p []byte) (int, error) {
	if t := c.tapped(); t != nil {
		return t.write(p)
	}
	return c.Conn.Write(p)
}

// tapped records that the HTTP/2 connection c (as net/http's hooks name
// it) passes through tap.
func (h *HTTP) tapped(c net.Conn, tap *h2Tap) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ci := h.conns[c]; ci != nil {
		ci.h2, ci.checked, ci.tap = true, true, tap
	}
}

// noticeLocked begins the first phase of the drain on every tapped HTTP/2
// connection whose turn has come and that has not had it yet, and returns
// how many are still in it or waiting for their turn: until none is, the
// final GOAWAY, which goes to every connection at once, must wait. The
// caller holds mu.
func (h *HTTP) noticeLocked(ctx context.Context, wait time.Duration) int {
	waiting := 0
	for _, ci := range h.conns {
		if ci.tap == nil || ci.noticed {
			continue
		}
		if !ci.turned.Load() {
			waiting++
			continue
		}
		ci.noticed = true
		h.noticing++
		tap := ci.tap
		h.notices.Go(func() {
			tap.drain(ctx, wait)
			h.mu.Lock()
			h.noticing--
			h.mu.Unlock()
		})
	}
	return h.noticing + waiting
}

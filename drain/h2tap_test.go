package drain

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// These tests check the tap against oracles of their own: frames are built
// and parsed here from whole buffers, without frameCursor, so that a
// mistake in the cursor cannot hide itself by being made twice.

// htFrame is an HTTP/2 frame as the tests build and parse it.
type htFrame struct {
	typ, flags byte
	stream     uint32
	payload    []byte
}

func (f htFrame) String() string {
	return fmt.Sprintf("{type %#x flags %#x stream %d len %d}", f.typ, f.flags, f.stream, len(f.payload))
}

func (f htFrame) equal(g htFrame) bool {
	return f.typ == g.typ && f.flags == g.flags && f.stream == g.stream && bytes.Equal(f.payload, g.payload)
}

func (f htFrame) append(b []byte) []byte {
	n := len(f.payload)
	b = append(b, byte(n>>16), byte(n>>8), byte(n), f.typ, f.flags)
	b = binary.BigEndian.AppendUint32(b, f.stream)
	return append(b, f.payload...)
}

func htEncode(frames ...htFrame) []byte {
	var b []byte
	for _, f := range frames {
		b = f.append(b)
	}
	return b
}

// htParse splits b, which must hold whole frames only, into its frames and
// the offsets at which each ends.
func htParse(b []byte) (frames []htFrame, ends []int, err error) {
	for off := 0; off < len(b); {
		if len(b)-off < 9 {
			return frames, ends, fmt.Errorf("offset %d: %d bytes left, a truncated frame header", off, len(b)-off)
		}
		h := b[off : off+9]
		n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		if len(b)-off-9 < n {
			return frames, ends, fmt.Errorf("offset %d: frame of length %d, only %d bytes left", off, n, len(b)-off-9)
		}
		frames = append(frames, htFrame{typ: h[3], flags: h[4], stream: binary.BigEndian.Uint32(h[5:9]), payload: b[off+9 : off+9+n]})
		off += 9 + n
		ends = append(ends, off)
	}
	return frames, ends, nil
}

// htSource turns a fuzz input into the choices of a test: its bytes first,
// then, once they run out, a generator seeded with them, so that a short
// input still describes a whole test and each input always the same one.
type htSource struct {
	data []byte
	x    uint64
}

func newHTSource(data []byte) *htSource {
	h := fnv.New64a()
	h.Write(data)
	return &htSource{data: data, x: h.Sum64() | 1}
}

func (s *htSource) byte() byte {
	if len(s.data) > 0 {
		b := s.data[0]
		s.data = s.data[1:]
		return b
	}
	s.x ^= s.x << 13 // xorshift64
	s.x ^= s.x >> 7
	s.x ^= s.x << 17
	return byte(s.x >> 32)
}

func (s *htSource) uint16() int { return int(s.byte())<<8 | int(s.byte()) }

func (s *htSource) uint64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(s.byte())
	}
	return v
}

// frames makes between least and most frames, of at most about total bytes
// in all. Their lengths reach every case of the cursor: empty frames,
// frames shorter and longer than a header, long ones, and ones whose
// length needs all three of its bytes.
func (s *htSource) frames(least, most, total int) []htFrame {
	n := least + int(s.byte())%(most-least+1)
	var frames []htFrame
	size := 0
	for len(frames) < n {
		var length int
		switch s.byte() % 8 {
		case 0, 1:
			length = 0
		case 2, 3:
			length = int(s.byte())
		case 4:
			length = 1 + int(s.byte())%(2*frameHeaderLen)
		case 5, 6:
			length = s.uint16() % 40001
		case 7:
			length = 1<<16 + s.uint16()%4096
		}
		if size+frameHeaderLen+length > total && len(frames) >= least {
			break
		}
		size += frameHeaderLen + length
		f := htFrame{typ: s.byte(), flags: s.byte(), stream: uint32(s.byte())<<24 | uint32(s.uint16()), payload: make([]byte, length)}
		seed := s.byte()
		for i := range f.payload {
			f.payload[i] = seed + byte(i*7)
		}
		frames = append(frames, f)
	}
	return frames
}

// split cuts n bytes into pieces: empty ones, ones about a header long,
// and long ones.
func (s *htSource) split(n int) []int {
	var sizes []int
	for n > 0 {
		var k int
		switch s.byte() % 4 {
		case 0:
			k = 0
		case 1:
			k = 1 + int(s.byte())%(2*frameHeaderLen)
		case 2:
			k = 1 + int(s.byte())
		case 3:
			k = 1 + s.uint16()%50000
		}
		k = min(k, n)
		sizes = append(sizes, k)
		n -= k
	}
	return sizes
}

// htCycle cuts n bytes into pieces of the given sizes, over and over.
func htCycle(n int, sizes ...int) []int {
	var out []int
	for i := 0; n > 0; i++ {
		k := min(sizes[i%len(sizes)], n)
		out = append(out, k)
		n -= k
	}
	return out
}

// htLengths makes frames of the given payload lengths, each with a type,
// flags and payload of its own.
func htLengths(lengths ...int) []htFrame {
	frames := make([]htFrame, len(lengths))
	for i, n := range lengths {
		frames[i] = htFrame{typ: byte(i), flags: ^byte(i), stream: uint32(i) * 0x01020304, payload: bytes.Repeat([]byte{byte(i + 1)}, n)}
	}
	return frames
}

// htCheckCursor feeds the frames, cut into pieces of the given sizes,
// through a frameCursor and checks every step against the offsets htParse
// finds: next must stop exactly where a header or a frame ends (no
// further, so that the tap can write there, and no sooner, or it would
// cost a call per byte), and report exactly the frame ends.
func htCheckCursor(t *testing.T, frames []htFrame, sizes []int) {
	t.Helper()
	stream := htEncode(frames...)
	parsed, ends, err := htParse(stream)
	if err != nil || len(parsed) != len(frames) {
		t.Fatalf("test's own parser: %d of %d frames, %v", len(parsed), len(frames), err)
	}
	starts := append([]int{0}, ends...)

	var c frameCursor
	pos, k := 0, 0             // k: the frame pos is in, or the next one to begin
	state := func(piece int) { // piece -1: before the first
		t.Helper()
		boundary := k == len(frames) || pos == starts[k]
		payload := k < len(frames) && pos >= starts[k]+frameHeaderLen && pos < ends[k]
		if c.atBoundary() != boundary || c.inPayload() != payload {
			t.Fatalf("piece %d, at offset %d (frame %d of %d, frame starts %v...): atBoundary %v inPayload %v, want %v %v",
				piece, pos, k, len(frames), starts[:min(len(starts), 8)], c.atBoundary(), c.inPayload(), boundary, payload)
		}
		// The header read is the current frame's in its payload and the
		// last one's from its end until the next header begins; the
		// drain's reading side looks at it after the frame ended.
		h := -1
		if payload {
			h = k
		} else if boundary && k > 0 {
			h = k - 1
		}
		if h >= 0 {
			f := frames[h]
			if c.length() != len(f.payload) || c.frameType() != f.typ || c.flags() != f.flags {
				t.Fatalf("piece %d, at offset %d: header says length %d type %#x flags %#x, want frame %d %v",
					piece, pos, c.length(), c.frameType(), c.flags(), h, f)
			}
		}
	}
	state(-1)
	for i, size := range sizes {
		piece := stream[pos : pos+size]
		if size == 0 {
			if n, ended := c.next(piece); n != 0 || ended {
				t.Fatalf("piece %d, empty, at offset %d: next = %d, %v; want 0, false", i, pos, n, ended)
			}
		}
		for rest := piece; len(rest) > 0; {
			stop := ends[k] // the frame's end, or before it its header's
			if hdr := starts[k] + frameHeaderLen; pos < hdr {
				stop = hdr
			}
			n, ended := c.next(rest)
			if want := min(len(rest), stop-pos); n != want {
				t.Fatalf("piece %d at offset %d, %d bytes left of it: next took %d bytes, want %d (frame %d: %d..%d)",
					i, pos, len(rest), n, want, k, starts[k], ends[k])
			}
			pos += n
			rest = rest[n:]
			if want := pos == ends[k]; ended != want {
				t.Fatalf("piece %d, at offset %d: ended = %v, want %v (frame %d ends at %d)", i, pos, ended, want, k, ends[k])
			}
			if ended {
				k++
			}
			state(i)
		}
	}
	if k != len(frames) || pos != len(stream) {
		t.Fatalf("saw %d of %d frames end, %d of %d bytes", k, len(frames), pos, len(stream))
	}
}

func TestFrameCursorTable(t *testing.T) {
	mixed := htLengths(0, 1, 8, 9, 10, 17, 18, 0, 300, 0)
	by := func(sizes ...int) func(int) []int { return func(n int) []int { return htCycle(n, sizes...) } }
	cases := []struct {
		name   string
		frames []htFrame
		sizes  func(n int) []int // cuts the stream's n bytes
	}{
		{"no frames", nil, by(1)},
		{"one empty frame, byte by byte", htLengths(0), by(1)},
		{"three empty frames in one piece", htLengths(0, 0, 0), by(27)},
		{"empty pieces between every byte", htLengths(0, 2, 0), by(0, 1)},
		{"header and payload apart", htLengths(5, 5), by(9, 5)},
		{"header and payload apart, empty pieces between", htLengths(5, 5), by(0, 9, 0, 5)},
		{"piece ends one past a header", htLengths(3, 3), by(10, 2)},
		{"the whole stream in one piece", mixed, by(1 << 20)},
		// Lengths that need the middle and the high byte of the length.
		{"lengths over 255 and 65535", htLengths(256, 1<<16, 1<<16+1), by(4096)},
		// The longest frame there can be (2^24-1), in pieces that end
		// inside its header and then in big ones.
		{"the longest frame", htLengths(1<<24-1, 0), func(n int) []int { return append([]int{4, 5}, htCycle(n-9, 1<<20)...) }},
	}
	for size := 1; size <= 20; size++ {
		cases = append(cases, struct {
			name   string
			frames []htFrame
			sizes  func(n int) []int
		}{fmt.Sprintf("lengths 0..300 in pieces of %d", size), mixed, by(size)})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { htCheckCursor(t, tc.frames, tc.sizes(len(htEncode(tc.frames...)))) })
	}
}

func FuzzFrameCursor(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{10, 7, 1, 2, 6, 1, 0, 0, 0, 0, 9, 5, 200, 6, 1, 0, 0, 0, 0, 1, 5, 3, 250, 250})
	f.Add([]byte("frames of every length, in pieces of every size"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newHTSource(data)
		frames := s.frames(0, 48, 128<<10)
		htCheckCursor(t, frames, s.split(len(htEncode(frames...))))
	})
}

// htConn is a net.Conn that records what is written to it, each Write
// apart (to see that the tap's frames go out whole, in one Write), and can
// be told to fail a Write.
type htConn struct {
	mu      sync.Mutex
	writes  [][]byte
	discard bool // keep nothing (for the benchmark)
	failAt  int  // if not 0, the failAt-th Write (from 1) fails
	calls   int
}

var errHTWrite = errors.New("htConn: write failed")

func (c *htConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls == c.failAt {
		return 0, errHTWrite
	}
	if !c.discard {
		c.writes = append(c.writes, bytes.Clone(p))
	}
	return len(p), nil
}

func (c *htConn) output() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Join(c.writes, nil)
}

func (c *htConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *htConn) Close() error                     { return nil }
func (c *htConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *htConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (c *htConn) SetDeadline(time.Time) error      { return nil }
func (c *htConn) SetReadDeadline(time.Time) error  { return nil }
func (c *htConn) SetWriteDeadline(time.Time) error { return nil }

func htClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// htSend is one injection in a write test: its frames (made with the tap,
// whose notice carries the tap's own PING) are sent before the server's
// chunk with index after is written (after them all if it is the number
// of chunks).
type htSend struct {
	after  int
	frames func(*h2Tap) []byte
}

func htPing(payload uint64) func(*h2Tap) []byte {
	return func(*h2Tap) []byte { return pingFrame(payload) }
}

func htNotice(t *h2Tap) []byte { return t.notice() }

// htCheckTapWrite writes the frames, in chunks of the given sizes, through
// a tap, sends the injections as the drain does (one at a time, the next
// only once the last went out), and checks that each went out whole, in a
// Write of its own, at the first frame end at or after the point it was
// sent at and after the server's first frame, at once if that is where the
// server stood, and that the server's bytes pass unchanged.
func htCheckTapWrite(t *testing.T, frames []htFrame, sizes []int, sends []htSend) {
	t.Helper()
	stream := htEncode(frames...)
	_, ends, err := htParse(stream)
	if err != nil || len(ends) == 0 {
		t.Fatalf("test's own parser: %d frames, %v", len(ends), err)
	}
	desc := func() string {
		lens := make([]int, len(frames))
		for i, f := range frames {
			lens[i] = len(f.payload)
		}
		return fmt.Sprintf("frame lengths %v, chunks %v", lens, sizes)
	}
	conn := &htConn{}
	tap := newH2Tap(conn)
	type issued struct {
		x    []byte
		at   int // the server's bytes written when it was sent
		want int // where it must go: the offset of a frame end in the server's output
		sent <-chan struct{}
	}
	var done []issued
	issue := func(chunk int) {
		for len(done) < len(sends) && sends[len(done)].after <= chunk {
			if len(done) > 0 && !htClosed(done[len(done)-1].sent) {
				return // the drain waits for one before sending the next
			}
			pos := 0
			for _, n := range sizes[:chunk] {
				pos += n
			}
			i, _ := slices.BinarySearch(ends, max(pos, ends[0]))
			in := issued{x: sends[len(done)].frames(tap), at: pos, want: ends[i]}
			in.sent = tap.send(&injection{frames: slices.Clone(in.x)})
			if now := in.want == pos; htClosed(in.sent) != now {
				t.Fatalf("injection %d, sent with %d bytes written (frame ends %v...): written at once = %v, want %v; %s",
					len(done), pos, ends[:min(len(ends), 4)], htClosed(in.sent), now, desc())
			}
			done = append(done, in)
		}
	}
	pos := 0
	var buf []byte
	for j, size := range sizes {
		issue(j)
		// The server reuses its buffer: the tap must not keep p.
		buf = append(buf[:0], stream[pos:pos+size]...)
		if n, err := tap.write(buf); n != size || err != nil {
			t.Fatalf("chunk %d: write = %d, %v; want %d, nil", j, n, err, size)
		}
		for i := range buf {
			buf[i] = 0xee
		}
		pos += size
		for i, in := range done {
			if want := pos >= in.want; htClosed(in.sent) != want {
				t.Fatalf("injection %d (sent at %d, due at %d), after chunk %d (%d bytes written): sent closed = %v, want %v; %s",
					i, in.at, in.want, j, pos, htClosed(in.sent), want, desc())
			}
		}
	}
	issue(len(sizes))
	if len(done) != len(sends) {
		t.Fatalf("only %d of %d injections could be sent", len(done), len(sends))
	}

	// The output, parsed, is the server's frames in order with each
	// injection's frames inserted whole after at least one of them.
	got := conn.output()
	gotFrames, _, err := htParse(got)
	if err != nil {
		t.Fatalf("output does not parse: %v; %s", err, desc())
	}
	var want []htFrame
	k := 0
	for i, in := range done {
		for ; k < len(ends) && ends[k] <= in.want; k++ {
			want = append(want, frames[k])
		}
		if k < 1 {
			t.Fatalf("injection %d is due before the server's first frame: the test is wrong", i)
		}
		x, _, err := htParse(in.x)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, x...)
	}
	want = append(want, frames[k:]...)
	if len(gotFrames) != len(want) {
		t.Fatalf("output has %d frames, want %d; %s", len(gotFrames), len(want), desc())
	}
	for i := range want {
		if !gotFrames[i].equal(want[i]) {
			t.Fatalf("output frame %d is %v, want %v; %s", i, gotFrames[i], want[i], desc())
		}
	}
	// Byte for byte, and each injection in one Write of its own, where
	// no server byte shares it.
	var wantBytes []byte
	prev := 0
	for _, in := range done {
		wantBytes = append(wantBytes, stream[prev:in.want]...)
		wantBytes = append(wantBytes, in.x...)
		prev = in.want
	}
	wantBytes = append(wantBytes, stream[prev:]...)
	if !bytes.Equal(got, wantBytes) {
		t.Fatalf("output differs from the expected bytes; %s", desc())
	}
	for i, in := range done {
		at := in.want
		for _, e := range done[:i] {
			at += len(e.x)
		}
		off, whole := 0, false
		for _, w := range conn.writes {
			if off == at && bytes.Equal(w, in.x) {
				whole = true
				break
			}
			off += len(w)
		}
		if !whole {
			t.Fatalf("injection %d is not one Write of its own at output offset %d; %s", i, at, desc())
		}
	}
}

func TestTapWrite(t *testing.T) {
	settings := htFrame{typ: 0x4, payload: make([]byte, 18)}
	settingsAck := htFrame{typ: 0x4, flags: flagAck}
	window := htFrame{typ: 0x8, payload: []byte{0, 0, 0xff, 0xff}}
	headers := htFrame{typ: 0x1, flags: 0x4, stream: 1, payload: bytes.Repeat([]byte{'h'}, 30)}
	data := htFrame{typ: 0x0, flags: 0x1, stream: 1, payload: bytes.Repeat([]byte{'d'}, 1024)}
	server := []htFrame{settings, window, headers, data, headers, data}
	n := len(htEncode(server...))
	cases := []struct {
		name   string
		frames []htFrame
		sizes  []int
		sends  []htSend
	}{
		// Before the server's SETTINGS, which must come first (RFC 9113
		// §3.4), the tap waits for its end, also when it is the whole
		// first write, or when the first write is only part of it.
		{"sent before anything, all in one write", server, []int{n}, []htSend{{0, htNotice}}},
		{"sent before anything, byte by byte", server, htCycle(n, 1), []htSend{{0, htPing(1)}}},
		{"sent before anything, first write ends in the first header", server, htCycle(n, 5), []htSend{{0, htPing(1)}}},
		{"sent inside the first header", server, htCycle(n, 5), []htSend{{1, htPing(1)}}},
		{"sent before anything, first frame empty", []htFrame{settingsAck, headers, data}, htCycle(9+9+30+9+1024, 9), []htSend{{0, htNotice}}},
		// Between two frames after the first: at once.
		{"sent between frames", server, []int{9 + 18, 9 + 4, n - 9 - 18 - 9 - 4}, []htSend{{1, htNotice}}},
		{"sent between frames, then again at the same place", server, []int{9 + 18, n - 9 - 18}, []htSend{{1, htPing(2)}, {1, htNotice}}},
		// Inside a frame: at its end, which can be in the same write or
		// several later.
		{"sent inside a header", server, []int{9 + 18 + 4, n - 9 - 18 - 4}, []htSend{{1, htNotice}}},
		{"sent inside a payload", server, []int{9 + 18 + 9 + 4 + 9 + 10, n - (9 + 18 + 9 + 4 + 9 + 10)}, []htSend{{1, htNotice}}},
		{"sent inside a payload that ends writes later", server, htCycle(n, 100), []htSend{{1, htPing(3)}}},
		{"sent when the server has written everything", server, htCycle(n, 4096), []htSend{{1, htPing(4)}}},
		// As the drain does: the probe PING, then the notice.
		{"probe, then notice", server, htCycle(n, 7), []htSend{{3, htPing(5)}, {9, htNotice}}},
		{"probe, then notice right after it went out", server, htCycle(n, 7), []htSend{{3, htPing(5)}, {3, htNotice}}},
		{"empty writes among the server's", server, append([]int{0, 9 + 18, 0, 0}, htCycle(n-9-18, 0, 13)...), []htSend{{0, htPing(6)}, {2, htNotice}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { htCheckTapWrite(t, tc.frames, tc.sizes, tc.sends) })
	}
}

func FuzzTapWrite(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 4, 0, 0, 0, 0, 0})
	f.Add([]byte{5, 2, 18, 4, 0, 0, 0, 0, 1, 5, 1, 100, 0, 0, 0, 0, 1, 1, 1, 0, 3})
	f.Add([]byte("a random stream of frames in random chunks, a PING and a notice"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newHTSource(data)
		frames := s.frames(1, 24, 128<<10)
		sizes := s.split(len(htEncode(frames...)))
		sends := make([]htSend, 1+s.byte()%2)
		for i := range sends {
			sends[i].after = s.uint16() % (len(sizes) + 1)
			if s.byte()%2 == 0 {
				sends[i].frames = htPing(s.uint64())
			} else {
				sends[i].frames = htNotice
			}
		}
		slices.SortFunc(sends, func(a, b htSend) int { return a.after - b.after })
		htCheckTapWrite(t, frames, sizes, sends)
	})
}

// A failed Write of the connection reaches the server, and a failed write
// of the tap's frames still releases whoever waits for them.
func TestTapWriteErrors(t *testing.T) {
	a := htFrame{typ: 0x4, payload: make([]byte, 10)}
	b := htFrame{typ: 0x8, payload: make([]byte, 4)}
	stream := htEncode(a, b)

	t.Run("no injection", func(t *testing.T) {
		tap := newH2Tap(&htConn{failAt: 1})
		if n, err := tap.write(stream); n != 0 || !errors.Is(err, errHTWrite) {
			t.Fatalf("write = %d, %v; want 0, %v", n, err, errHTWrite)
		}
	})
	t.Run("the tap's frames", func(t *testing.T) {
		conn := &htConn{failAt: 2} // the server's first frame, then the PING
		tap := newH2Tap(conn)
		sent := tap.send(&injection{frames: pingFrame(7)})
		n, err := tap.write(stream)
		if n != 9+10 || !errors.Is(err, errHTWrite) {
			t.Fatalf("write = %d, %v; want %d (the first frame), %v", n, err, 9+10, errHTWrite)
		}
		if !htClosed(sent) {
			t.Fatal("sent still open after the injection's write failed")
		}
	})
	t.Run("the server's bytes before the injection", func(t *testing.T) {
		tap := newH2Tap(&htConn{failAt: 1})
		tap.send(&injection{frames: pingFrame(7)})
		if n, err := tap.write(stream); n != 0 || !errors.Is(err, errHTWrite) {
			t.Fatalf("write = %d, %v; want 0, %v", n, err, errHTWrite)
		}
	})
}

// An injection with hold set begins holding the server's output back
// after its frames: the server's writes return at once and put nothing on
// the wire, until release writes its frames and then everything held, in
// order. Past maxHeld the output goes out, and release sends its frames
// at the next frame boundary instead.
func TestTapHoldRelease(t *testing.T) {
	a := htEncode(htFrame{typ: 0x4, payload: make([]byte, 10)})
	b := htEncode(htFrame{typ: 0x0, stream: 1, payload: []byte("held data")})
	c := htEncode(htFrame{typ: 0x1, stream: 3, payload: []byte("more")})

	t.Run("inside a frame", func(t *testing.T) {
		conn := &htConn{}
		tap := newH2Tap(conn)
		tap.write(a[:5])
		sent := tap.send(&injection{frames: pingFrame(1), hold: true})
		// The rest of a, then b: a ends, the PING goes out, b is held.
		rest := append(slices.Clone(a[5:]), b...)
		if n, err := tap.write(rest); n != len(rest) || err != nil {
			t.Fatalf("write = %d, %v", n, err)
		}
		if !htClosed(sent) {
			t.Fatal("sent still open")
		}
		if got, want := conn.output(), append(slices.Clone(a), pingFrame(1)...); !bytes.Equal(got, want) {
			t.Fatalf("output %x, want %x (b held back)", got, want)
		}
		tap.write(c)
		<-tap.release(pingFrame(2))
		want := slices.Concat(a, pingFrame(1), pingFrame(2), b, c)
		if got := conn.output(); !bytes.Equal(got, want) {
			t.Fatalf("after release: output %x, want %x", got, want)
		}
		tap.write(a) // after the hold: straight through
		if got := conn.output(); !bytes.Equal(got, append(want, a...)) {
			t.Fatal("output after the hold was not written")
		}
	})
	t.Run("between frames", func(t *testing.T) {
		conn := &htConn{}
		tap := newH2Tap(conn)
		tap.write(a)
		if !htClosed(tap.send(&injection{frames: pingFrame(1), hold: true})) {
			t.Fatal("sent still open after send wrote the PING between frames")
		}
		tap.write(b)
		if got := conn.output(); !bytes.Equal(got, append(slices.Clone(a), pingFrame(1)...)) {
			t.Fatalf("output %x: b was not held", got)
		}
		<-tap.release(pingFrame(2))
		if got, want := conn.output(), slices.Concat(a, pingFrame(1), pingFrame(2), b); !bytes.Equal(got, want) {
			t.Fatalf("output %x, want %x", got, want)
		}
	})
	t.Run("past maxHeld", func(t *testing.T) {
		conn := &htConn{}
		tap := newH2Tap(conn)
		tap.write(a)
		tap.send(&injection{frames: pingFrame(1), hold: true})
		big := htEncode(htFrame{typ: 0x0, stream: 1, payload: make([]byte, 1<<16)})
		var written []byte
		for len(written) <= maxHeld {
			tap.write(big)
			written = append(written, big...)
		}
		if got, want := conn.output(), slices.Concat(a, pingFrame(1), written); !bytes.Equal(got, want) {
			t.Fatalf("past maxHeld: %d bytes out, want %d", len(got), len(want))
		}
		sent := tap.release(pingFrame(2))
		tap.write(c)
		<-sent
		// The output stands between frames: the frames go out at once.
		if got, want := conn.output(), slices.Concat(a, pingFrame(1), written, pingFrame(2), c); !bytes.Equal(got, want) {
			t.Fatal("release after the hold ended: its frames did not go out at the frame boundary")
		}
	})
}

// htFeed passes b to tap.read in pieces of the given sizes, checking that
// read leaves p alone and marks the time of each non-empty read, and
// calling between after each piece.
func htFeed(t *testing.T, tap *h2Tap, b []byte, sizes []int, between func(off int)) {
	t.Helper()
	off := 0
	for _, size := range sizes {
		p := b[off : off+size]
		keep := slices.Clone(p)
		last := tap.lastRead.Load()
		before := time.Since(tap.born)
		tap.read(p)
		after := time.Since(tap.born)
		if !bytes.Equal(p, keep) {
			t.Fatalf("read changed the bytes at offset %d", off)
		}
		got := time.Duration(tap.lastRead.Load())
		if size == 0 && got != time.Duration(last) {
			t.Fatalf("an empty read moved lastRead from %v to %v", time.Duration(last), got)
		}
		if size > 0 && (got < before || got > after) {
			t.Fatalf("lastRead %v after a read between %v and %v", got, before, after)
		}
		off += size
		between(off)
	}
	if off != len(b) {
		t.Fatalf("the test fed %d of %d bytes", off, len(b))
	}
}

func TestTapReadAcks(t *testing.T) {
	be := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	ack := func(v uint64) htFrame { return htFrame{typ: framePing, flags: flagAck, payload: be(v)} }
	// Frames that are no acknowledgement of the tap's PINGs, each with
	// their bytes in it somewhere.
	decoys := func(p0, p1 uint64) []htFrame {
		b0, b1 := be(p0), be(p1)
		big := bytes.Repeat(htEncode(ack(p0), ack(p1)), 20000/34+1)
		return []htFrame{
			ack(p0 ^ 1<<63),                                                        // a wrong payload: its first byte
			ack(p0 ^ 0xff00),                                                       // and a byte inside it
			{typ: framePing, payload: b0},                                          // PINGs, not acknowledgements
			{typ: framePing, payload: b1},                                          //
			{typ: framePing, flags: ^byte(flagAck), payload: b0},                   // every flag but ACK
			{typ: framePing, flags: flagAck, payload: b0[:7]},                      // too short
			{typ: framePing, flags: flagAck, payload: append(slices.Clone(b0), 0)}, // too long
			{typ: framePing, flags: flagAck, payload: append(slices.Clone(b1), b1...)},
			{typ: framePing, flags: flagAck},                                       // empty
			{typ: 0x0, flags: 0x1, stream: 1, payload: b0},                         // DATA with END_STREAM, the ACK bit's value
			{typ: frameGoAway, flags: flagAck, payload: b1},                        // other types of length 8 with the bit set
			{typ: 0x4, flags: flagAck, payload: b0},                                //
			{typ: 0xfa, flags: 0xff, payload: b1},                                  // an unknown type
			{typ: 0x1, flags: 0x4, stream: 3, payload: htEncode(ack(p0), ack(p1))}, // acknowledgements inside a frame
			{typ: 0x0, stream: 5, payload: big},                                    // many, in a long one
			{typ: 0x4, flags: flagAck},                                             // SETTINGS ACK, empty
		}
	}
	strategies := []struct {
		name  string
		sizes func(n int) []int
	}{
		{"whole", func(n int) []int { return []int{n} }},
		{"byte by byte", func(n int) []int { return htCycle(n, 1) }},
		{"by 2", func(n int) []int { return htCycle(n, 2) }},
		{"by 3, with empty reads", func(n int) []int { return htCycle(n, 3, 0) }},
		{"by 7", func(n int) []int { return htCycle(n, 7) }},
		{"by 11", func(n int) []int { return htCycle(n, 11) }},
		{"by 23", func(n int) []int { return htCycle(n, 23) }},
		{"by 25", func(n int) []int { return htCycle(n, 25) }},
		{"by 4096", func(n int) []int { return htCycle(n, 4096) }},
		{"random", func(n int) []int { return newHTSource([]byte("read sizes")).split(n) }},
	}
	for _, st := range strategies {
		t.Run(st.name, func(t *testing.T) {
			tap := newH2Tap(&htConn{})
			if tap.lastRead.Load() != 0 {
				t.Fatal("lastRead set before any read")
			}
			p0, p1 := tap.pings[0], tap.pings[1]
			none := func(off int) {
				t.Helper()
				if htClosed(tap.acks[0]) || htClosed(tap.acks[1]) {
					t.Fatalf("an acknowledgement seen at offset %d, among frames that are none", off)
				}
			}
			stage := append([]byte(h2ClientPreface), htEncode(decoys(p0, p1)...)...)
			htFeed(t, tap, stage, st.sizes(len(stage)), none)

			// The acknowledgement of the notice's PING, across reads too:
			// it counts once its last byte is there.
			a1 := htEncode(ack(p1))
			htFeed(t, tap, a1, st.sizes(len(a1)), func(off int) {
				t.Helper()
				if got, want := htClosed(tap.acks[1]), off == len(a1); got != want {
					t.Fatalf("after %d of the acknowledgement's %d bytes: acks[1] closed = %v, want %v", off, len(a1), got, want)
				}
				if htClosed(tap.acks[0]) {
					t.Fatal("acks[0] closed by the acknowledgement of pings[1]")
				}
			})

			// Again (it is closed once only), more decoys, and then the
			// probe's acknowledgement, with flags RFC 9113 §4.1 says to
			// ignore.
			last := htFrame{typ: framePing, flags: flagAck | 0xf0, payload: be(p0)}
			stage = htEncode(append(append([]htFrame{ack(p1)}, decoys(p0, p1)...), last)...)
			n := len(stage)
			htFeed(t, tap, stage, st.sizes(n), func(off int) {
				t.Helper()
				if got, want := htClosed(tap.acks[0]), off == n; got != want {
					t.Fatalf("at offset %d of %d: acks[0] closed = %v, want %v", off, n, got, want)
				}
			})
		})
	}
	// The preface cut at every point, the acknowledgement in the same read
	// as its end.
	for cut := 0; cut <= len(h2ClientPreface); cut++ {
		tap := newH2Tap(&htConn{})
		b := append([]byte(h2ClientPreface), htEncode(ack(tap.pings[0]))...)
		htFeed(t, tap, b, []int{cut, len(b) - cut}, func(int) {})
		if !htClosed(tap.acks[0]) || htClosed(tap.acks[1]) {
			t.Fatalf("preface cut after %d bytes: acks closed = %v, %v; want true, false", cut, htClosed(tap.acks[0]), htClosed(tap.acks[1]))
		}
	}
}

func TestTapReadMarksTime(t *testing.T) {
	tap := newH2Tap(&htConn{})
	tap.read([]byte(h2ClientPreface))
	first := tap.lastRead.Load()
	time.Sleep(2 * time.Millisecond)
	tap.read(htEncode(htFrame{typ: 0x4, flags: flagAck}))
	if second := tap.lastRead.Load(); time.Duration(second-first) < 2*time.Millisecond {
		t.Fatalf("lastRead moved by %v over a read 2ms later", time.Duration(second-first))
	}
}

// htSpan is when a read began and ended, on the tap's clock.
type htSpan struct{ begin, end time.Duration }

// htReadEvery calls tap.read every interval, for at most d or until stop
// is closed, and returns a function that waits for it to end and gives
// the reads' spans.
func htReadEvery(tap *h2Tap, interval, d time.Duration, stop <-chan struct{}) func() []htSpan {
	frame := htEncode(htFrame{typ: 0x4, flags: flagAck}) // SETTINGS ACK: no PING to watch for
	var spans []htSpan
	done := make(chan struct{})
	go func() {
		defer close(done)
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			begin := time.Since(tap.born)
			tap.read(frame)
			spans = append(spans, htSpan{begin, time.Since(tap.born)})
			// Timers here fire a millisecond late or so, longer than the
			// quiet period; spin instead, letting the rest run.
			for next := time.Now().Add(interval); time.Now().Before(next); runtime.Gosched() {
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}()
	return func() []htSpan { <-done; return spans }
}

// htQuietOK reports whether awaitQuiet, called at s and returned at r (on
// the tap's clock), kept its promise: it returned once limit had passed,
// or once the client had been silent for quiet. Silent means no read that
// began earlier than quiet before, or, as a read marks the time before
// it ends, that ended before it noticed: between the beginning of one read
// and the end of the next there must be quiet, within [s, r].
func htQuietOK(spans []htSpan, s, r, quiet, limit time.Duration) bool {
	if r-s >= limit {
		return true
	}
	from := s
	for _, sp := range spans {
		if min(r, sp.end)-max(s, from) >= quiet {
			return true
		}
		from = sp.begin
	}
	return r-max(s, from) >= quiet
}

// htSlack is how late a timer may fire on a loaded two-core machine under
// the race detector: upper bounds only, which a late wake-up should not
// fail.
const htSlack = 50 * time.Millisecond

func TestAwaitQuiet(t *testing.T) {
	const quiet, limit = 2 * time.Millisecond, 50 * time.Millisecond
	await := func(t *testing.T, tap *h2Tap, quiet, limit time.Duration) (s, r time.Duration) {
		t.Helper()
		s = time.Since(tap.born)
		tap.awaitQuiet(quiet, limit)
		return s, time.Since(tap.born)
	}
	report := func(t *testing.T, spans []htSpan, s, r time.Duration) {
		t.Helper()
		if len(spans) > 0 {
			t.Logf("returned %v after the call, %v after the last read began; %d reads", r-s, r-spans[len(spans)-1].begin, len(spans))
		} else {
			t.Logf("returned %v after the call", r-s)
		}
	}

	t.Run("client talks, then goes quiet", func(t *testing.T) {
		tap := newH2Tap(&htConn{})
		tap.read([]byte(h2ClientPreface))
		spans := htReadEvery(tap, 200*time.Microsecond, 20*time.Millisecond, nil)
		s, r := await(t, tap, quiet, limit)
		all := spans()
		report(t, all, s, r)
		if !htQuietOK(all, s, r, quiet, limit) {
			t.Fatalf("returned %v after the call, with no quiet period of %v in it: reads %v", r-s, quiet, all)
		}
		if r-s > limit+htSlack {
			t.Fatalf("returned %v after the call, limit %v", r-s, limit)
		}
	})
	t.Run("client goes quiet long before the limit", func(t *testing.T) {
		// With a limit far off, it must return soon after the reads stop.
		tap := newH2Tap(&htConn{})
		tap.read([]byte(h2ClientPreface))
		spans := htReadEvery(tap, 200*time.Microsecond, 20*time.Millisecond, nil)
		s, r := await(t, tap, quiet, time.Minute)
		all := spans()
		report(t, all, s, r)
		if !htQuietOK(all, s, r, quiet, time.Minute) {
			t.Fatalf("returned %v after the call, with no quiet period of %v in it: reads %v", r-s, quiet, all)
		}
		if end := all[len(all)-1].end; r > end+quiet+htSlack {
			t.Fatalf("returned %v after the last read ended, quiet %v", r-end, quiet)
		}
	})
	t.Run("client never quiet", func(t *testing.T) {
		tap := newH2Tap(&htConn{})
		tap.read([]byte(h2ClientPreface))
		stop := make(chan struct{})
		spans := htReadEvery(tap, 200*time.Microsecond, 10*time.Second, stop)
		s, r := await(t, tap, quiet, limit)
		close(stop)
		all := spans()
		report(t, all, s, r)
		if !htQuietOK(all, s, r, quiet, limit) {
			t.Fatalf("returned %v after the call, with no quiet period of %v in it: reads %v", r-s, quiet, all)
		}
		if r-s > limit+htSlack {
			t.Fatalf("returned %v after the call, limit %v", r-s, limit)
		}
	})
	t.Run("client already quiet", func(t *testing.T) {
		// Silence is counted from the call: what came before it says
		// nothing of what the client does meanwhile.
		tap := newH2Tap(&htConn{})
		tap.read([]byte(h2ClientPreface))
		time.Sleep(5 * time.Millisecond)
		s, r := await(t, tap, quiet, limit)
		report(t, nil, s, r)
		if r-s < quiet || r-s > quiet+htSlack {
			t.Fatalf("returned %v after the call, quiet %v", r-s, quiet)
		}
	})
	t.Run("no reads at all", func(t *testing.T) {
		tap := newH2Tap(&htConn{})
		s, r := await(t, tap, quiet, limit)
		report(t, nil, s, r)
		if r-s < quiet || r-s > quiet+htSlack {
			t.Fatalf("returned %v after the call, quiet %v", r-s, quiet)
		}
	})
	t.Run("limit below quiet", func(t *testing.T) {
		tap := newH2Tap(&htConn{})
		s, r := await(t, tap, time.Second, 5*time.Millisecond)
		report(t, nil, s, r)
		if r-s < 5*time.Millisecond || r-s > 5*time.Millisecond+htSlack {
			t.Fatalf("returned %v after the call, limit 5ms", r-s)
		}
	})
}

// The tap's cost on the server's output path, against the connection's
// own Write: HTTP/2 responses of a HEADERS and a 1 KiB DATA frame, written
// in 4 KiB pieces, as a buffered writer flushes them, which end anywhere
// in a frame.
func BenchmarkTapWrite(b *testing.B) {
	var frames []htFrame
	for i := range 64 {
		frames = append(frames,
			htFrame{typ: 0x1, flags: 0x4, stream: uint32(2*i + 1), payload: make([]byte, 30)},
			htFrame{typ: 0x0, flags: 0x1, stream: uint32(2*i + 1), payload: make([]byte, 1024)})
	}
	stream := htEncode(frames...)
	run := func(b *testing.B, write func([]byte) (int, error)) {
		b.SetBytes(int64(len(stream)))
		for b.Loop() {
			for off := 0; off < len(stream); off += 4096 {
				write(stream[off:min(off+4096, len(stream))])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(stream)), "ns/B")
	}
	b.Run("direct", func(b *testing.B) { run(b, (&htConn{discard: true}).Write) })
	b.Run("tap", func(b *testing.B) { run(b, newH2Tap(&htConn{discard: true}).write) })
}

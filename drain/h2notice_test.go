package drain

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawH2 is an HTTP/2 client that speaks frames itself, so that a test
// decides exactly when it opens a stream relative to the GOAWAYs it reads.
type rawH2 struct {
	t      *testing.T
	conn   net.Conn
	fr     *http2.Framer
	frames chan any   // copies of frames, read by a goroutine; closed when the connection ends
	wmu    sync.Mutex // the framer's writes: the test's and the reading goroutine's
	hbuf   bytes.Buffer
	enc    *hpack.Encoder
}

func (r *rawH2) write(f func(*http2.Framer) error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := f(r.fr); err != nil {
		r.t.Error(err)
	}
}

func dialRawH2(t *testing.T, addr string, useTLS bool) *rawH2 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if useTLS {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != "h2" {
			t.Fatalf("TLS handshake: %v (ALPN %q)", err, tc.ConnectionState().NegotiatedProtocol)
		}
		c = tc
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := &rawH2{t: t, conn: c, fr: http2.NewFramer(c, c), frames: make(chan any, 64)}
	r.enc = hpack.NewEncoder(&r.hbuf)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(r.frames)
		for {
			f, err := r.fr.ReadFrame()
			if err != nil {
				return
			}
			// The framer reuses its frames' memory: keep copies of what
			// the test looks at.
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				g := *f
				g.FrameHeader = f.FrameHeader
				r.frames <- &g
			case *http2.PingFrame:
				p := *f
				r.frames <- &p
			case *http2.MetaHeadersFrame:
				r.frames <- f
			case *http2.DataFrame:
				r.frames <- &dataCopy{f.StreamID, append([]byte(nil), f.Data()...), f.StreamEnded()}
			case *http2.SettingsFrame:
				if !f.IsAck() {
					r.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
				}
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return r
}

type dataCopy struct {
	stream uint32
	data   []byte
	end    bool
}

// get opens stream id with GET path.
func (r *rawH2) get(id uint32, authority, path string) {
	r.t.Helper()
	r.hbuf.Reset()
	scheme := "http"
	if _, ok := r.conn.(*tls.Conn); ok {
		scheme = "https"
	}
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", scheme}, {":authority", authority}, {":path", path}} {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	r.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true})
	})
}

// next returns the next frame, or nil once the connection has ended.
func (r *rawH2) next() any {
	r.t.Helper()
	select {
	case f := <-r.frames:
		return f
	case <-time.After(10 * time.Second):
		r.t.Fatal("no frame within 10s")
		return nil
	}
}

func noticeServer(t *testing.T, useTLS, ownListener bool, notice time.Duration) (*HTTP, string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			time.Sleep(d)
		}
		if r.TLS != nil {
			io.WriteString(w, "tls ")
		}
		io.WriteString(w, "ok")
	})
	h, addr := serveH2(t, mux, useTLS, ownListener)
	h.NoticeTimeout = notice // read by Drain only
	return h, addr
}

// TestHTTP2NoticeBeforeFinalGoAway is RFC 9113 §6.8's graceful shutdown,
// seen from the wire: the drain's first GOAWAY names stream 2^31-1 and is
// followed by a PING; a stream the client opens before it acknowledges
// that PING (one that was already on its way when the GOAWAY was sent) is
// served, and the final GOAWAY names it. With net/http's single GOAWAY
// that stream would be refused.
func TestHTTP2NoticeBeforeFinalGoAway(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tls, own bool
	}{{"h2c", false, false}, {"tls", true, false}, {"tls-listener-of-ours", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			h, addr := noticeServer(t, tc.tls, tc.own, 5*time.Second)
			c := dialRawH2(t, addr, tc.tls)
			c.get(1, addr, "/?sleep=300ms") // in flight throughout
			time.Sleep(50 * time.Millisecond)
			res := drainIn(h, 10*time.Second)

			var goAways []*http2.GoAwayFrame
			answered := map[uint32]string{}
			var pings int
			for f := c.next(); f != nil; f = c.next() {
				switch f := f.(type) {
				case *http2.PingFrame:
					if f.IsAck() {
						continue
					}
					pings++
					if len(goAways) == 1 && f.Data == [8]byte{} {
						t.Fatal("PING after the notice has an empty payload")
					}
					if len(goAways) == 1 {
						// A request the client had sent before it read the
						// notice: the server sees it before the PING's
						// acknowledgement.
						c.get(3, addr, "/")
					}
					c.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
				case *http2.GoAwayFrame:
					if f.ErrCode != http2.ErrCodeNo {
						t.Fatalf("GOAWAY with %v", f.ErrCode)
					}
					goAways = append(goAways, f)
				case *dataCopy:
					answered[f.stream] += string(f.data)
				case *http2.MetaHeadersFrame:
					if s := f.PseudoValue("status"); s != "200" {
						t.Errorf("stream %d: status %q", f.StreamID, s)
					}
				}
			}
			got := <-res
			if got.err != nil || got.r.Cut != 0 {
				t.Fatalf("Drain = %v, %v", got.r, got.err)
			}
			if len(goAways) != 2 || goAways[0].LastStreamID != maxStreamID || goAways[1].LastStreamID != 3 {
				var ids []uint32
				for _, g := range goAways {
					ids = append(ids, g.LastStreamID)
				}
				t.Fatalf("GOAWAY last stream IDs %v, want [%d 3]", ids, uint32(maxStreamID))
			}
			if pings < 2 {
				t.Errorf("%d PINGs from the server, want a probe and one after the notice", pings)
			}
			want := "ok"
			if tc.tls {
				want = "tls ok" // the handler saw the TLS state through the tap
			}
			for _, id := range []uint32{1, 3} {
				if answered[id] != want {
					t.Errorf("stream %d answered %q, want %q", id, answered[id], want)
				}
			}
			t.Logf("drain %v", got.r)
		})
	}
}

// TestHTTP2NoticeWithoutPingAnswers: a client that never acknowledges a
// PING holds the drain up by NoticeTimeout per phase, no longer, and its
// stream is still served.
func TestHTTP2NoticeWithoutPingAnswers(t *testing.T) {
	const notice = 150 * time.Millisecond
	h, addr := noticeServer(t, false, false, notice)
	c := dialRawH2(t, addr, false)
	c.get(1, addr, "/")
	for f := c.next(); ; f = c.next() {
		if d, ok := f.(*dataCopy); ok && d.end {
			break
		}
	}
	start := time.Now()
	res := drainIn(h, 10*time.Second)
	var lastIDs []uint32
	for f := c.next(); f != nil; f = c.next() {
		if g, ok := f.(*http2.GoAwayFrame); ok {
			lastIDs = append(lastIDs, g.LastStreamID)
		}
	}
	got := <-res
	took := time.Since(start)
	if got.err != nil || got.r.Cut != 0 {
		t.Fatalf("Drain = %v, %v", got.r, got.err)
	}
	if len(lastIDs) != 2 || lastIDs[0] != maxStreamID || lastIDs[1] != 1 {
		t.Fatalf("GOAWAY last stream IDs %v", lastIDs)
	}
	// Two unanswered PINGs (the probe, then the one after the notice) and
	// the quiet wait between them, bounded by maxQuiet.
	if took < 2*notice || took > 2*notice+maxQuiet+2*time.Second {
		t.Errorf("drain took %v, want about 2×%v", took, notice)
	}
	t.Logf("drain took %v with NoticeTimeout %v", took, notice)
}

// TestHTTP2OwnTLSNextProtoLeftAlone: a server that set TLSNextProto
// itself keeps it (no tap, and so the single GOAWAY).
func TestHTTP2OwnTLSNextProtoLeftAlone(t *testing.T) {
	called := false
	srv := &http.Server{TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
		"h2": func(*http.Server, *tls.Conn, http.Handler) { called = true },
	}}
	h := &HTTP{Server: srv}
	h.init()
	if h.setupErr != nil || h.twoPhase || len(srv.TLSNextProto) != 1 {
		t.Fatalf("setup changed the server's own TLSNextProto: %v, %v, %d entries", h.setupErr, h.twoPhase, len(srv.TLSNextProto))
	}
	srv.TLSNextProto["h2"](nil, nil, nil)
	if !called {
		t.Fatal("the server's own handler is not in place")
	}
}

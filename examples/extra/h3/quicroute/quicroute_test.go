package quicroute

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/hitlessgo/hitless/drain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The packet builder below writes headers from the layouts of RFC 8999
// section 5 and RFC 9000 section 17, independently of Classify.

const (
	v1 = 0x00000001
	v2 = 0x6b3343cf
)

// longType is the two type bits of a long header for a packet kind in a
// version (RFC 9000 section 17.2, RFC 9369 section 3.2).
func longType(t *testing.T, version uint32, kind string) byte {
	t.Helper()
	v1bits := map[string]byte{"initial": 0, "0rtt": 1, "handshake": 2, "retry": 3}
	v2bits := map[string]byte{"retry": 0, "initial": 1, "0rtt": 2, "handshake": 3}
	m := v1bits
	if version == v2 {
		m = v2bits
	}
	b, ok := m[kind]
	if !ok {
		t.Fatalf("no packet kind %q", kind)
	}
	return b
}

// long builds a long-header packet: header form 1, fixed bit 1, the type
// bits, four reserved/packet-number-length bits set to 0, version, DCID
// length and DCID, SCID length and SCID, then a dummy payload.
func long(first byte, version uint32, dcid, scid []byte) []byte {
	p := []byte{0xc0 | first<<4}
	p = append(p, byte(version>>24), byte(version>>16), byte(version>>8), byte(version))
	p = append(p, byte(len(dcid)))
	p = append(p, dcid...)
	p = append(p, byte(len(scid)))
	p = append(p, scid...)
	return append(p, bytes.Repeat([]byte{0xee}, 24)...)
}

// short builds a short-header packet: header form 0, fixed bit 1, then the
// DCID and a dummy packet number and payload.
func short(dcid []byte) []byte {
	p := append([]byte{0x40}, dcid...)
	return append(p, bytes.Repeat([]byte{0xdd}, 20)...)
}

var (
	testID = drain.RouterID{0xa1, 0xb2, 0xc3, 0xd4}
	// ours is a connection ID issued by the generation testID names.
	ours = []byte{0xa1, 0xb2, 0xc3, 0xd4, 1, 2, 3, 4, 5, 6, 7, 8}
	// client8 and client12 are connection IDs a client chose.
	client8  = []byte{9, 8, 7, 6, 5, 4, 3, 2}
	client12 = []byte{0x11, 0x22, 0x33, 0x44, 9, 9, 9, 9, 9, 9, 9, 9}
	client20 = bytes.Repeat([]byte{0x55}, 20)
	scid     = []byte{0xf0, 0xf1, 0xf2, 0xf3}
)

func TestClassify(t *testing.T) {
	type row struct {
		name  string
		in    []byte
		owner drain.RouterID
		flow  []byte
	}
	rows := []row{
		{name: "empty", in: nil},
		{name: "short", in: short(ours), owner: testID},
		{name: "short exactly 13 bytes", in: short(ours)[:1+ConnIDLen], owner: testID},
		{name: "short truncated", in: short(ours)[:ConnIDLen]},
		{name: "short first byte only", in: []byte{0x40}},
		{name: "short header with form bit only", in: []byte{0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, owner: drain.RouterID{1, 2, 3, 4}},
		{name: "version negotiation", in: long(0, 0, ours, scid)},
		{name: "unknown version", in: long(0, 0xff00001d, ours, scid)},
		{name: "long 20-byte DCID", in: long(longType(t, v1, "handshake"), v1, client20, scid)},
		{name: "long DCID length 21", in: append(long(longType(t, v1, "initial"), v1, nil, nil)[:5], append([]byte{21}, bytes.Repeat([]byte{1}, 40)...)...)},
		{name: "long DCID length 255", in: append(long(longType(t, v1, "initial"), v1, nil, nil)[:5], append([]byte{255}, bytes.Repeat([]byte{1}, 300)...)...)},
		{name: "long 5 bytes", in: long(longType(t, v1, "initial"), v1, ours, scid)[:5]},
		{name: "long DCID cut", in: long(longType(t, v1, "initial"), v1, ours, scid)[:6+ConnIDLen-1]},
		{name: "long DCID exactly", in: long(longType(t, v1, "initial"), v1, ours, scid)[:6+ConnIDLen], owner: testID, flow: ours},
		{name: "initial empty DCID", in: long(longType(t, v1, "initial"), v1, nil, scid)},
	}
	for _, v := range []struct {
		name    string
		version uint32
	}{{"v1", v1}, {"v2", v2}} {
		lt := func(kind string) byte { return longType(t, v.version, kind) }
		rows = append(rows,
			row{name: v.name + " initial client 8", in: long(lt("initial"), v.version, client8, scid), flow: client8},
			row{name: v.name + " initial client 12", in: long(lt("initial"), v.version, client12, scid), owner: drain.RouterID{0x11, 0x22, 0x33, 0x44}, flow: client12},
			row{name: v.name + " initial client 20", in: long(lt("initial"), v.version, client20, scid), flow: client20},
			row{name: v.name + " initial ours", in: long(lt("initial"), v.version, ours, scid), owner: testID, flow: ours},
			row{name: v.name + " 0rtt client 8", in: long(lt("0rtt"), v.version, client8, scid), flow: client8},
			row{name: v.name + " 0rtt client 12", in: long(lt("0rtt"), v.version, client12, scid), owner: drain.RouterID{0x11, 0x22, 0x33, 0x44}, flow: client12},
			row{name: v.name + " handshake ours", in: long(lt("handshake"), v.version, ours, scid), owner: testID},
			row{name: v.name + " handshake client 8", in: long(lt("handshake"), v.version, client8, scid)},
			row{name: v.name + " retry", in: long(lt("retry"), v.version, ours, scid)},
		)
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			got := Classify(r.in)
			if got.Owner != r.owner {
				t.Errorf("Owner = %v, want %v", got.Owner, r.owner)
			}
			if (got.Flow == nil) != (r.flow == nil) || !bytes.Equal(got.Flow, r.flow) {
				t.Errorf("Flow = %x (nil %v), want %x (nil %v)", got.Flow, got.Flow == nil, r.flow, r.flow == nil)
			}
			checkAlias(t, r.in, got.Flow)
		})
	}
}

// checkAlias fails unless flow is nil or a part of datagram whose capacity
// ends where it does, so that appending to it cannot write over the
// datagram.
func checkAlias(t *testing.T, datagram, flow []byte) {
	t.Helper()
	if len(flow) == 0 {
		if flow != nil {
			t.Errorf("Flow is empty but not nil")
		}
		return
	}
	for i := range datagram {
		if &datagram[i] == &flow[0] {
			if i+len(flow) > len(datagram) {
				t.Errorf("Flow [%d:%d] runs past the datagram (%d bytes)", i, i+len(flow), len(datagram))
			}
			if cap(flow) != len(flow) {
				t.Errorf("Flow has capacity %d beyond its length %d", cap(flow), len(flow))
			}
			return
		}
	}
	t.Errorf("Flow does not alias the datagram")
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	inputs := [][]byte{short(ours), long(0, v1, client8, scid), long(2, v1, ours, scid), long(1, v2, client12, scid), long(0, 7, nil, nil)}
	for _, in := range inputs {
		if n := testing.AllocsPerRun(100, func() { Classify(in) }); n != 0 {
			t.Errorf("Classify(%x) allocates %v times", in[:8], n)
		}
	}
}

func TestGenerator(t *testing.T) {
	g := Generator(testID)
	if g.ConnectionIDLen() != ConnIDLen {
		t.Fatalf("ConnectionIDLen = %d, want %d", g.ConnectionIDLen(), ConnIDLen)
	}
	seen := make(map[string]bool)
	for range 1000 {
		id, err := g.GenerateConnectionID()
		if err != nil {
			t.Fatal(err)
		}
		b := id.Bytes()
		if len(b) != ConnIDLen || !bytes.Equal(b[:4], testID[:]) {
			t.Fatalf("connection ID %x: want %d bytes starting with %v", b, ConnIDLen, testID)
		}
		if seen[string(b)] {
			t.Fatalf("connection ID %x issued twice", b)
		}
		seen[string(b)] = true
		// What the generator issues, a client echoes; Classify must find it.
		if got := Classify(short(b)); got.Owner != testID {
			t.Fatalf("Classify(short(%x)).Owner = %v, want %v", b, got.Owner, testID)
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"short", append(short(ours), make([]byte, 1200)...)},
		{"initial", append(long(0, v1, client8, scid), make([]byte, 1200)...)},
		{"handshake-v2", append(long(3, v2, ours, scid), make([]byte, 1200)...)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var r drain.Route
			for b.Loop() {
				r = Classify(c.in)
			}
			_ = r
		})
	}
}

// recordingConn is the server's socket: it classifies every datagram the
// quic.Transport reads, as a drain.Router would.
type recordingConn struct {
	net.PacketConn
	mu   sync.Mutex
	read []classified
}

type classified struct {
	datagram []byte
	route    drain.Route
}

func (c *recordingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(b)
	if n > 0 {
		d := bytes.Clone(b[:n])
		r := Classify(d)
		r.Flow = bytes.Clone(r.Flow)
		c.mu.Lock()
		c.read = append(c.read, classified{d, r})
		c.mu.Unlock()
	}
	return n, addr, err
}

func (c *recordingConn) reads() []classified {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]classified(nil), c.read...)
}

// firstWriteConn is the client's socket: it keeps the first datagram the
// client sends, whose Destination Connection ID the client chose.
type firstWriteConn struct {
	net.PacketConn
	mu    sync.Mutex
	first []byte
}

func (c *firstWriteConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	if c.first == nil {
		c.first = bytes.Clone(b)
	}
	c.mu.Unlock()
	return c.PacketConn.WriteTo(b, addr)
}

func (c *firstWriteConn) firstDatagram() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

// TestRealTraffic runs a quic-go server whose Transport issues connection
// IDs from Generator and a quic-go client on loopback through a handshake
// and a few stream round trips, in QUIC version 1 and version 2, and
// checks the Route of every datagram the server read against what the
// test's own decoder (see fuzz_test.go) says the packet is.
func TestRealTraffic(t *testing.T) {
	for _, v := range []quic.Version{quic.Version1, quic.Version2} {
		t.Run(v.String(), func(t *testing.T) { testRealTraffic(t, v) })
	}
}

func testRealTraffic(t *testing.T, version quic.Version) {
	// The wrappers hide *net.UDPConn from quic-go, which would say so.
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	serverUDP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serverUDP.Close() })
	clientUDP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clientUDP.Close() })

	sconn := &recordingConn{PacketConn: serverUDP}
	str := &quic.Transport{Conn: sconn, ConnectionIDGenerator: Generator(testID)}
	ln, err := str.Listen(serverTLS(t), &quic.Config{Versions: []quic.Version{quic.Version1, quic.Version2}})
	if err != nil {
		t.Fatal(err)
	}
	serverDone := make(chan error, 1)
	go func() { serverDone <- echo(ctx, ln) }()

	cconn := &firstWriteConn{PacketConn: clientUDP}
	ctr := &quic.Transport{Conn: cconn}
	conn, err := ctr.Dial(ctx, serverUDP.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"quicroute-test"}},
		&quic.Config{Versions: []quic.Version{version}})
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.ConnectionState().Version; got != version {
		t.Errorf("negotiated %v, want %v", got, version)
	}
	for i := range 5 {
		s, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		msg := fmt.Sprintf("round trip %d", i)
		if _, err := s.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		got, err := io.ReadAll(s)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Fatalf("echo = %q, want %q", got, msg)
		}
	}
	_ = conn.CloseWithError(0, "done")
	if err := <-serverDone; err != nil {
		t.Errorf("server: %v", err)
	}
	ln.Close()
	str.Close()
	ctr.Close()

	first := decode(cconn.firstDatagram())
	if first.kind != "initial" || len(first.dcid) < 8 {
		t.Fatalf("client's first datagram is %+v, want an Initial with a DCID of 8 bytes or more", first)
	}
	chosen := first.dcid

	reads := sconn.reads()
	if len(reads) == 0 {
		t.Fatal("the server read nothing")
	}
	counts := make(map[string]int)
	for i, c := range reads {
		p := decode(c.datagram)
		counts[p.kind]++
		var want drain.Route
		switch {
		case p.kind == "short" || p.kind == "handshake":
			want.Owner = testID
		case p.kind == "initial" && bytes.Equal(p.dcid, chosen):
			want.Flow = chosen
			if len(chosen) == ConnIDLen {
				copy(want.Owner[:], chosen)
			}
		case p.kind == "initial": // a later Initial, to the server's ID
			want = drain.Route{Owner: testID, Flow: p.dcid}
			counts["initial to the server's ID"]++
		default:
			t.Errorf("datagram %d: unexpected packet %+v", i, p)
			continue
		}
		if want.Owner == testID && !bytes.HasPrefix(p.dcid, testID[:]) {
			t.Errorf("datagram %d (%s): DCID %x was not issued by the server", i, p.kind, p.dcid)
		}
		if c.route.Owner != want.Owner || !bytes.Equal(c.route.Flow, want.Flow) || (c.route.Flow == nil) != (want.Flow == nil) {
			t.Errorf("datagram %d (%s, DCID %x): Route{%v, %x}, want Route{%v, %x}", i, p.kind, p.dcid, c.route.Owner, c.route.Flow, want.Owner, want.Flow)
		}
	}
	t.Logf("server read %d datagrams: %v; client's DCID %x", len(reads), counts, chosen)
	if r := reads[0].route; !bytes.Equal(r.Flow, chosen) || r.Owner == testID {
		t.Errorf("first datagram's Route{%v, %x}, want Flow %x and an Owner other than %v", r.Owner, r.Flow, chosen, testID)
	}
	if counts["short"] == 0 {
		t.Errorf("the server read %v; want 1-RTT packets", counts)
	}
	// Classify reads the first packet of a datagram only. The client's
	// Handshake packets often travel coalesced behind an Initial; check
	// that they were there and that every packet of a datagram carries the
	// DCID of its first one, as RFC 9000 section 12.2 requires.
	handshakes := 0
	for i, c := range reads {
		ps := coalesced(c.datagram)
		if ps == nil {
			t.Errorf("datagram %d does not parse as coalesced packets", i)
			continue
		}
		for _, p := range ps {
			if p.kind == "handshake" {
				handshakes++
			}
			if !bytes.Equal(p.dcid, ps[0].dcid) {
				t.Errorf("datagram %d coalesces DCIDs %x and %x", i, ps[0].dcid, p.dcid)
			}
		}
	}
	if handshakes == 0 {
		t.Errorf("the server read no Handshake packet")
	}
}

// echo accepts one connection and echoes each of its streams until the
// client closes it.
func echo(ctx context.Context, ln *quic.Listener) error {
	conn, err := ln.Accept(ctx)
	if err != nil {
		return err
	}
	for {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			var appErr *quic.ApplicationError
			if errors.As(err, &appErr) && appErr.Remote {
				return nil // the client closed the connection
			}
			return err
		}
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(s, s); err != nil {
			return err
		}
		s.Close()
	}
}

// serverTLS returns a TLS configuration with a fresh self-signed
// certificate.
func serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"quicroute-test"},
	}
}

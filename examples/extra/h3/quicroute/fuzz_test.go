package quicroute

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/hitlessgo/hitless/drain"
)

// packet is what the test's own decoder makes of a datagram.
type packet struct {
	kind string // "short", "initial", "0rtt", "handshake", "retry", "vn", "unknown-version", "malformed"
	dcid []byte
}

// decode is a second decoder, written differently from Classify on
// purpose: it walks the header with a bytes.Reader and names the packet
// types by the tables of RFC 9000 section 17.2 and RFC 9369 section 3.2,
// so that FuzzClassify and TestRealTraffic check Classify against
// something that does not share its code.
func decode(datagram []byte) packet {
	r := bytes.NewReader(datagram)
	first, err := r.ReadByte()
	if err != nil {
		return packet{kind: "malformed"}
	}
	if first&0x80 == 0 {
		dcid := make([]byte, ConnIDLen)
		if _, err := io.ReadFull(r, dcid); err != nil {
			return packet{kind: "malformed"}
		}
		return packet{kind: "short", dcid: dcid}
	}
	var version uint32
	if err := binary.Read(r, binary.BigEndian, &version); err != nil {
		return packet{kind: "malformed"}
	}
	var names []string
	switch version {
	case 0:
		return packet{kind: "vn"}
	case 0x00000001:
		names = []string{"initial", "0rtt", "handshake", "retry"}
	case 0x6b3343cf:
		names = []string{"retry", "initial", "0rtt", "handshake"}
	default:
		return packet{kind: "unknown-version"}
	}
	n, err := r.ReadByte()
	if err != nil || n > 20 {
		return packet{kind: "malformed"}
	}
	dcid := make([]byte, n)
	if _, err := io.ReadFull(r, dcid); err != nil {
		return packet{kind: "malformed"}
	}
	return packet{kind: names[int(first&0x30)>>4], dcid: dcid}
}

// expect is the Route the design (h3-design.md, Brief B) asks for, given
// the decoded packet.
func expect(p packet) drain.Route {
	var r drain.Route
	issuedByAServer := len(p.dcid) == ConnIDLen
	switch p.kind {
	case "short", "handshake":
	case "initial", "0rtt":
		if len(p.dcid) > 0 {
			r.Flow = p.dcid
		}
	default:
		return r
	}
	if issuedByAServer {
		r.Owner = drain.RouterID(p.dcid[:4])
	}
	return r
}

func FuzzClassify(f *testing.F) {
	for _, seed := range [][]byte{
		nil,
		{0x40},
		short(ours),
		short(ours)[:ConnIDLen],
		long(0, 0, ours, scid),
		long(0, 0x1a2a3a4a, ours, scid),
		long(0, v1, client8, scid),
		long(0, v1, client12, scid),
		long(1, v1, client20, scid),
		long(2, v1, ours, scid),
		long(3, v1, ours, scid),
		long(0, v2, ours, scid),
		long(1, v2, client8, scid),
		long(2, v2, client12, scid),
		long(3, v2, ours, scid),
		long(0, v1, nil, nil),
		long(0, v1, ours, scid)[:6+ConnIDLen-1],
		append(long(0, v1, nil, nil)[:5], 21, 1, 2, 3),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, datagram []byte) {
		got := Classify(datagram)
		want := expect(decode(datagram))
		if got.Owner != want.Owner || !bytes.Equal(got.Flow, want.Flow) || (got.Flow == nil) != (want.Flow == nil) {
			t.Fatalf("Classify(%x) = Route{%v, %x}, want Route{%v, %x} (decoded %+v)", datagram, got.Owner, got.Flow, want.Owner, want.Flow, decode(datagram))
		}
		checkAlias(t, datagram, got.Flow)
	})
}

// coalesced splits a datagram into the QUIC packets it coalesces (RFC 9000
// section 12.2) and decodes each: a long-header Initial, 0-RTT or Handshake
// packet ends where its Length field says; anything else runs to the end of
// the datagram. It returns nil if a header does not parse.
func coalesced(datagram []byte) []packet {
	var out []packet
	for len(datagram) > 0 {
		p := decode(datagram)
		out = append(out, p)
		switch p.kind {
		case "initial", "0rtt", "handshake":
		case "malformed":
			return nil
		default:
			return out
		}
		r := bytes.NewReader(datagram[6+len(p.dcid):])
		n, err := r.ReadByte() // Source Connection ID
		if err != nil || r.Len() < int(n) {
			return nil
		}
		_, _ = r.Seek(int64(n), io.SeekCurrent)
		if p.kind == "initial" {
			token, ok := varint(r)
			if !ok || uint64(r.Len()) < token {
				return nil
			}
			_, _ = r.Seek(int64(token), io.SeekCurrent)
		}
		length, ok := varint(r)
		if !ok || uint64(r.Len()) < length {
			return nil
		}
		datagram = datagram[len(datagram)-r.Len()+int(length):]
	}
	return out
}

// varint reads a QUIC variable-length integer (RFC 9000 section 16).
func varint(r *bytes.Reader) (uint64, bool) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, false
	}
	v := uint64(b & 0x3f)
	for range 1<<(b>>6) - 1 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, false
		}
		v = v<<8 | uint64(b)
	}
	return v, true
}

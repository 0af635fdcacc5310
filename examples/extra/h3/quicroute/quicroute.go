// Package quicroute lets a drain.Router route QUIC datagrams between the
// generations of a server that share one UDP socket during an upgrade.
//
// Every generation issues connection IDs that name it, and the router asks
// [Classify] which generation a datagram belongs to. A connection ID issued
// by [Generator] is [ConnIDLen] (12) bytes:
//
//	+---------------------+--------------------------------+
//	| drain.RouterID (4)  | random, from crypto/rand (8)   |
//	+---------------------+--------------------------------+
//
// A QUIC client echoes the server's connection ID as the Destination
// Connection ID of every packet it sends once the server's first answer has
// reached it, so the first four bytes of that field say which generation
// (which process) accepted the connection, whatever the client's address
// does meanwhile.
//
// Why 12 bytes: quic-go needs every connection ID of a Transport to have
// the same length (it finds the Destination Connection ID of a short-header
// packet, which carries no length, by that length), and the eight random
// bytes after the ID keep the chance that two connections of one generation
// draw the same ID negligible (about n²/2⁶⁵ for n connections).
//
// What it gives away: an on-path observer can tell which generation a
// connection belongs to, and so which connections one process serves, as it
// can with the plaintext server IDs of QUIC-LB
// (draft-ietf-quic-load-balancers). The ID is random per generation and the
// rest of the connection ID is random per connection; no user data and no
// address is in it. Connection IDs of one connection still cannot be linked
// to each other beyond "same generation".
//
// Classify reads only the fields RFC 8999 (the version-independent
// invariants of QUIC) fixes, plus the long-header packet type of QUIC
// version 1 (RFC 9000) and version 2 (RFC 9369). Of a datagram that
// coalesces several packets it reads the first one: RFC 9000 section 12.2
// forbids coalescing packets with different connection IDs.
package quicroute

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/quic-go/quic-go"

	"github.com/hitlessgo/hitless/drain"
)

// ConnIDLen is the length of every connection ID a [Generator] issues: the
// four bytes of the generation's drain.RouterID, then eight random bytes.
const ConnIDLen = 12

// ownerLen is the length of the drain.RouterID at the start of a connection
// ID.
const ownerLen = len(drain.RouterID{})

// QUIC versions whose long-header packet types Classify knows.
const (
	version1 uint32 = 0x00000001 // RFC 9000
	version2 uint32 = 0x6b3343cf // RFC 9369, section 3.1
)

// Long-header packet types, as numbered in the packet of each version
// (RFC 9000 section 17.2; RFC 9369 section 3.2 renumbers them).
type packetType uint8

const (
	typeInitial packetType = iota
	type0RTT
	typeHandshake
	typeRetry
)

// v1Types and v2Types map the two type bits of a long header to the packet
// type.
var (
	v1Types = [4]packetType{typeInitial, type0RTT, typeHandshake, typeRetry}
	v2Types = [4]packetType{typeRetry, typeInitial, type0RTT, typeHandshake}
)

// maxConnIDLen is the largest connection ID QUIC version 1 and 2 allow
// (RFC 9000 section 17.2). RFC 8999 allows up to 255 bytes in other
// versions, but Classify routes only versions 1 and 2 by their connection
// ID.
const maxConnIDLen = 20

// Generator returns the quic.ConnectionIDGenerator for a quic.Transport of
// the generation id names: its connection IDs are [ConnIDLen] bytes, the
// four of id and then eight from crypto/rand. It is safe for concurrent
// use.
func Generator(id drain.RouterID) quic.ConnectionIDGenerator {
	return generator{id: id}
}

type generator struct{ id drain.RouterID }

// GenerateConnectionID returns a new connection ID that begins with the
// generation's ID.
func (g generator) GenerateConnectionID() (quic.ConnectionID, error) {
	var b [ConnIDLen]byte
	copy(b[:], g.id[:])
	// crypto/rand.Read does not fail (since Go 1.24 it crashes the program
	// instead); the error is passed on for the interface's sake.
	if _, err := rand.Read(b[ownerLen:]); err != nil {
		return quic.ConnectionID{}, err
	}
	return quic.ConnectionIDFromBytes(b[:]), nil
}

// ConnectionIDLen returns [ConnIDLen].
func (generator) ConnectionIDLen() int { return ConnIDLen }

// Classify says where one QUIC datagram, as received by a server, goes. It
// is the classify function of a drain.Router in front of a quic.Transport
// whose connection IDs come from [Generator].
//
//   - A short-header (1-RTT) packet: Owner is the first four bytes of its
//     Destination Connection ID, the [ConnIDLen] bytes after the first byte.
//   - A version 1 or version 2 Initial or 0-RTT packet: Flow is its
//     Destination Connection ID, because a client's first packets carry an
//     ID it chose itself, and Owner is the first four bytes of that ID if it
//     is [ConnIDLen] bytes long (the client's later Initials carry the
//     server's ID).
//   - A version 1 or version 2 Handshake packet: Owner as for an Initial.
//   - Anything else returns the zero Route, which means "this generation":
//     a Version Negotiation packet, a packet of a version Classify does not
//     know (the generation that reads the socket answers it with a Version
//     Negotiation packet), a Retry (a server never receives one), and any
//     datagram too short to hold what the fields say.
//
// An Initial or 0-RTT packet with an empty Destination Connection ID gets
// no Flow, since an empty key would lump every such packet into one flow;
// RFC 9000 section 7.2 requires at least eight bytes there anyway.
//
// Classify never panics and never allocates: Flow aliases datagram (with
// its capacity cut to its length). It is safe for concurrent use.
func Classify(datagram []byte) drain.Route {
	var r drain.Route
	if len(datagram) == 0 {
		return r
	}
	if datagram[0]&0x80 == 0 {
		// Short header (RFC 8999 section 5.2): the first byte, then the
		// Destination Connection ID, whose length the receiver knows.
		if len(datagram) < 1+ConnIDLen {
			return r
		}
		copy(r.Owner[:], datagram[1:1+ownerLen])
		return r
	}
	// Long header (RFC 8999 section 5.1): first byte, 32-bit version,
	// Destination Connection ID length, Destination Connection ID.
	const dcidAt = 1 + 4 + 1
	if len(datagram) < dcidAt {
		return r
	}
	var types *[4]packetType
	switch binary.BigEndian.Uint32(datagram[1:5]) {
	case version1:
		types = &v1Types
	case version2:
		types = &v2Types
	default: // 0 is Version Negotiation
		return r
	}
	n := int(datagram[5])
	if n > maxConnIDLen || len(datagram) < dcidAt+n {
		return r
	}
	dcid := datagram[dcidAt : dcidAt+n : dcidAt+n]
	switch types[(datagram[0]>>4)&3] {
	case typeInitial, type0RTT:
		if n > 0 {
			r.Flow = dcid
		}
	case typeHandshake:
	default: // Retry
		return r
	}
	if n == ConnIDLen {
		copy(r.Owner[:], dcid[:ownerLen])
	}
	return r
}

//go:build unix

package drain

import (
	"context"
	"net"
	"testing"
)

// BenchmarkRouter is the per-datagram cost of a Router: an echo server
// answers 1,200-byte datagrams (a full QUIC packet) read straight from the
// socket ("bare"), through a Router that keeps them ("router"), and
// through a new generation's Router that passes them to the old
// generation's, which answers ("forwarded": what a connection of a
// draining generation pays). The classifier reads an owner from bytes 1-4,
// as a QUIC short header carries it.
func BenchmarkRouter(b *testing.B) {
	classify := func(d []byte) Route {
		var r Route
		if len(d) >= 5 {
			copy(r.Owner[:], d[1:5])
		}
		return r
	}
	echo := func(c net.PacketConn) (wait func()) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 2048)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				c.WriteTo(buf[:n], from)
			}
		}()
		return func() { <-done }
	}
	ping := func(b *testing.B, to net.Addr, owner RouterID) {
		client, err := net.Dial("udp", to.String())
		if err != nil {
			b.Fatal(err)
		}
		defer client.Close()
		req, buf := make([]byte, 1200), make([]byte, 2048)
		copy(req[1:5], owner[:])
		b.SetBytes(int64(len(req)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.Write(req); err != nil {
				b.Fatal(err)
			}
			if _, err := client.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("bare", func(b *testing.B) {
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		wait := echo(conn)
		ping(b, conn.LocalAddr(), RouterID{})
		conn.Close()
		wait()
	})
	b.Run("router", func(b *testing.B) {
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		r, err := NewRouter(conn, classify, RouterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		wait := echo(r)
		ping(b, conn.LocalAddr(), r.ID())
		r.Close()
		wait()
	})
	b.Run("forwarded", func(b *testing.B) {
		oldGen, newGen, addr := twoGenerations(b, true)
		waitOld, waitNew := echo(oldGen), echo(newGen)
		release := make(chan struct{})
		oldGen.Shutdown = func(context.Context) error { <-release; return nil }
		drained := make(chan struct{})
		go func() { defer close(drained); oldGen.Drain(context.Background()) }()
		<-newGen.started
		ping(b, addr, oldGen.ID())
		if s := newGen.Stats(); s.Dropped > 0 {
			b.Logf("%d of %d dropped", s.Dropped, s.Read)
		}
		close(release)
		<-drained
		newGen.Close()
		waitOld()
		waitNew()
	})
}

// BenchmarkRouterDecision is the Router's own work per datagram, without
// the socket: classify and look up where it goes, for a datagram of this
// generation's ("owned") and for a handshake's first datagram, whose flow
// is looked up and remembered ("flow").
func BenchmarkRouterDecision(b *testing.B) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	d := make([]byte, 1200)
	r, err := NewRouter(conn, func(d []byte) Route {
		var rt Route
		copy(rt.Owner[:], d[1:5])
		if d[0] == 'F' {
			rt.Flow = d[5:13]
		}
		return rt
	}, RouterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4433}
	id := r.ID()
	b.Run("owned", func(b *testing.B) {
		copy(d[1:5], id[:])
		b.ReportAllocs()
		for b.Loop() {
			if r.forward(d, from) {
				b.Fatal("forwarded")
			}
		}
	})
	b.Run("flow", func(b *testing.B) {
		d[0] = 'F'
		b.ReportAllocs()
		for b.Loop() {
			if r.forward(d, from) {
				b.Fatal("forwarded")
			}
		}
	})
}

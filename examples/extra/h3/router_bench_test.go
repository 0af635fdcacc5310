//go:build unix

package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/examples/extra/h3/quicroute"
)

// BenchmarkHTTP3Router is what the router costs an HTTP/3 request: one
// client connection sends GET requests one after another to a quic-go
// server whose transport reads the UDP socket itself ("bare"), reads it
// through a drain.Router ("router"), or, for a connection of a generation
// that is draining, gets each of its packets passed on by the next
// generation's Router ("forwarded"). All in one process, on loopback.
func BenchmarkHTTP3Router(b *testing.B) {
	cert, err := selfSigned()
	if err != nil {
		b.Fatal(err)
	}
	serve := func(b *testing.B, conn net.PacketConn, id drain.RouterID) (stop func()) {
		tr := &quic.Transport{Conn: conn, ConnectionIDGenerator: quicroute.Generator(id)}
		ln, err := tr.Listen(http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}), &quic.Config{})
		if err != nil {
			b.Fatal(err)
		}
		srv := &http3.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })}
		done := make(chan struct{})
		go func() { defer close(done); srv.ServeListener(ln) }()
		return func() { srv.Close(); ln.Close(); tr.Close(); <-done }
	}
	dial := func(b *testing.B, addr net.Addr) (get func(), closeConn func()) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		qc, err := quic.DialAddr(ctx, addr.String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
		if err != nil {
			b.Fatal(err)
		}
		cc := (&http3.Transport{}).NewClientConn(qc)
		req, err := http.NewRequest("GET", "https://"+addr.String()+"/", nil)
		if err != nil {
			b.Fatal(err)
		}
		get = func() {
			resp, err := cc.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return get, func() { qc.CloseWithError(0, "") }
	}
	run := func(b *testing.B, get func()) {
		get() // the handshake's round trips are not the request's
		b.ReportAllocs()
		for b.Loop() {
			get()
		}
	}
	udp := func(b *testing.B) net.PacketConn {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		return c
	}

	b.Run("bare", func(b *testing.B) {
		conn := udp(b)
		stop := serve(b, conn, drain.RouterID{})
		get, closeConn := dial(b, conn.LocalAddr())
		run(b, get)
		closeConn()
		stop()
		conn.Close()
	})
	b.Run("router", func(b *testing.B) {
		conn := udp(b)
		r, err := drain.NewRouter(conn, quicroute.Classify, drain.RouterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		stop := serve(b, r, r.ID())
		get, closeConn := dial(b, conn.LocalAddr())
		run(b, get)
		closeConn()
		stop()
		r.Close()
	})
	b.Run("forwarded", func(b *testing.B) {
		conn := udp(b)
		f, err := conn.(*net.UDPConn).File()
		if err != nil {
			b.Fatal(err)
		}
		conn2, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		oldGen, err := drain.NewRouter(conn, quicroute.Classify, drain.RouterOptions{
			Successor: os.NewFile(uintptr(fds[0]), "succ"), HandedOver: func() bool { return true }})
		if err != nil {
			b.Fatal(err)
		}
		newGen, err := drain.NewRouter(conn2, quicroute.Classify, drain.RouterOptions{Predecessor: os.NewFile(uintptr(fds[1]), "pred")})
		if err != nil {
			b.Fatal(err)
		}
		stopOld := serve(b, oldGen, oldGen.ID())
		stopNew := serve(b, newGen, newGen.ID())
		get, closeConn := dial(b, conn.LocalAddr())
		get() // a connection of the old generation
		release := make(chan struct{})
		oldGen.Shutdown = func(context.Context) error { <-release; return nil }
		drained := make(chan struct{})
		go func() { defer close(drained); oldGen.Drain(context.Background()) }()
		// Once the new generation passes packets on, the old one's
		// connection is served through it.
		for end := time.Now().Add(5 * time.Second); newGen.Stats().Forwarded == 0; {
			get()
			if time.Now().After(end) {
				b.Fatal("the new generation passed nothing on within 5 s")
			}
		}
		run(b, get)
		if s := newGen.Stats(); s.Dropped > 0 {
			b.Logf("new generation: %+v", s)
		}
		closeConn()
		close(release)
		<-drained
		stopOld()
		stopNew()
		newGen.Close()
	})
}

package drain

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The request-path cost of drain.HTTP against the same server without it,
// side by side in one run:
//
//	go test -run '^$' -bench . -benchmem ./drain/

func benchHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", "1")
		io.WriteString(w, "ok\n")
	})
}

// BenchmarkHandler measures the handler wrapper alone (no network).
func BenchmarkHandler(b *testing.B) {
	req := httptest.NewRequest("GET", "/", nil)
	run := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	}
	b.Run("plain", func(b *testing.B) { run(b, benchHandler()) })
	b.Run("drain", func(b *testing.B) {
		h := &HTTP{Server: &http.Server{Handler: benchHandler()}}
		h.init()
		run(b, h.Server.Handler)
	})
}

// BenchmarkServe measures whole keep-alive requests over loopback.
func BenchmarkServe(b *testing.B) {
	run := func(b *testing.B, serve func(net.Listener) error, srv *http.Server) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go serve(ln)
		defer srv.Close()
		tr := &http.Transport{MaxIdleConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		url := "http://" + ln.Addr().String() + "/"
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	b.Run("plain", func(b *testing.B) {
		srv := &http.Server{Handler: benchHandler()}
		run(b, srv.Serve, srv)
	})
	b.Run("drain", func(b *testing.B) {
		h := &HTTP{Server: &http.Server{Handler: benchHandler()}}
		run(b, h.Serve, h.Server)
	})
}

// BenchmarkPacket measures one request and its answer over loopback UDP,
// served by a bare read loop (a goroutine per datagram, as Packet runs
// them) and by Packet.Serve, side by side.
func BenchmarkPacket(b *testing.B) {
	run := func(b *testing.B, serve func(net.PacketConn) (stop func())) {
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		defer serve(conn)()
		client, err := net.Dial("udp", conn.LocalAddr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer client.Close()
		req, buf := []byte("ping"), make([]byte, 64)
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
	echo := func(c net.PacketConn, p []byte, from net.Addr) { c.WriteTo(p, from) }
	b.Run("bare", func(b *testing.B) {
		run(b, func(conn net.PacketConn) func() {
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, maxDatagram)
				for {
					n, from, err := conn.ReadFrom(buf)
					if err != nil {
						return
					}
					p := make([]byte, n)
					copy(p, buf[:n])
					go echo(conn, p, from)
				}
			}()
			return func() { conn.Close(); <-done }
		})
	})
	b.Run("drain", func(b *testing.B) {
		run(b, func(conn net.PacketConn) func() {
			p := &Packet{Conn: conn, Handler: echo}
			done := make(chan struct{})
			go func() { defer close(done); p.Serve() }()
			return func() { p.Drain(context.Background()); <-done }
		})
	})
}

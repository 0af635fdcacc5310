package drain

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// Request-path cost of the tracking for HTTP/2 (h2c) and raw TCP, each
// against the same server without it, side by side in one run:
//
//	go test -run '^$' -bench 'ServeH2C|Listener' -benchmem -count 10 ./drain/ | benchstat -col /.name -

// BenchmarkServeH2C measures whole HTTP/2 requests over loopback (h2c,
// concurrent streams on one connection).
func BenchmarkServeH2C(b *testing.B) {
	run := func(b *testing.B, serve func(net.Listener) error, srv *http.Server) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go serve(ln)
		defer srv.Close()
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
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
	newServer := func() *http.Server {
		srv := &http.Server{Handler: benchHandler(), Protocols: new(http.Protocols)}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		return srv
	}
	b.Run("plain", func(b *testing.B) {
		srv := newServer()
		run(b, srv.Serve, srv)
	})
	// The same HTTP/2 server as drain's, without the drain (before Go
	// 1.27 drain.HTTP serves HTTP/2 with x/net's copy of net/http's).
	b.Run("plain-same-h2", func(b *testing.B) {
		srv := withDrainsHTTP2(newServer())
		run(b, srv.Serve, srv)
	})
	b.Run("drain", func(b *testing.B) {
		h := &HTTP{Server: newServer()}
		run(b, h.Serve, h.Server)
	})
}

// BenchmarkListener measures a line echo over long-lived connections:
// accepted from a plain listener, or tracked by a Listener.
func BenchmarkListener(b *testing.B) {
	run := func(b *testing.B, ln net.Listener) {
		var wg sync.WaitGroup
		defer wg.Wait()
		defer ln.Close()
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Go(func() {
					defer c.Close()
					r := bufio.NewReader(c)
					for {
						l, err := r.ReadSlice('\n')
						if err != nil {
							return
						}
						if _, err := c.Write(l); err != nil {
							return
						}
					}
				})
			}
		})
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			msg := []byte("hello, hitless\n")
			for pb.Next() {
				if _, err := c.Write(msg); err != nil {
					b.Error(err)
					return
				}
				if _, err := r.ReadSlice('\n'); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	listen := func(b *testing.B) net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		return ln
	}
	b.Run("plain", func(b *testing.B) { run(b, listen(b)) })
	b.Run("drain", func(b *testing.B) { run(b, &Listener{Listener: listen(b)}) })
}

// BenchmarkHijacked measures a line echo over hijacked connections (what
// a WebSocket handler does): served by http.Server alone, or through HTTP,
// which tracks them.
func BenchmarkHijacked(b *testing.B) {
	run := func(b *testing.B, serve func(net.Listener) error, srv *http.Server, handlers *sync.WaitGroup) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go serve(ln)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: lines\r\nConnection: Upgrade\r\n\r\n")
			if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				b.Errorf("upgrade: %v", err)
				return
			}
			msg := []byte("hello, hitless\n")
			for pb.Next() {
				if _, err := c.Write(msg); err != nil {
					b.Error(err)
					return
				}
				if _, err := r.ReadSlice('\n'); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		srv.Close()
		handlers.Wait()
	}
	b.Run("plain", func(b *testing.B) {
		var handlers sync.WaitGroup
		srv := &http.Server{Handler: hijackHandler(&handlers, true)}
		run(b, srv.Serve, srv, &handlers)
	})
	b.Run("drain", func(b *testing.B) {
		var handlers sync.WaitGroup
		h := &HTTP{Server: &http.Server{Handler: hijackHandler(&handlers, true)}}
		run(b, h.Serve, h.Server, &handlers)
	})
}

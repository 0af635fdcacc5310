package drain_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hitlessgo/hitless/drain"
)

// A Kubernetes pod on SIGTERM: the readiness endpoint fails first, the
// balancer is given a probe period to notice, then HTTP (with its
// WebSockets) and a raw TCP protocol drain together under one deadline.
func ExampleGroup() {
	var draining bool // stands in for a readiness.Handler
	mux := http.NewServeMux()
	srv := &drain.HTTP{Server: &http.Server{Handler: mux}}
	httpLn, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(httpLn)

	rawLn, _ := net.Listen("tcp", "127.0.0.1:0")
	tcp := &drain.Listener{Listener: rawLn, Name: "raw"}
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				<-tcp.WrapUp() // a real handler serves, and says goodbye here
			}()
		}
	}()

	g := drain.Group{Delay: 5 * time.Second}
	g.OnDrain(func() { draining = true })
	g.Add(srv, tcp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	report, err := g.Drain(ctx)
	slog.Info("drained", "report", report, "err", err, "draining", draining)
}

// A WebSocket (or any hijacking) handler ends its connection when the
// drain begins.
func ExampleWrapUp() {
	handler := func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close() // ends the connection for the drain
		select {
		case <-drain.WrapUp(r.Context()):
			// send the protocol's goodbye (a close frame 1001), then return
		case <-r.Context().Done():
		}
	}
	_ = handler
}

// A UDP echo server that drains during an upgrade: the next generation
// reads the same socket, so Drain stops reading without closing it and
// closes it once every datagram read has been answered.
func ExamplePacket() {
	conn, _ := net.ListenPacket("udp", "127.0.0.1:0") // in a real server: upgrade.ListenPacket
	p := &drain.Packet{Conn: conn, Name: "echo", Handler: func(c net.PacketConn, b []byte, from net.Addr) {
		c.WriteTo(b, from) // through the Packet, so that answers are counted
	}}
	go p.Serve() // returns nil once Drain has stopped reading

	// Later, once the next generation is ready:
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	report, err := p.Drain(ctx)
	slog.Info("drained", "report", report, "err", err)
}

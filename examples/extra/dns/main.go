// Command dns is an authoritative DNS server, on github.com/miekg/dns,
// with hitless upgrades: send it SIGHUP to replace it with the binary now
// at its path, SIGTERM to drain and stop. It serves UDP and TCP on the
// same -addr and answers one fixed zone, example.test.:
//
//	www.example.test.   A 192.0.2.1, AAAA 2001:db8::1
//	mail.example.test.  A 192.0.2.2
//	ns.example.test.    A 192.0.2.53
//	example.test.       SOA, NS ns, MX 10 mail
//	txt.example.test.   TXT "hitless example zone"
//	pid.example.test.   TXT "<pid of the serving process>"
//
// Any other name under example.test. is NXDOMAIN, a name that exists
// without the type asked NOERROR with no answer, a name outside the zone
// REFUSED. -delay makes every answer take that long, a stand-in for a
// backend, so that queries are in flight when an upgrade comes.
//
// # How it drains
//
// The UDP socket is shared by both generations during an upgrade, each
// reading it through its own descriptor, so every query reaches one of
// them. The old generation serves it through a [drain.Packet]: at the
// upgrade it stops reading without closing the socket (the new
// generation, ready by then, reads every later query), lets the handlers
// of the queries it read answer, then closes its descriptor. No query is
// lost, and no client needs to retry.
//
// TCP is served through a [drain.Listener] by this program itself (on
// miekg/dns's messages), answering the queries pipelined on a connection
// concurrently, as RFC 7766 allows. At the upgrade the new generation
// accepts on the same socket; the old one stops accepting, reads each
// connection a few milliseconds more (the queries the client has already
// sent), answers every query it has read, shuts its write side and
// closes once the client has closed its own (see tcpServer). A client
// that keeps its connection open reads all its answers, then the end of
// the connection. A query that reaches the connection after the old
// generation stopped reading it (while the last answers are computed, or
// after the end) gets no answer there: RFC 7766 (section 6.2.3) asks the
// client to send it again on a new connection, which reaches the new
// generation, and TestTCPThroughUpgrades checks that this works. A client
// that does not, such as dnsperf, loses it. Measured with dnsperf -m tcp
// (4 connections, 2000 queries a second, -delay 1ms) through 20
// upgrades, 24000 queries: 34 to 59 lost with this drain (7 with -delay
// 0), 306 with the library's own (*dns.Server).ShutdownContext over a
// drain.Listener, which answers one query of a connection at a time and
// closes it after the one it is answering, leaving those pipelined behind
// it unanswered, and 259 with -naive.
//
// -naive makes the server close its sockets at once when it is upgraded
// instead of draining, as a server that knows nothing of the overlap
// would: the queries whose handlers were running are lost. It is a
// demonstration of what the drain prevents (the tests' mutation), not
// something to run in production.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/upgrade"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dns:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:5353", "listen address, for UDP and TCP both")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long queries in flight and TCP connections have to end")
	delay := flag.Duration("delay", 0, "how long each answer takes (a stand-in for a backend)")
	naive := flag.Bool("naive", false, "DEMONSTRATION ONLY: close the sockets at once when upgraded instead of draining (loses the queries in flight)")
	flag.Parse()
	if *delay < 0 {
		return fmt.Errorf("-delay %v: want zero or more", *delay)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{PIDFile: *pidFile, DrainTimeout: *drainTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	ctx := context.Background()
	pc, err := upg.ListenPacket(ctx, "dns", "udp", *addr)
	if err != nil {
		return err
	}
	ln, err := upg.Listen(ctx, "dns-tcp", "tcp", *addr)
	if err != nil {
		return err
	}
	z := newZone(os.Getpid(), *delay)
	udp := newUDP(pc, z)
	tcp := newTCP(ln, z, log)
	go func() {
		if err := udp.srv.ActivateAndServe(); err != nil && !udp.draining.Load() {
			log.Error("serve", "server", "dns-udp", "err", err)
			upg.Stop()
		}
	}()
	go func() {
		if err := tcp.Serve(); err != nil {
			log.Error("serve", "server", "dns-tcp", "err", err)
			upg.Stop()
		}
	}()
	if *naive {
		return upg.Run(ctx, closeAtOnce{udp, tcp})
	}
	return upg.Run(ctx, udp, tcp)
}

// udpServer serves the shared UDP socket with miekg/dns's server through
// a drain.Packet, which the library reads as its net.PacketConn.
type udpServer struct {
	srv      *dns.Server
	pkt      *drain.Packet
	started  chan struct{} // closed by the library once it serves
	draining atomic.Bool   // set when the drain begins: a Serve error is expected then
}

func newUDP(pc net.PacketConn, h dns.Handler) *udpServer {
	u := &udpServer{pkt: &drain.Packet{Conn: pc, Name: "dns-udp"}, started: make(chan struct{})}
	u.srv = &dns.Server{PacketConn: u.pkt, Handler: h, NotifyStartedFunc: func() { close(u.started) }}
	u.pkt.Shutdown = u.shutdown
	return u
}

// Drain drains the Packet: it stops reading, then calls shutdown, which
// waits for the library's handlers to answer.
func (u *udpServer) Drain(ctx context.Context) (drain.Report, error) {
	u.draining.Store(true)
	return u.pkt.Drain(ctx)
}

// shutdown is the library's ShutdownContext, which fails on a server that
// has not started yet: an upgrade can come that early, so it waits for the
// start first (a server that never starts has nothing to drain).
func (u *udpServer) shutdown(ctx context.Context) error {
	select {
	case <-u.started:
	default:
		select {
		case <-u.started:
		case <-ctx.Done():
			return nil
		}
	}
	return u.srv.ShutdownContext(ctx)
}

// closeAtOnce drains its servers with a deadline that has already passed:
// each closes its sockets and connections at once, cutting the queries in
// flight. It is -naive's drain, a demonstration of what the drain
// prevents.
type closeAtOnce []drain.Drainer

func (c closeAtOnce) Drain(ctx context.Context) (drain.Report, error) {
	past, cancel := context.WithDeadline(ctx, time.Unix(1, 0))
	defer cancel()
	g := drain.Group{Name: "naive"}
	g.Add(c...)
	r, _ := g.Drain(past)
	// The cuts are the point: they are in the report, not an error.
	return r, nil
}

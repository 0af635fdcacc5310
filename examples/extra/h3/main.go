// Command h3 serves HTTP/3 (QUIC, over one UDP socket) with hitless
// upgrades: send it SIGHUP to replace it with the binary now at its path,
// SIGTERM to drain and stop.
//
//	GET /            200, header X-Pid: <pid of the serving process>, body "ok <pid>"
//	GET /?sleep=1s   a long response: one line ("0", "1", ...) written and
//	                 flushed every 100 ms for 1 s, then "done"
//
// Both generations hold the shared UDP socket during an upgrade, but only
// one reads it at a time: each generation issues QUIC connection IDs that
// begin with its drain.Router's ID (package quicroute), and the router of
// the generation that reads the socket passes the datagrams of the other
// generation's connections on to it (see drain.Router and
// upgrade.Upgrader.ListenRouted). A connection therefore stays with the
// generation that accepted it until it ends, and the old generation drains
// its connections while the new one serves every new one.
//
// The drain ends each HTTP/3 connection with a GOAWAY that no request
// crosses, for clients that send one request at a time on a connection
// (see carrier in drain.go): after the drain begins, the next request
// that arrives on a connection starts that connection's shutdown, whose
// GOAWAY names that request as the last one served, and the end of its
// response is held back for -notice (50 ms) so that the GOAWAY reaches
// the client first. The notice covers the time quic-go takes to write the
// GOAWAY (from a goroutine of its own) and the client's to read it (on
// another goroutine than the response's): on a loaded 2-core machine with
// the race detector, 10 ms was not always enough. The client then opens its next request on a new
// connection, which reaches the new generation. A connection with no
// request in progress and none for -idle-goaway (500 ms) gets its GOAWAY
// without a carrier; a request sent at that very moment is rejected
// (H3_REQUEST_REJECTED). The drain's deadline (-drain-timeout) closes any
// connection still open then.
//
// The carrier is needed because quic-go's http3.Server cannot send the
// two-step GOAWAY of RFC 9114 section 5.2 (first the largest stream ID,
// then, about a round trip later, the last one it accepted): its
// Shutdown sends one GOAWAY naming the last stream it accepted and
// rejects every request stream above it, so a request that crossed the
// GOAWAY fails, and the control stream it writes on is not exposed. The
// smallest upstream change that would make the carrier unnecessary:
// http3.Server, on Shutdown, first sends a GOAWAY with the largest client
// bidirectional stream ID (2^62-4), keeps accepting for about one round
// trip (or a Server.GoAwayGrace), then sends the final GOAWAY; or expose
// the control stream, as a RawServerConn.GoAway(id).
//
// -router=false leaves the router out (both generations then read the
// shared socket, and the connection IDs are quic-go's): the mutation the
// tests use to show that requests fail without it.
//
// The certificate is self-signed, made at start-up (for tests; bring your
// own in production).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/examples/extra/h3/quicroute"
	"github.com/hitlessgo/hitless/upgrade"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "h3:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8443", "UDP listen address")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long connections have to end")
	notice := flag.Duration("notice", 50*time.Millisecond, "how long the response that carries a connection's GOAWAY is held back, so that the GOAWAY arrives first")
	idleGoAway := flag.Duration("idle-goaway", 500*time.Millisecond, "during a drain, send GOAWAY to a connection with no request for this long")
	routed := flag.Bool("router", true, "route datagrams between generations (false: both read the shared socket; a test's mutation)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{PIDFile: *pidFile, DrainTimeout: *drainTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	cert, err := selfSigned()
	if err != nil {
		return err
	}
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})
	c := newCarrier(handler(), *notice, *idleGoAway)

	ctx := context.Background()
	tr := &quic.Transport{ConnContext: c.connContext}
	var d drain.Drainer
	if *routed {
		r, err := upg.ListenRouted(ctx, "h3", "udp", *addr, quicroute.Classify)
		if err != nil {
			return err
		}
		tr.Conn = r
		tr.ConnectionIDGenerator = quicroute.Generator(r.ID())
		r.Shutdown = c.Shutdown
		d = r
	} else {
		pc, err := upg.ListenPacket(ctx, "h3", "udp", *addr)
		if err != nil {
			return err
		}
		tr.Conn = pc
		d = unrouted{c, pc}
	}
	ln, err := tr.Listen(tlsConf, &quic.Config{})
	if err != nil {
		tr.Conn.Close()
		return err
	}
	c.ln, c.tr = ln, tr
	go func() {
		if err := c.serve(ln); !errors.Is(err, quic.ErrServerClosed) {
			log.Error("serve", "err", err)
			upg.Stop()
		}
	}()
	return upg.Run(ctx, logged{d, c, log})
}

// unrouted drains the carrier over a socket with no router (-router=false).
type unrouted struct {
	c  *carrier
	pc net.PacketConn
}

func (u unrouted) Drain(ctx context.Context) (drain.Report, error) {
	err := u.c.Shutdown(ctx)
	u.pc.Close()
	return drain.Report{Name: "h3"}, err
}

// logged logs a drain's full report: the router's datagram counts and the
// carrier's connection counts.
type logged struct {
	drain.Drainer
	c   *carrier
	log *slog.Logger
}

func (l logged) Drain(ctx context.Context) (drain.Report, error) {
	r, err := l.Drainer.Drain(ctx)
	cr := l.c.report()
	r.Open, r.Ended, r.Cut, r.LastEnded = cr.Open, cr.Ended, cr.Cut, cr.LastEnded
	l.log.Info("drain report", "report", r, "goaway_carried", cr.carried, "goaway_idle", cr.idle)
	return r, err
}

func handler() http.Handler {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		d, err := time.ParseDuration(r.URL.Query().Get("sleep"))
		if err != nil {
			fmt.Fprintln(w, "ok", pid)
			return
		}
		// One line per 100 ms, each flushed, so that the response is on
		// the wire for all of d and a client can tell a whole body from a
		// cut one.
		f, _ := w.(http.Flusher)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; time.Duration(i)*100*time.Millisecond < d; i++ {
			fmt.Fprintln(w, i)
			if f != nil {
				f.Flush()
			}
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintln(w, "done")
	})
	return mux
}

// selfSigned makes a certificate for 127.0.0.1 and localhost, valid for a
// day, signed by its own ECDSA P-256 key.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

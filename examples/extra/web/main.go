// Command web serves WebSocket echo and HTTP/2 (over TLS, and cleartext
// h2c) with hitless upgrades: send it SIGHUP to replace it with the binary
// now at its path, SIGTERM to drain and stop.
//
//	GET /            200, header X-Pid: <pid of the serving process>
//	GET /?sleep=1s   the same, after 1 s
//	GET /ws          WebSocket echo, as below
//
// The WebSocket protocol:
//
//	server: HELLO <pid>          text, on connect
//	client: <message>            any message, text or binary
//	server: <message>            the same message, in order
//	server: BYE <pid>            text, once, when this generation drains
//
// After BYE the server still echoes every message it receives, until the
// client closes the connection (the close handshake; 1000 "normal
// closure" is the code to use). A client finishes the message it has
// outstanding, closes, and sends the next one on a new connection, which
// reaches the next generation. BYE is what tells a client to go, as
// examples/tcp's BYE line does: a close frame from the server would lose
// every message the client sent while that frame was on its way, since no
// data may follow a close frame (RFC 6455 section 5.5.1).
//
// A client tells BYE from an echo by the message it has outstanding: an
// echo equals it exactly, byte for byte (with several outstanding, the
// oldest, since echoes come in order), and BYE is the one message that
// does not. A client that sends the text "BYE <pid>" itself receives it
// twice, BYE and echo, and which of the two it takes for which changes
// nothing.
//
// A client that has not closed within -bye-grace of the BYE (default 2 s,
// at most a quarter of -drain-timeout), one that does not know BYE, gets
// the close frame 1001 "going away" after all; messages that cross that
// frame are not echoed. The drain's deadline (-drain-timeout) cuts any
// connection still open then.
//
// -addr serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge); -tls-addr,
// if set, serves HTTP/1.1 and HTTP/2 over TLS with a self-signed
// certificate made at start-up (for tests; bring your own in production).
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

	"github.com/coder/websocket"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/upgrade"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "web:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "HTTP/1.1 and h2c listen address")
	tlsAddr := flag.String("tls-addr", "", "HTTP/1.1 and HTTP/2 over TLS listen address (empty: none)")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long connections have to end")
	byeGrace := flag.Duration("bye-grace", 2*time.Second, "how long a WebSocket client has to close after BYE before the server closes with 1001 (at most a quarter of -drain-timeout)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{PIDFile: *pidFile, DrainTimeout: *drainTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	srv := &http.Server{Handler: handler(wsGrace(*byeGrace, *drainTimeout)), ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	h := &drain.HTTP{Server: srv, Name: "web"}

	// Everything about the server is set before it first serves.
	var tln net.Listener
	if *tlsAddr != "" {
		cert, err := selfSigned()
		if err != nil {
			return err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		if tln, err = upg.Listen(context.Background(), "https", "tcp", *tlsAddr); err != nil {
			return err
		}
	}
	ln, err := upg.Listen(context.Background(), "http", "tcp", *addr)
	if err != nil {
		return err
	}
	go serve(log, upg, func() error { return h.Serve(ln) })
	if tln != nil {
		go serve(log, upg, func() error { return h.ServeTLS(tln, "", "") })
	}
	return upg.Run(context.Background(), logged{h, log})
}

func serve(log *slog.Logger, upg *upgrade.Upgrader, f func() error) {
	if err := f(); !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		upg.Stop()
	}
}

// logged logs a drain's full report.
type logged struct {
	drain.Drainer
	log *slog.Logger
}

func (l logged) Drain(ctx context.Context) (drain.Report, error) {
	r, err := l.Drainer.Drain(ctx)
	l.log.Info("drain report", "report", r)
	return r, err
}

// wsGrace is how long a WebSocket has, after BYE, before the server
// closes it with 1001: bye, but at most a quarter of the drain's deadline.
//
// A client that knows BYE closes one round trip after its outstanding
// echo: milliseconds on a LAN, well under a second on a slow mobile link.
// The 2 s default leaves that an order of magnitude, and costs nothing
// when every client knows BYE, since the old generation exits as soon as
// its last client has gone; it only delays the 1001 for clients that
// ignore BYE, which then hold the old generation that much longer. The
// cap: a connection's WrapUp may come up to half the deadline into the
// drain (drain.HTTP spreads the connections' turns over at most half of
// it), and a grace of at most a quarter leaves the last quarter for the
// close handshake and the messages still in flight after the 1001;
// drain.HTTP cuts whatever is open at the deadline, and reports it.
func wsGrace(bye, drainTimeout time.Duration) time.Duration {
	if drainTimeout <= 0 {
		drainTimeout = upgrade.DefaultDrainTimeout // as upgrade.Options reads it
	}
	return max(min(bye, drainTimeout/4), 0)
}

func handler(byeGrace time.Duration) http.Handler {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintln(w, "hello from", pid, r.Proto)
	})
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered
		}
		echo(c, pid, drain.WrapUp(r.Context()), byeGrace)
	})
	return mux
}

// echo runs one WebSocket until the client leaves, or until grace after
// the BYE it sends when the drain begins.
func echo(c *websocket.Conn, pid string, wrapUp <-chan struct{}, grace time.Duration) {
	defer c.CloseNow()
	// The handler's context ends with the hijacked connection's request;
	// the connection's own life is bounded by the drain's deadline, which
	// closes it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type message struct {
		typ  websocket.MessageType
		data []byte
	}
	msgs := make(chan message)
	readErr := make(chan error, 1)
	go func() {
		for {
			typ, data, err := c.Read(ctx)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case msgs <- message{typ, data}:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
	}()
	if err := c.Write(ctx, websocket.MessageText, []byte("HELLO "+pid)); err != nil {
		return
	}
	var graceOver <-chan time.Time // armed by the BYE
	for {
		select {
		case m := <-msgs:
			// Before BYE and after it alike: the client may have sent
			// this before it read BYE, and is owed its echo.
			if err := c.Write(ctx, m.typ, m.data); err != nil {
				return
			}
		case <-readErr:
			// The client closed (the library has answered its close
			// frame) or broke the connection.
			return
		case <-wrapUp:
			wrapUp = nil
			if err := c.Write(ctx, websocket.MessageText, []byte("BYE "+pid)); err != nil {
				return
			}
			graceOver = time.After(grace)
		case <-graceOver:
			// A client that ignores BYE: the close handshake, our close
			// frame, the client's reply (which the reader goroutine
			// reads), then the TCP close.
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				c.Close(websocket.StatusGoingAway, "server restarting")
			}()
			for {
				select {
				case <-msgs:
					// Sent after our close frame crossed it: not echoed
					// (RFC 6455 5.5.1), and lost unless the client
					// resends it.
				case <-readErr:
					<-closed
					return
				}
			}
		}
	}
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

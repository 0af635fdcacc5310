// Command web serves WebSocket echo and HTTP/2 (over TLS, and cleartext
// h2c) with hitless upgrades: send it SIGHUP to replace it with the binary
// now at its path, SIGTERM to drain and stop.
//
//	GET /            200, header X-Pid: <pid of the serving process>
//	GET /?sleep=1s   the same, after 1 s
//	GET /ws          WebSocket: the server sends "HELLO <pid>", then echoes
//	                 every message; when this generation drains it closes
//	                 with 1001 "going away" (messages the client sent after
//	                 that close frame are not echoed: the client resends
//	                 them to the next generation)
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
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{PIDFile: *pidFile, DrainTimeout: *drainTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	srv := &http.Server{Handler: handler(), ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
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

func handler() http.Handler {
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
		echo(c, pid, drain.WrapUp(r.Context()))
	})
	return mux
}

// echo runs one WebSocket until the client leaves or the drain begins.
func echo(c *websocket.Conn, pid string, wrapUp <-chan struct{}) {
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
	for {
		select {
		case m := <-msgs:
			if err := c.Write(ctx, m.typ, m.data); err != nil {
				return
			}
		case <-readErr:
			return // the client closed (or broke) the connection
		case <-wrapUp:
			// The close handshake: our close frame, the client's reply
			// (which the reader goroutine reads), then the TCP close.
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				c.Close(websocket.StatusGoingAway, "server restarting")
			}()
			for {
				select {
				case <-msgs:
					// Sent after our close frame crossed it: not echoed
					// (RFC 6455 5.5.1); the client resends it.
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

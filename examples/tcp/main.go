// Command tcp is a line-based echo server over raw TCP with hitless
// upgrades: send it SIGHUP to replace it with the binary now at its path,
// SIGTERM to drain and stop.
//
// The protocol, one line each way:
//
//	server: HELLO <pid>          on connect
//	client: <text>               any line
//	server: <text>               the same line, in order
//	server: BYE                  once, when this generation drains (the
//	                             connections in turn over 250 ms, so that
//	                             they do not all reconnect at once)
//
// After BYE the server still answers every line it receives, until the
// client closes its side; then it closes too, so the client sees EOF
// after the last complete reply, never a reset, and reconnects (to the
// next generation). BYE is what tells a client to go, as "Connection:
// close" does in HTTP: closing a connection the client may be writing to
// would lose its line.
//
// With -health it also serves a readiness endpoint (GET /ready: 200 while
// serving, 503 from the moment draining begins), and -lame-duck keeps
// accepting for that long after it turned 503, for load balancers.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/readiness"
	"github.com/hitlessgo/hitless/upgrade"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tcp:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:7070", "listen address")
	health := flag.String("health", "", "serve GET /ready on this address (empty: none)")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long connections have to end")
	lameDuck := flag.Duration("lame-duck", 0, "how long to keep accepting after /ready turned 503")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{PIDFile: *pidFile, DrainTimeout: *drainTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	group := drain.Group{Name: "tcp-example", Delay: *lameDuck}
	inner, err := upg.Listen(context.Background(), "tcp", "tcp", *addr)
	if err != nil {
		return err
	}
	ln := &drain.Listener{Listener: inner, Name: "echo"}
	group.Add(ln)
	// Every goroutine ends before main returns: the drain has closed
	// every connection by then.
	var handlers sync.WaitGroup
	defer handlers.Wait()
	handlers.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // the drain closed the listener
			}
			handlers.Go(func() { serve(c, ln.WrapUpConn(c)) })
		}
	})

	if *health != "" {
		var ready readiness.Handler
		group.OnDrain(ready.SetDraining)
		hln, err := upg.Listen(context.Background(), "health", "tcp", *health)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("GET /ready", &ready)
		hs := &drain.HTTP{Server: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, Name: "health"}
		group.Add(hs)
		go func() {
			if err := hs.Serve(hln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("health", "err", err)
				upg.Stop()
			}
		}()
	}
	return upg.Run(context.Background(), logged{&group, log})
}

// logged logs a drain's full report, per server.
type logged struct {
	drain.Drainer
	log *slog.Logger
}

func (l logged) Drain(ctx context.Context) (drain.Report, error) {
	r, err := l.Drainer.Drain(ctx)
	l.log.Info("drain report", "report", r)
	return r, err
}

// serve runs the protocol on one connection.
func serve(c net.Conn, wrapUp <-chan struct{}) {
	defer c.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		r := bufio.NewReader(c)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return // EOF: the client is done; or the connection was cut
			}
			lines <- l
		}
	}()
	defer func() {
		c.Close() // ends the reader if it still reads
		for range lines {
		}
	}()
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "HELLO %d\n", os.Getpid())
	if w.Flush() != nil {
		return
	}
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return
			}
			io.WriteString(w, l)
		case <-wrapUp:
			wrapUp = nil
			io.WriteString(w, "BYE\n")
		}
		if w.Flush() != nil {
			return
		}
	}
}

// Command baseline is an HTTP server upgraded with plain tableflip, written
// the way tableflip's README and its http_example_test.go show: on SIGHUP
// Upgrade, after Exit http.Server.Shutdown with a 30 s limit, and no
// lame-duck handling. It is the yardstick the hitless library is measured
// against (internal/harness's TestCompareWithTableflipBaseline), so it must
// stay the textbook pattern: do not fix its draining here.
//
// Its handlers match the library's examples:
//
//	GET /                 200, X-Pid: <pid>, a short body
//	GET /?sleep=2s        the same, after 2 s
//	GET /stream?dur=3s    X-Pid, X-Lines: dur/100ms, then that many lines,
//	                      one every 100 ms, each flushed
//
// Flags: -addr (default 127.0.0.1:8080) and -pidfile; -h2c also serves
// HTTP/2 with prior knowledge on the same port (net/http's
// Server.Protocols), for HTTP/2 load tools. SIGHUP upgrades, SIGTERM
// drains and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// lineInterval is the pace of /stream; clients compute the expected line
// count from it.
const lineInterval = 100 * time.Millisecond

func main() {
	// run returns instead of exiting so that its deferred calls happen.
	os.Exit(run())
}

func run() int {
	addr := flag.String("addr", "127.0.0.1:8080", "`address` to listen on")
	pidFile := flag.String("pidfile", "", "`path` of the pid file, written when ready")
	h2c := flag.Bool("h2c", false, "also serve h2c (HTTP/2 with prior knowledge)")
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("baseline %d: ", os.Getpid()))

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile})
	if err != nil {
		log.Println("tableflip:", err)
		return 1
	}
	defer upg.Stop()

	// Separate channels, so a SIGTERM is acted on while an Upgrade (which
	// blocks until the child is ready) is running: Stop interrupts it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		upg.Stop()
	}()

	ln, err := upg.Listen("tcp", *addr)
	if err != nil {
		log.Println("listen:", err)
		return 1
	}
	srv := &http.Server{
		Handler:           handler(os.Getpid()),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if *h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	go func() {
		// After a successful upgrade tableflip closes the listener, so
		// Serve returns a "use of closed network connection" error here
		// before Shutdown; that is expected in this pattern.
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Println("serve:", err)
		}
	}()

	if err := upg.Ready(); err != nil {
		log.Println("ready:", err)
		return 1
	}
	log.Println("ready on", *addr)
	<-upg.Exit()

	// The README's pattern: wait for connections to drain, but not
	// forever (tableflip refuses new upgrades until the parent exits).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Println("shutdown:", err)
		return 1
	}
	log.Println("exiting")
	return 0
}

func handler(pid int) http.Handler {
	pidStr := strconv.Itoa(pid)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pidStr)
		if s := r.URL.Query().Get("sleep"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				http.Error(w, "bad sleep duration", http.StatusBadRequest)
				return
			}
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "hello from %7s\n", pidStr) // the same length from every generation, as ab checks
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("dur"))
		if err != nil || d < 0 {
			http.Error(w, "bad dur duration", http.StatusBadRequest)
			return
		}
		n := int(d / lineInterval)
		w.Header().Set("X-Pid", pidStr)
		w.Header().Set("X-Lines", strconv.Itoa(n))
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusOK)
		f, _ := w.(http.Flusher)
		t := time.NewTicker(lineInterval)
		defer t.Stop()
		for i := range n {
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
			fmt.Fprintf(w, "line %d of %d from %s\n", i+1, n, pidStr)
			if f != nil {
				f.Flush()
			}
		}
	})
	return mux
}

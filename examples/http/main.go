// Command http is an HTTP server with hitless upgrades: send it SIGHUP to
// replace it with the binary now at its path, SIGTERM to drain and stop.
//
//	GET /                   200, header X-Pid: <pid of the serving process>
//	GET /?sleep=2s          the same, after 2 s
//	GET /stream?dur=3s      one line every 100 ms for 3 s; header X-Lines says how many
//
// It is the server the demo, the tests and the benchmarks upgrade under load.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/upgrade"
)

// version is set at build time (-ldflags "-X main.version=...") and sent in
// the X-Version header, so a test or an operator can tell binaries apart.
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address: host:port, or a unix socket path with -network unix")
	network := flag.String("network", "tcp", "tcp or unix")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	upgradeTimeout := flag.Duration("upgrade-timeout", upgrade.DefaultUpgradeTimeout, "how long a new generation has to become ready")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long in-flight requests have to finish")
	control := flag.String("control", "", "serve the control socket (hitless reload|stop|status) at this path")
	requireFile := flag.String("require-file", "", "readiness gate: do not report ready unless this file exists (a certificate, a config)")
	probation := flag.Duration("probation", 0, "a new generation serves alongside the old one this long before it takes over; if it dies meanwhile, the old one goes on")
	crashLoopAfter := flag.Int("crash-loop-after", upgrade.DefaultCrashLoopAfter, "after this many failed upgrades in a row, refuse upgrades for a while (negative: never)")
	preflight := flag.Bool("preflight", false, "before starting a new binary, also run it with -check and the same flags: catches flags it refuses, at the cost of a second start of the binary as the upgrade begins (docs/upgrade-preflight.md)")
	fdStore := flag.Bool("fdstore", false, "keep the listening sockets in systemd's fd store (the unit needs FileDescriptorStoreMax=)")
	h2c := flag.Bool("h2c", false, "also serve HTTP/2 with prior knowledge (h2c) on the same listener, for HTTP/2 load tools")
	takeBack := flag.Bool("take-back", true, "serve again if a new generation dies while this one drains (RunFunc); false: hand the sockets over for good (Run)")
	check := flag.Bool("check", false, "check the flags and exit: what a running generation asks of a new binary before starting it")
	flag.Parse()

	if *check {
		return checkConfig(*network, *addr)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{
		Version:        version,
		PIDFile:        *pidFile,
		UpgradeTimeout: *upgradeTimeout,
		DrainTimeout:   *drainTimeout,
		Logger:         log,
		ControlSocket:  *control,
		CrashLoop:      upgrade.CrashLoop{After: *crashLoopAfter},
		Probation:      upgrade.Probation{For: *probation},
		FDStore:        *fdStore,
		ReadyCheck: func(context.Context) error {
			if *requireFile == "" {
				return nil
			}
			_, err := os.Stat(*requireFile)
			return err
		},
		// With -preflight, before starting a new binary, make sure it
		// accepts our flags. Off by default: it starts the whole binary
		// once more at the moment the new generation starts, competing
		// with it and with the serving one for the same cores, and a
		// new generation that refuses its flags fails its upgrade anyway
		// (before it is ready, so the old one goes on serving); the check
		// only makes that failure earlier and its message clearer.
		Preflight: func(ctx context.Context, binary string) error {
			if !*preflight {
				return nil
			}
			cmd := exec.CommandContext(ctx, binary, append([]string{"-check"}, os.Args[1:]...)...)
			// A process the check leaves behind holding its output must
			// not keep the upgrade waiting.
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s -check: %v: %s", binary, err, strings.TrimSpace(string(out)))
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	// RunFunc, not Run: serve is called again if a new generation dies
	// while this one drains, and this one takes the service back.
	serve := func(ctx context.Context) ([]drain.Drainer, error) {
		ln, err := upg.Listen(ctx, "http", *network, *addr)
		if err != nil {
			return nil, err
		}
		// Timeouts bound what a client that stops talking can hold:
		// without IdleTimeout, idle keep-alive connections could hold
		// every descriptor and make every upgrade fail for want of one.
		srv := &drain.HTTP{Server: &http.Server{Handler: handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}}
		if *h2c {
			// drain.HTTP tells h2c connections from HTTP/1.1 ones by
			// their first bytes, and drains them with GOAWAY, when
			// Protocols says so; it must be set before serving.
			srv.Server.Protocols = new(http.Protocols)
			srv.Server.Protocols.SetHTTP1(true)
			srv.Server.Protocols.SetUnencryptedHTTP2(true)
		}
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Error("serve", "err", err)
				upg.Stop()
			}
		}()
		return []drain.Drainer{srv}, nil
	}
	if !*takeBack {
		servers, err := serve(context.Background())
		if err != nil {
			return err
		}
		return upg.Run(context.Background(), servers...)
	}
	return upg.RunFunc(context.Background(), serve)
}

// checkConfig validates what the flags ask for without binding anything.
func checkConfig(network, addr string) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
		if _, err := net.ResolveTCPAddr(network, addr); err != nil {
			return fmt.Errorf("check: -addr %s: %w", addr, err)
		}
	case "unix":
	default:
		return fmt.Errorf("check: -network %q: want tcp or unix", network)
	}
	fmt.Println("ok")
	return nil
}

func handler() http.Handler {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Version", version)
		if s := r.URL.Query().Get("sleep"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				http.Error(w, "bad sleep: "+err.Error(), http.StatusBadRequest)
				return
			}
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		// The pid padded to its widest (pid_max is at most 2^22): every
		// generation's answer has the same length, which load tools such
		// as ab check.
		fmt.Fprintf(w, "hello from %7s\n", pid)
	})
	// What a soak watches for leaks across generations.
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		fds := -1
		if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
			fds = len(ents)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"pid":%s,"goroutines":%d,"fds":%d}`+"\n", pid, runtime.NumGoroutine(), fds)
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("dur"))
		if err != nil {
			http.Error(w, "bad dur: "+err.Error(), http.StatusBadRequest)
			return
		}
		const every = 100 * time.Millisecond
		lines := int(d / every)
		w.Header().Set("X-Pid", pid)
		w.Header().Set("X-Lines", strconv.Itoa(lines))
		w.Header().Set("Content-Type", "text/plain")
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := range lines {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
			fmt.Fprintf(w, "line %d from %s\n", i+1, pid)
			w.(http.Flusher).Flush()
		}
	})
	return mux
}

//go:build unix

// Command stateful is an HTTP server with hitless upgrades that hands the
// next generation more than its listening socket (send it SIGHUP to
// upgrade, SIGTERM to drain and stop):
//
//	GET  /count          the request counter; every request counts, this one too
//	PUT  /cache/{key}    store the request body under key
//	GET  /cache/{key}    the value stored under key (404 if none)
//
// Every response carries X-Count (the counter after this request) and X-Pid.
//
// What it hands over, and why each the way it does:
//
//   - The counter lives in a memory file (a memfd on Linux) that every
//     generation maps and increments atomically, handed over with
//     OfferFile. While the old generation drains, it serves alongside the
//     new one, and both count on the same word: no value is handed out
//     twice and no increment is lost. A snapshot (OfferState) could not do
//     that: the old generation goes on counting after the new one took it.
//   - The cache is handed over with OfferState, as a JSON snapshot taken
//     when the upgrade starts. What the old generation stores after that
//     (while the new one starts, and while it drains) does not reach the
//     new generation: fine for a cache, which can be refilled.
//   - The request log (-log) is opened once, by the first generation,
//     without O_APPEND, and handed over with OfferFile: every generation
//     writes through the same open file, so its offset continues across
//     generations and no line overwrites another. One line per request.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/upgrade"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "stateful:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address (host:port)")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	logPath := flag.String("log", "stateful.log", "request log: one line per request, opened by the first generation and handed over")
	upgradeTimeout := flag.Duration("upgrade-timeout", upgrade.DefaultUpgradeTimeout, "how long a new generation has to become ready")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long in-flight requests have to finish")
	check := flag.Bool("check", false, "check the flags and exit (what examples/http asks of a new binary before it starts it)")
	flag.Parse()
	if *check {
		fmt.Println("ok")
		return nil
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{
		PIDFile: *pidFile, UpgradeTimeout: *upgradeTimeout, DrainTimeout: *drainTimeout, Logger: log,
	})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	counter, err := takeCounter(upg)
	if err != nil {
		return err
	}
	reqLog, err := takeLog(upg, *logPath)
	if err != nil {
		return err
	}
	defer reqLog.Close()
	c, err := takeCache(upg, log)
	if err != nil {
		return err
	}

	ln, err := upg.Listen(context.Background(), "http", "tcp", *addr)
	if err != nil {
		return err
	}
	s := &service{pid: strconv.Itoa(os.Getpid()), counter: counter, log: reqLog, cache: c}
	srv := &drain.HTTP{Server: &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve", "err", err)
			upg.Stop()
		}
	}()
	log.Info("serving", "generation", upg.Status().Generation, "count", counter.Load(), "cached", c.len())
	return upg.Run(context.Background(), srv)
}

// counterSize is what the counter's memory file holds: one page, of which
// the first 8 bytes are the counter.
const counterSize = 4096

// takeCounter maps the counter the previous generation handed over, or,
// in the first generation, a new one, and offers it to the next.
func takeCounter(upg *upgrade.Upgrader) (*atomic.Uint64, error) {
	f, err := upg.File("counter")
	if errors.Is(err, upgrade.ErrNotHandedOver) {
		f, err = newCounterFile(counterSize)
	}
	if err != nil {
		return nil, fmt.Errorf("counter: %w", err)
	}
	defer f.Close() // the mapping and the Upgrader's copy keep it
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("counter: %w", err)
	}
	var mem []byte
	cerr := raw.Control(func(fd uintptr) {
		mem, err = unix.Mmap(int(fd), 0, counterSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	})
	if err = errors.Join(cerr, err); err != nil {
		return nil, fmt.Errorf("counter: mapping it: %w", err)
	}
	if err := upg.OfferFile("counter", f); err != nil {
		return nil, err
	}
	// The mapping stays for the life of the process; the page is aligned,
	// as 64-bit atomics need.
	return (*atomic.Uint64)(unsafe.Pointer(&mem[0])), nil
}

// takeLog returns the request log the previous generation handed over,
// or, in the first generation, opens it, and offers it to the next.
func takeLog(upg *upgrade.Upgrader, path string) (*os.File, error) {
	f, err := upg.File("log")
	if errors.Is(err, upgrade.ErrNotHandedOver) {
		// Deliberately without O_APPEND: the open file, and with it the
		// offset, is what passes from generation to generation.
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
		if err == nil {
			_, err = f.Seek(0, io.SeekEnd)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("request log: %w", err)
	}
	if err := upg.OfferFile("log", f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// cache is a map handed over as a snapshot.
type cache struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// takeCache restores the cache the previous generation's snapshot holds,
// if any, and offers this generation's to the next.
func takeCache(upg *upgrade.Upgrader, log *slog.Logger) (*cache, error) {
	c := &cache{m: map[string]string{}}
	b, err := upg.State("cache")
	switch {
	case errors.Is(err, upgrade.ErrNotHandedOver):
	case err != nil:
		// Too large for this generation's limit: start empty, it is a
		// cache.
		log.Warn("starting with an empty cache", "err", err)
	default:
		if err := json.Unmarshal(b, &c.m); err != nil {
			return nil, fmt.Errorf("cache handed over: %w", err)
		}
	}
	err = upg.OfferState("cache", func() ([]byte, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return json.Marshal(c.m)
	})
	return c, err
}

type service struct {
	pid     string
	counter *atomic.Uint64
	log     *os.File
	cache   *cache
}

func (s *service) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, w.Header().Get("X-Count"))
	})
	mux.HandleFunc("PUT /cache/{key}", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.cache.mu.Lock()
		s.cache.m[r.PathValue("key")] = string(b)
		s.cache.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /cache/{key}", func(w http.ResponseWriter, r *http.Request) {
		s.cache.mu.Lock()
		v, ok := s.cache.m[r.PathValue("key")]
		s.cache.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, v)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.counter.Add(1)
		// One write per line: the generations share the file's offset,
		// and the kernel moves it for each write as a whole.
		if _, err := fmt.Fprintf(s.log, "request %d pid %s %s %s\n", n, s.pid, r.Method, r.URL.Path); err != nil {
			http.Error(w, "request log: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("X-Count", strconv.FormatUint(n, 10))
		w.Header().Set("X-Pid", s.pid)
		mux.ServeHTTP(w, r)
	})
}

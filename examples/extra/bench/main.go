// Command bench upgrades servers under load for every traffic kind and
// shows what the clients felt: for each kind and server, requests,
// failures, the p99 latency of requests started within ±500 ms of an
// upgrade against the steady p99 (and their ratio, per run), the CPU and
// peak RSS of the old and the new generation while both run, and a picture
// of each run over time.
//
//	cd examples/extra && go run ./bench [-runs 3] [-upgrades 10] [-gap 2s] [-out DIR] [-raw] [-kinds h2c,raw-tcp] [-args '-preflight']
//
// The kinds: HTTP/1.1 keep-alive, a new connection per request, h2c,
// HTTP/2 over TLS, gRPC unary, WebSocket echo and raw TCP. Each runs against
// the library's shipped example for it, with the example's default flags
// (examples/http, examples/extra/web, examples/extra/grpc, examples/tcp),
// and, where it can serve the kind, against a server written the way
// tableflip's README shows (internal/baseline), one after the other in the
// same run so that both see the same machine. -args gives the library's
// examples flags beyond their defaults (the tableflip server gets none),
// for example -args -preflight with the HTTP/1.1 kinds to measure
// examples/http's opt-in pre-flight.
//
// It lives in the examples/extra module because the HTTP/2, gRPC and
// WebSocket clients need dependencies the library's own module must not
// pull.
//
// DIR gets bench.md (the table) and, for the first run of every kind and
// server, <kind>-<server>.svg; with -raw, also every request of every run
// as <kind>-<server>-run<N>.csv.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is one invocation's settings; flags set it, and the test sets a
// smaller one.
type config struct {
	Runs, Upgrades int
	Gap            time.Duration // from one SIGHUP to the next
	Warmup, After  time.Duration // load before the first upgrade, and after the last; the warm-up is not measured
	Steady         time.Duration // measured load with no upgrade, after the warm-up: part of what "steady" is made of
	Rate, Conns    int           // load: requests or messages per second over all connections
	Sample         time.Duration // how often each generation's CPU and RSS are read
	Bucket         time.Duration // the pictures' time resolution
	Window         time.Duration // "near an upgrade": started within ± this of a SIGHUP
	Out            string        // where bench.md and the pictures go; empty: a new temporary directory
	Raw            bool          // also write every request of every run as CSV
	Kinds          []string
	Args           []string // more flags for the library's examples
	Command        string   // how it was invoked, for the report
}

func defaultConfig() config {
	return config{
		// Two seconds apart: within ±500 ms of each SIGHUP is near, the
		// other half steady, interleaved (see measure).
		Runs: 3, Upgrades: 10, Gap: 2 * time.Second,
		Warmup: time.Second, Steady: 2 * time.Second, After: time.Second,
		Rate: 1000, Conns: 32,
		Sample: 10 * time.Millisecond, Bucket: 100 * time.Millisecond, Window: 500 * time.Millisecond,
		Kinds: kindNames(),
	}
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		os.Exit(2)
	}
	// ^C stops the load and the servers (bench closes them) instead of
	// leaving generations behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := bench(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "runs of every kind and server")
	fs.IntVar(&cfg.Upgrades, "upgrades", cfg.Upgrades, "upgrades per run")
	fs.DurationVar(&cfg.Gap, "gap", cfg.Gap, "from one SIGHUP to the next (longer if an upgrade takes longer)")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "load before the first upgrade, not measured")
	fs.DurationVar(&cfg.Steady, "steady", cfg.Steady, "measured load with no upgrade before the first one (with the time between upgrades beyond ±500 ms, the steady state upgrades are compared with)")
	fs.DurationVar(&cfg.After, "after", cfg.After, "measured load after the last upgrade")
	fs.IntVar(&cfg.Rate, "rate", cfg.Rate, "requests (or messages) per second, over all connections")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "client connections")
	fs.DurationVar(&cfg.Sample, "sample", cfg.Sample, "how often each generation's CPU time and RSS are read")
	fs.BoolVar(&cfg.Raw, "raw", false, "also write every request of every run to DIR/<kind>-<server>-run<N>.csv")
	fs.StringVar(&cfg.Out, "out", "", "`directory` for bench.md and the SVGs (default: a new temporary directory)")
	kinds := fs.String("kinds", strings.Join(cfg.Kinds, ","), "comma-separated traffic kinds to run")
	extra := fs.String("args", "", "more flags for the library's examples, space-separated (the tableflip server gets none)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected arguments %q", fs.Args())
		fmt.Fprintln(stderr, "bench:", err)
		return cfg, err
	}
	cfg.Args = strings.Fields(*extra)
	cfg.Kinds = nil
	for k := range strings.SplitSeq(*kinds, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(kindNames(), k) {
			err := fmt.Errorf("unknown kind %q; the kinds are %s", k, strings.Join(kindNames(), ", "))
			fmt.Fprintln(stderr, "bench:", err)
			return cfg, err
		}
		cfg.Kinds = append(cfg.Kinds, k)
	}
	if len(cfg.Kinds) == 0 || cfg.Runs < 1 || cfg.Upgrades < 1 || cfg.Rate < 1 || cfg.Conns < 1 || cfg.Gap < 0 || cfg.Warmup < 0 || cfg.After < 0 || cfg.Sample <= 0 {
		err := errors.New("want at least one kind, -runs, -upgrades, -rate and -conns of 1 or more, a positive -sample and no negative durations")
		fmt.Fprintln(stderr, "bench:", err)
		return cfg, err
	}
	words := []string{"go run ./bench"}
	for _, a := range args {
		if strings.ContainsAny(a, " \t'") {
			a = strconv.Quote(a)
		}
		words = append(words, a)
	}
	cfg.Command = strings.Join(words, " ")
	return cfg, nil
}

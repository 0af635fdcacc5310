//go:build unix

// Command bench is the load-under-upgrade benchmark: for each kind of
// traffic it upgrades a server several times under load and reports what
// the clients saw — requests, failures by class, latency overall and within
// ±500 ms of each upgrade — and how long the upgrades took, for hitless
// (examples/http) and, side by side in the same run, for a server written
// the way tableflip's README shows (internal/baseline).
//
//	go run ./internal/bench [-upgrades 10] [-out bench.md]
//	go run ./internal/bench -outside [-upgrades 10] [-out outside.md]
//
// -outside runs only the comparison under load tools nobody here wrote
// (wrk, ab, h2load; see outside.go).
//
// WebSocket, HTTP/2 and gRPC run in the examples/extra module's tests (they
// keep those dependencies out of this module); their figures are in
// BENCHMARKS.md. Latency near upgrades for every traffic kind, with
// timelines, CPU and RSS during the overlap and a picture per kind, is
// measured by examples/extra/bench.

package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

func main() {
	if outsideRequested(os.Args[1:]) {
		// The outside-client comparison has flags of its own.
		if err := runOutside(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench -outside:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type kind struct {
	name    string
	network string // tcp or unix
	cfg     loadgen.Config
}

type server struct{ name, bin string }

type row struct {
	kind, server string
	res          loadgen.Result
	ups          []harness.Upgrade
	window       loadgen.Histogram // requests started within ±500 ms of an upgrade
}

func run() error {
	upgrades := flag.Int("upgrades", 10, "upgrades per kind and server")
	out := flag.String("out", "", "also write the table, as Markdown, to this file")
	extra := flag.Bool("extra", true, "also run the WebSocket, HTTP/2 and gRPC upgrade tests of the examples/extra module and print their summary")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "hitless-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	servers := []server{{"tableflip-readme", filepath.Join(dir, "baseline")}, {"hitless", filepath.Join(dir, "hitless")}}
	fmt.Fprintln(os.Stderr, "building the servers ...")
	if err := harness.Build(ctx, "./internal/baseline", servers[0].bin, false, ""); err != nil {
		return err
	}
	if err := harness.Build(ctx, "./examples/http", servers[1].bin, false, ""); err != nil {
		return err
	}
	kinds := []kind{
		{"keep-alive", "tcp", loadgen.Config{Kind: loadgen.KeepAlive, Workers: 8}},
		{"new connection per request", "tcp", loadgen.Config{Kind: loadgen.NewConn, Workers: 4}},
		{"slow requests (1 s)", "tcp", loadgen.Config{Kind: loadgen.Slow, Workers: 8, Sleep: time.Second}},
		{"streams (1.5 s)", "tcp", loadgen.Config{Kind: loadgen.Stream, Workers: 4, StreamDur: 1500 * time.Millisecond}},
		{"keep-alive, unix socket", "unix", loadgen.Config{Kind: loadgen.KeepAlive, Workers: 8}},
	}
	var rows []row
	for _, k := range kinds {
		for _, s := range servers {
			if k.network == "unix" && s.name != "hitless" {
				continue // the README server listens on TCP only
			}
			fmt.Fprintf(os.Stderr, "%s, %s ...\n", k.name, s.name)
			r, err := measure(ctx, dir, s, k, *upgrades)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", k.name, s.name, err)
			}
			rows = append(rows, r)
		}
	}
	table := render(rows, *upgrades)
	if *extra {
		fmt.Fprintln(os.Stderr, "WebSocket, HTTP/2, gRPC (examples/extra) ...")
		summary, err := runExtra(ctx)
		if err != nil {
			return err
		}
		table += summary
	}
	fmt.Print(table)
	if *out != "" {
		return os.WriteFile(*out, []byte(table), 0o644)
	}
	return nil
}

func measure(ctx context.Context, dir string, s server, k kind, upgrades int) (row, error) {
	r := row{kind: k.name, server: s.name}
	addr := ""
	args := []string{}
	if k.network == "unix" {
		addr = filepath.Join(dir, "http.sock")
		os.Remove(addr)
		args = append(args, "-network", "unix")
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return r, err
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	pidFile := filepath.Join(dir, s.name+".pid")
	srv, err := harness.Start(ctx, harness.Config{
		Binary: s.bin, Args: append(args, "-addr", addr, "-pidfile", pidFile),
		PIDFile: pidFile, Log: devNull(),
	})
	if err != nil {
		return r, err
	}
	defer srv.Close()
	cfg := k.cfg
	cfg.Network, cfg.Addr, cfg.Samples = k.network, addr, true
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	done := make(chan error, 1)
	go func() {
		var err error
		r.res, err = loadgen.Run(loadCtx, cfg)
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	for i := range upgrades {
		u, err := srv.Upgrade(ctx)
		if err != nil {
			stopLoad()
			<-done
			return r, fmt.Errorf("upgrade %d: %w", i+1, err)
		}
		r.ups = append(r.ups, u)
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	if err := <-done; err != nil {
		return r, err
	}
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := srv.Stop(stopCtx); err != nil {
		return r, err
	}
	var at []time.Time
	for _, u := range r.ups {
		at = append(at, u.Signalled)
	}
	r.window = loadgen.Near(r.res.Samples, at, 500*time.Millisecond)
	return r, nil
}

// runExtra runs the upgrade-under-load tests of the examples/extra module
// (its own module, so that gRPC and WebSocket stay out of this one) and
// returns their summary lines.
func runExtra(ctx context.Context) (string, error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "-run", "TestUpgradesUnderLoad", "./...")
	cmd.Dir = filepath.Join(root, "examples", "extra")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("examples/extra: %v\n%s", err, out)
	}
	var b strings.Builder
	b.WriteString("\nWebSocket, HTTP/2 and gRPC, 20 upgrades each (examples/extra):\n\n")
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, ": "); i > 0 && strings.HasPrefix(line, "main_test.go:") {
			line = line[i+2:]
			if strings.Contains(line, "failed") || strings.Contains(line, "upgrades;") || strings.Contains(line, "retries") || strings.Contains(line, "latency") {
				b.WriteString("- " + line + "\n")
			}
		}
	}
	return b.String(), nil
}

func devNull() *os.File {
	f, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	return f
}

func ms(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0fms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000)
}

func median(ups []harness.Upgrade, f func(harness.Upgrade) time.Duration) (time.Duration, time.Duration) {
	ds := make([]time.Duration, 0, len(ups))
	for _, u := range ups {
		ds = append(ds, f(u))
	}
	slices.Sort(ds)
	if len(ds) == 0 {
		return 0, 0
	}
	return ds[len(ds)/2], ds[len(ds)-1]
}

func render(rows []row, upgrades int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%d upgrades per row; latency p50 / p99 / max; \"near upgrades\": requests started within ±500 ms of a SIGHUP.\n\n", upgrades)
	fmt.Fprintln(&b, "| traffic | server | requests | failed | failures by class | latency overall | latency near upgrades | SIGHUP → new ready (median / max) | SIGHUP → old gone (median / max) |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		var classes []string
		for _, c := range loadgen.Classes {
			if n := r.res.Failures[c]; n > 0 {
				classes = append(classes, fmt.Sprintf("%s %d", c, n))
			}
		}
		h := r.res.Latency
		readyMed, readyMax := median(r.ups, func(u harness.Upgrade) time.Duration { return u.Ready.Sub(u.Signalled) })
		goneMed, goneMax := median(r.ups, func(u harness.Upgrade) time.Duration { return u.OldExited.Sub(u.Signalled) })
		fmt.Fprintf(&b, "| %s | %s | %d | **%d** | %s | %s / %s / %s | %s / %s / %s | %s / %s | %s / %s |\n",
			r.kind, r.server, r.res.Requests, r.res.Failed(), strings.Join(classes, ", "),
			ms(h.Quantile(0.5)), ms(h.Quantile(0.99)), ms(h.Max()),
			ms(r.window.Quantile(0.5)), ms(r.window.Quantile(0.99)), ms(r.window.Max()),
			ms(readyMed), ms(readyMax), ms(goneMed), ms(goneMax))
	}
	return b.String()
}

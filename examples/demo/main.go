//go:build unix

// Command demo shows a hitless upgrade under load: it builds and starts
// examples/http, sends four kinds of traffic at it (keep-alive, a new
// connection per request, slow requests, streams), upgrades it again and
// again, stops it, and prints what every client saw. It exits non-zero if a
// single request failed.
//
//	go run ./examples/demo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	upgrades := flag.Int("upgrades", 10, "how many upgrades to perform")
	gap := flag.Duration("gap", 300*time.Millisecond, "pause between upgrades")
	binary := flag.String("binary", "", "server binary to use (default: build ./examples/http)")
	race := flag.Bool("race", false, "build the server with the race detector")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "hitless-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	if *binary == "" {
		*binary = filepath.Join(dir, "http")
		fmt.Println("building ./examples/http ...")
		if err := harness.Build(ctx, "./examples/http", *binary, *race, ""); err != nil {
			return err
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	pidFile := filepath.Join(dir, "http.pid")
	srv, err := harness.Start(ctx, harness.Config{
		Binary:  *binary,
		Args:    []string{"-addr", addr, "-pidfile", pidFile, "-drain-timeout", "30s"},
		PIDFile: pidFile,
		Log:     logf,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Printf("server pid %d listening on %s\n\n", srv.PID(), addr)

	kinds := []loadgen.Config{
		{Kind: loadgen.KeepAlive, Workers: 8},
		{Kind: loadgen.NewConn, Workers: 4},
		{Kind: loadgen.Slow, Workers: 8, Sleep: time.Second},
		{Kind: loadgen.Stream, Workers: 4, StreamDur: 1500 * time.Millisecond},
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	results := make([]loadgen.Result, len(kinds))
	loadErrs := make([]error, len(kinds))
	var wg sync.WaitGroup
	for i, cfg := range kinds {
		cfg.Network, cfg.Addr = "tcp", addr
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], loadErrs[i] = loadgen.Run(loadCtx, cfg)
		}()
	}

	time.Sleep(500 * time.Millisecond)
	var ups []harness.Upgrade
	var upErr error
	for i := range *upgrades {
		u, err := srv.Upgrade(ctx)
		if err != nil {
			upErr = fmt.Errorf("upgrade %d: %w", i+1, err)
			break
		}
		ups = append(ups, u)
		fmt.Printf("upgrade %2d: pid %d -> %d   new generation ready %6s after SIGHUP, old one exited after %6s\n",
			i+1, u.Old, u.New, ms(u.Ready.Sub(u.Signalled)), ms(u.OldExited.Sub(u.Signalled)))
		time.Sleep(*gap)
	}
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	wg.Wait()
	if err := errors.Join(loadErrs...); err != nil {
		return err
	}

	stopCtx, cancelStop := context.WithTimeout(ctx, 40*time.Second)
	defer cancelStop()
	status, stopErr := srv.Stop(stopCtx)

	fmt.Println()
	fmt.Println("traffic (a client that never retries; every failure counted):")
	var total, failed int64
	for _, r := range results {
		fmt.Println("  " + r.String())
		total += r.Requests
		failed += r.Failed()
	}
	if len(ups) > 0 {
		fmt.Println()
		fmt.Printf("upgrades: %d; SIGHUP to new generation ready: %s; to first response from it: %s; to old generation gone: %s\n",
			len(ups), spread(ups, func(u harness.Upgrade) time.Duration { return u.Ready.Sub(u.Signalled) }),
			spread(ups, func(u harness.Upgrade) time.Duration {
				first := firstSeen(results, u.New)
				if first.IsZero() {
					return 0
				}
				return first.Sub(u.Signalled)
			}),
			spread(ups, func(u harness.Upgrade) time.Duration { return u.OldExited.Sub(u.Signalled) }))
	}
	fmt.Printf("stop (SIGTERM): %v\n", describeStop(status, stopErr))
	fmt.Println()
	switch {
	case upErr != nil:
		return upErr
	case stopErr != nil:
		return stopErr
	case failed > 0:
		return fmt.Errorf("FAIL: %d of %d requests failed", failed, total)
	case !status.Exited() || status.ExitStatus() != 0:
		return fmt.Errorf("FAIL: server did not exit 0 on SIGTERM")
	}
	fmt.Printf("PASS: %d requests across %d upgrades, 0 failed\n", total, len(ups))
	return nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func firstSeen(rs []loadgen.Result, pid int) time.Time {
	var first time.Time
	for _, r := range rs {
		if t, ok := r.FirstSeen[pid]; ok && (first.IsZero() || t.Before(first)) {
			first = t
		}
	}
	return first
}

// spread prints the median and maximum of f over the upgrades.
func spread(ups []harness.Upgrade, f func(harness.Upgrade) time.Duration) string {
	ds := make([]time.Duration, 0, len(ups))
	for _, u := range ups {
		ds = append(ds, f(u))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return fmt.Sprintf("median %s, max %s", ms(ds[len(ds)/2]), ms(ds[len(ds)-1]))
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

func describeStop(st interface {
	Exited() bool
	ExitStatus() int
}, err error) string {
	if err != nil {
		return err.Error()
	}
	if st.Exited() {
		return fmt.Sprintf("exited with status %d", st.ExitStatus())
	}
	return "did not exit normally"
}

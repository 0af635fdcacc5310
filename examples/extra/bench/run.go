//go:build unix

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/timeline"
)

// measureTimeout bounds one measurement: at the defaults it takes about 13
// s; a stuck upgrade or client must not hold the whole bench.
const measureTimeout = 3 * time.Minute

// bench runs every selected kind against its servers cfg.Runs times,
// prints the table to stdout and writes it, with the pictures, to cfg.Out.
// Progress goes to stderr. A measurement that fails is reported in the
// table and makes bench return an error at the end, after the others ran.
func bench(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	begin := time.Now()
	var specs []kindSpec
	for _, k := range kinds {
		if !contains(cfg.Kinds, k.name) {
			continue
		}
		if clients[k.name] == nil {
			return fmt.Errorf("kind %s has no client", k.name)
		}
		specs = append(specs, k)
	}
	if cfg.Out == "" {
		d, err := os.MkdirTemp("", "hitless-bench-")
		if err != nil {
			return err
		}
		cfg.Out = d
	} else if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "hitless-bench-work-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// Without -race: the servers run as users run them.
	bins := map[string]string{}
	for _, k := range specs {
		for _, s := range k.servers {
			if bins[s.pkg] != "" {
				continue
			}
			bin := filepath.Join(work, filepath.Base(s.pkg))
			fmt.Fprintf(stderr, "building %s ...\n", s.pkg)
			if err := harness.Build(ctx, s.pkg, bin, false, ""); err != nil {
				return err
			}
			bins[s.pkg] = bin
		}
	}

	var results []*result
	for _, k := range specs {
		for _, s := range k.servers {
			results = append(results, &result{kind: k.name, server: s.name})
		}
	}
	// Run by run, every kind and server in turn: what the machine is doing
	// changes over minutes, and this spreads it over all of them alike.
	for run := 1; run <= cfg.Runs; run++ {
		i := 0
		for _, k := range specs {
			for _, s := range k.servers {
				res := results[i]
				i++
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r, err := measure(ctx, cfg, k.name, s, bins[s.pkg], work)
				if r != nil {
					res.runs = append(res.runs, r)
				}
				if err != nil {
					err = fmt.Errorf("run %d: %w", run, err)
					res.errs = append(res.errs, err)
					fmt.Fprintf(stderr, "run %d/%d %s, %s: %v\n", run, cfg.Runs, k.name, s.name, err)
					continue
				}
				if cfg.Raw {
					name := fmt.Sprintf("%s-%s-run%d.csv", k.name, s.name, run)
					if err := writeRaw(filepath.Join(cfg.Out, name), r); err != nil {
						return err
					}
				}
				near, steady, ratio := r.NearSteady(cfg.Window)
				fmt.Fprintf(stderr, "run %d/%d %s, %s: %d requests, %d failed; p99 near %s, steady %s: %.2f×\n",
					run, cfg.Runs, k.name, s.name, len(r.Requests), failed(r), dur(near), dur(steady), ratio)
			}
		}
	}

	var pictures []string
	for _, res := range results {
		if len(res.runs) == 0 {
			continue
		}
		name := res.kind + "-" + res.server + ".svg"
		if err := writeSVG(filepath.Join(cfg.Out, name), res.runs[0], cfg.Bucket); err != nil {
			return err
		}
		pictures = append(pictures, name)
	}
	table := render(cfg, results, pictures, time.Since(begin))
	fmt.Fprint(stdout, table)
	if err := os.WriteFile(filepath.Join(cfg.Out, "bench.md"), []byte(table), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (bench.md and %d pictures); took %v\n", cfg.Out, len(pictures), time.Since(begin).Round(time.Second))
	var errs []error
	for _, res := range results {
		for _, err := range res.errs {
			errs = append(errs, fmt.Errorf("%s, %s: %w", res.kind, res.server, err))
		}
	}
	return errors.Join(errs...)
}

func writeSVG(path string, r *timeline.Run, bucket time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := timeline.WriteSVG(f, r, bucket); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// measure runs one kind against one server: start it, load it, upgrade it
// cfg.Upgrades times, stop it. The returned Run (nil only if the server
// did not start) holds what was measured even when an upgrade failed.
func measure(ctx context.Context, cfg config, kind string, s serverSpec, bin, work string) (*timeline.Run, error) {
	ctx, cancel := context.WithTimeout(ctx, measureTimeout)
	defer cancel()
	var addrs []string
	for range s.addrs {
		a, err := harness.FreeTCPAddr()
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, a)
	}
	base := filepath.Join(work, kind+"-"+s.name)
	logf, err := os.Create(base + ".log")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	srv, err := harness.Start(ctx, harness.Config{
		Binary:  bin,
		Args:    serverArgs(cfg, s, addrs, base+".pid"),
		PIDFile: base + ".pid",
		Log:     logf,
	})
	if err != nil {
		return nil, withLog(err, logf.Name())
	}
	defer srv.Close()

	sampler := timeline.NewSampler(cfg.Sample)
	sampler.Watch(srv.PID())
	t := target{Addr: addrs[0], Rate: cfg.Rate, Conns: cfg.Conns}
	if s.tls {
		// The example makes a self-signed certificate at start-up; the
		// connection never leaves loopback.
		t.TLS = &tls.Config{InsecureSkipVerify: true}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type loaded struct {
		reqs []timeline.Request
		err  error
	}
	done := make(chan loaded, 1)
	go func() {
		reqs, err := clients[kind](loadCtx, t)
		done <- loaded{reqs, err}
	}()

	// The first requests set up connections (and, for TLS, handshakes):
	// they are not what an upgrade is compared with.
	sleep(ctx, cfg.Warmup)
	from := time.Now()
	// The steady state an upgrade is compared with is every request more
	// than a window from any SIGHUP: a stretch of load with no upgrade
	// first, and, with upgrades more than two windows apart, the time
	// between them, so that near and steady requests alternate and a
	// machine whose speed drifts over the run (a shared one does, by
	// tens of per cent in a minute) weighs on both alike. The first
	// SIGHUP comes a window after the stretch, so that requests on both
	// sides of every upgrade are measured.
	var (
		ups    []harness.Upgrade
		upErr  error
		signal = from.Add(cfg.Steady + cfg.Window)
	)
	for i := range cfg.Upgrades {
		sleep(ctx, time.Until(signal))
		u, err := upgrade(ctx, srv, sampler)
		if err != nil {
			upErr = fmt.Errorf("upgrade %d: %w", i+1, withLog(err, logf.Name()))
			break
		}
		ups = append(ups, u)
		signal = u.Signalled.Add(cfg.Gap)
	}
	sleep(ctx, cfg.After)
	stopLoad()
	var l loaded
	select {
	case l = <-done:
	case <-time.After(2 * lineTimeout):
		// Every client bounds its requests; this one did not stop.
		l.err = errors.New("the client did not stop within 10 s of the end of the load")
	}
	procs := sampler.Stop()

	run := &timeline.Run{Kind: kind, Server: s.name, Marks: timeline.FromHarness(ups), Procs: procs}
	for _, r := range l.reqs {
		if !r.Start.Before(from) {
			run.Requests = append(run.Requests, r)
		}
	}
	stopCtx, cancelStop := context.WithTimeout(ctx, 30*time.Second)
	defer cancelStop()
	_, stopErr := srv.Stop(stopCtx)
	if errors.Is(stopErr, harness.ErrNotReaped) {
		stopErr = nil // it exited; only its status is unknown, and the status is not what is measured
	}
	if l.err != nil {
		l.err = fmt.Errorf("client: %w", l.err)
	}
	if stopErr != nil {
		stopErr = fmt.Errorf("stop: %w", stopErr)
	}
	return run, errors.Join(upErr, l.err, stopErr)
}

// serverArgs are a server's flags: its addresses, its pid file and, for
// the library's examples, -args.
func serverArgs(cfg config, s serverSpec, addrs []string, pidFile string) []string {
	args := append(s.args(addrs), "-pidfile", pidFile)
	if s.name == "hitless" {
		args = append(args, cfg.Args...)
	}
	return args
}

// upgrade is srv.Upgrade while watching the new generation from its start.
// The pid file names it only once it is ready, and the harness's Upgrade
// returns only once the old one is gone, so neither would let the sampler
// see the new generation start up, which is the part of the overlap that
// costs; its parent's child list does (Linux; elsewhere the new
// generation is watched from the end of the upgrade, and the sampler
// records nothing anyway).
func upgrade(ctx context.Context, srv *harness.Server, sampler *timeline.Sampler) (harness.Upgrade, error) {
	old := srv.PID()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		seen := map[int]bool{}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			for _, pid := range children(old) {
				if !seen[pid] {
					seen[pid] = true
					sampler.Watch(pid)
				}
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	u, err := srv.Upgrade(ctx)
	close(stop)
	wg.Wait()
	if u.New != 0 {
		sampler.Watch(u.New)
	}
	return u, err
}

// children lists pid's child processes from /proc/<pid>/task/*/children:
// each thread lists the children it forked, and a Go program forks from
// any of its threads. Nil when that cannot be read (not Linux, pid gone).
func children(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var pids []int
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "children"))
		if err != nil {
			continue
		}
		for f := range strings.FieldsSeq(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
	}
	return pids
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// withLog adds the end of the servers' log to err: why an upgrade failed
// is usually there.
func withLog(err error, path string) error {
	b, _ := os.ReadFile(path)
	const tail = 2000
	if len(b) > tail {
		b = b[len(b)-tail:]
	}
	if len(b) == 0 {
		return err
	}
	return fmt.Errorf("%w\nend of the servers' log:\n%s", err, b)
}

//go:build unix

package main

// The outside-client comparison (-outside): load tools nobody here wrote
// (wrk, ab, h2load, run and parsed by internal/outside) against hitless
// (examples/http) and the tableflip README server (internal/baseline),
// side by side in one run, each server upgraded while the tool runs; the
// table shows the tools' own counts.
//
//	go run ./internal/bench -outside [-upgrades 10] [-out file.md] [-logs dir]
//
// For wrk and ab the tool runs back to back (pacedRun each) while the
// server is upgraded -upgrades times (wrk -c8000: half as many), SIGHUPs
// at least upgradeEvery apart and each sent while a run is under way. An
// h2load client stops at its first GOAWAY and never reconnects, so h2load
// gets one upgrade per run instead, h2loadSignalAt into it, -upgrades runs.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/outside"
)

const (
	// pacedRun is the length of one wrk or ab run: several upgrades fall
	// in each, and the run under way when the last upgrade is done ends
	// soon after.
	pacedRun = 4 * time.Second
	// upgradeEvery is the least time from one SIGHUP to the next.
	upgradeEvery = time.Second
	// settle is the least time from an old generation's exit to the next
	// SIGHUP: the tableflip README server drops a SIGHUP that comes before
	// it has seen its previous generation exit ("parent hasn't exited";
	// see BENCHMARKS.md). It has once taken longer even so, under wrk
	// -c8000: see lostAfter.
	settle = 200 * time.Millisecond
	// runLead and runTail keep every SIGHUP inside a run: at least runLead
	// after its start (the tool has started and connected) and runTail
	// before its end (the upgrade's effect on the tool's connections is
	// over before the tool stops and prints).
	runLead = 500 * time.Millisecond
	runTail = 700 * time.Millisecond
	// h2loadRun is the length of one h2load run, and h2loadSignalAt how
	// far into it its upgrade begins: every client has connected and has
	// its streams in flight (as in examples/extra/web's outside tests).
	h2loadRun      = 2 * time.Second
	h2loadSignalAt = 700 * time.Millisecond
	// nearUpgrade is the window around a SIGHUP that h2load's requests
	// count as "near an upgrade" in, as in the other tables.
	nearUpgrade = 500 * time.Millisecond
	// manyConns is the connection count of the many-connections wrk row,
	// and fdsNeeded the descriptors that wrk and each server generation
	// need for it, with room for everything else they hold.
	manyConns = 8000
	fdsNeeded = manyConns + 1024
	// upgradeTimeout bounds one upgrade (SIGHUP to old generation gone);
	// rowTimeout one row, start to stop; benchTimeout the whole mode.
	upgradeTimeout = time.Minute
	rowTimeout     = 4 * time.Minute
	benchTimeout   = 20 * time.Minute
	// lostAfter is how long after a SIGHUP without a new generation the
	// SIGHUP counts as lost and is sent again, up to maxSIGHUPs in all
	// (see upgrade). A new generation of either server was ready within
	// 2 s in every run on a loaded 2-core machine.
	lostAfter  = 10 * time.Second
	maxSIGHUPs = 3
)

// init runs the outside-client comparison, and exits, when the command
// line asks for it. main.go's run parses the flags of the other modes
// itself, and this mode has flags of its own (-upgrades and -out mean the
// same; -extra does not apply), so it is dispatched to before main runs.
// -outside is registered on the default flag set too, so that -h lists it
// and the other modes accept -outside=false.
// outsideRequested reports whether args sets -outside, in the flag
// package's syntax (-outside, --outside, -outside=true; a boolean flag
// takes no separate value), before any "--". A malformed value is left
// for the flag package to report.
func outsideRequested(args []string) bool {
	for _, a := range args {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if name != "outside" {
			continue
		}
		if !hasValue {
			return true
		}
		b, err := strconv.ParseBool(value)
		return err == nil && b
	}
	return false
}

// outsideKind is one row pair of the table: a tool and how it is run.
type outsideKind struct {
	name     string
	upgrades int
	h2c      bool // start the servers with -h2c
	manyFDs  bool // needs fdsNeeded descriptors per process
	measure  func(ctx context.Context, srv *harness.Server, addr string, upgrades int, row *outsideRow) error
}

// outsideRow is what one tool saw of one server.
type outsideRow struct {
	kind, server string
	runs         int
	requests     int64
	failures     string // as the tool counts them, with the breakdown
	latency      string
	ups          []harness.Upgrade
	crossed      int      // SIGHUPs sent while a run was under way
	lostSIGHUPs  int      // SIGHUPs that started no upgrade and were sent again
	notes        []string // anything the counts do not show
	details      []string // every run and upgrade, for the -logs directory
}

func runOutside(args []string) error {
	fs := flag.NewFlagSet("bench -outside", flag.ExitOnError)
	fs.Bool("outside", true, "run the outside-client comparison (this mode)")
	upgrades := fs.Int("upgrades", 10, "upgrades per kind and server (wrk -c8000: half as many; h2load: one per run)")
	out := fs.String("out", "", "also write the table, as Markdown, to this file")
	logs := fs.String("logs", "", "keep the servers' logs and every run's summary in this `directory` (default: a temporary one, removed)")
	fs.Parse(args)
	if *upgrades < 1 {
		return fmt.Errorf("-upgrades %d: want at least 1", *upgrades)
	}
	// Before anything is started, so that wrk and every server generation
	// inherit it.
	nofile, nofileErr := raiseNOFILE()
	for _, t := range []outside.Tool{outside.Wrk, outside.AB, outside.H2load} {
		if _, err := t.Path(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "hitless-bench-outside")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logDir := dir
	if *logs != "" {
		if err := os.MkdirAll(*logs, 0o755); err != nil {
			return err
		}
		logDir = *logs
	}

	servers := []server{{"tableflip-readme", filepath.Join(dir, "baseline")}, {"hitless", filepath.Join(dir, "hitless")}}
	fmt.Fprintln(os.Stderr, "building the servers ...")
	if err := harness.Build(ctx, "./internal/baseline", servers[0].bin, false, ""); err != nil {
		return err
	}
	if err := harness.Build(ctx, "./examples/http", servers[1].bin, false, ""); err != nil {
		return err
	}
	n := *upgrades
	kinds := []outsideKind{
		{name: "wrk -t2 -c64 (keep-alive)", upgrades: n, measure: measureWrk(64)},
		{name: "ab -k -c32 (keep-alive)", upgrades: n, measure: measureAB(true)},
		{name: "ab -c32 (a new connection per request)", upgrades: n, measure: measureAB(false)},
		{name: fmt.Sprintf("wrk -t2 -c%d (keep-alive)", manyConns), upgrades: (n + 1) / 2, manyFDs: true, measure: measureWrk(manyConns)},
		{name: "h2load -c16 -m8 (h2c)", upgrades: n, h2c: true, measure: measureH2load},
	}
	loadBefore := loadAverage()
	began := time.Now()
	var rows []outsideRow
	for _, k := range kinds {
		for _, s := range servers {
			fmt.Fprintf(os.Stderr, "%s, %s ...\n", k.name, s.name)
			r, err := measureOutside(ctx, logDir, s, k)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", k.name, s.name, err)
			}
			if k.manyFDs && nofile < fdsNeeded {
				r.notes = append(r.notes, fmt.Sprintf("RLIMIT_NOFILE only %d (%v), %d needed: connections beyond it fail for want of a descriptor", nofile, nofileErr, fdsNeeded))
			}
			fmt.Fprintf(os.Stderr, "  %d requests; %s; %s\n", r.requests, r.failures, r.latency)
			rows = append(rows, r)
		}
	}
	m := machine{cpus: runtime.NumCPU(), model: cpuModel(), loadBefore: loadBefore, loadAfter: loadAverage(), nofile: nofile, somaxconn: somaxconn(), took: time.Since(began)}
	table := renderOutside(rows, n, m)
	fmt.Print(table)
	if *out != "" {
		return os.WriteFile(*out, []byte(table), 0o644)
	}
	return nil
}

// raiseNOFILE sets the soft RLIMIT_NOFILE to the hard one (or, if the hard
// one is below fdsNeeded, tries to raise both, which takes privilege) and
// returns the soft limit now in force. Go raises its own soft limit at
// start-up but gives the original one back to the processes it starts,
// unless the program sets the limit itself: hence the explicit call even
// when nothing changes for this process.
func raiseNOFILE() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if uint64(lim.Max) < fdsNeeded {
		up := lim
		up.Cur, up.Max = fdsNeeded, fdsNeeded
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return fdsNeeded, nil
		}
	}
	try := lim
	try.Cur = lim.Max
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try)
	if err != nil && uint64(lim.Max) >= fdsNeeded {
		// macOS refuses a soft limit of "unlimited"; ask for what we need.
		try.Cur = fdsNeeded
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try)
	}
	if err != nil {
		return uint64(lim.Cur), fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	return uint64(try.Cur), nil
}

// measureOutside starts s, lets k's tool run through k's upgrades, stops
// s and returns the row.
func measureOutside(ctx context.Context, logDir string, s server, k outsideKind) (outsideRow, error) {
	row := outsideRow{kind: k.name, server: s.name}
	ctx, cancel := context.WithTimeout(ctx, rowTimeout)
	defer cancel()
	addr, err := harness.FreeTCPAddr()
	if err != nil {
		return row, err
	}
	base := filepath.Join(logDir, slug(k.name)+"-"+s.name)
	logf, err := os.Create(base + ".log")
	if err != nil {
		return row, err
	}
	defer logf.Close()
	pidFile := base + ".pid"
	defer os.Remove(pidFile)
	args := []string{"-addr", addr, "-pidfile", pidFile}
	if k.h2c {
		args = append(args, "-h2c")
	}
	srv, err := harness.Start(ctx, harness.Config{Binary: s.bin, Args: args, PIDFile: pidFile, Log: logf})
	if err != nil {
		return row, err
	}
	defer srv.Close()
	if err := k.measure(ctx, srv, addr, k.upgrades, &row); err != nil {
		return row, fmt.Errorf("%w (server log: %s)", err, logf.Name())
	}
	st, err := srv.Stop(ctx)
	switch {
	case err != nil:
		return row, fmt.Errorf("stop: %w", err)
	case !st.Exited() || st.ExitStatus() != 0:
		row.notes = append(row.notes, fmt.Sprintf("the last generation stopped with wait status %#x", uint32(st)))
	}
	row.notes = append(row.notes, oldExits(row.ups)...)
	if row.lostSIGHUPs > 0 {
		row.notes = append(row.notes, fmt.Sprintf("%d SIGHUPs started no upgrade within %v and were sent again", row.lostSIGHUPs, lostAfter))
	}
	if n := len(row.ups) - row.crossed; n > 0 {
		row.notes = append(row.notes, fmt.Sprintf("%d of %d SIGHUPs fell between runs", n, len(row.ups)))
	}
	if note := logProblems(logf.Name()); note != "" {
		row.notes = append(row.notes, note)
	}
	details := strings.Join(row.details, "\n") + "\n"
	return row, os.WriteFile(base+".runs", []byte(details), 0o644)
}

// upgrade upgrades srv, bounded by upgradeTimeout, and describes it for
// the details. When no new generation is ready lostAfter after a SIGHUP
// and the old one still serves, it sends SIGHUP again (up to maxSIGHUPs in
// all) and counts the lost one: the tableflip README server drops a
// SIGHUP that comes before it has seen its parent exit ("parent hasn't
// exited", in its log only), and one lost SIGHUP must not end the run.
func upgrade(ctx context.Context, srv *harness.Server, row *outsideRow, start time.Time) (harness.Upgrade, error) {
	ctx, cancel := context.WithTimeout(ctx, upgradeTimeout)
	defer cancel()
	n := len(row.ups) + 1
	var u harness.Upgrade
	for sent := 1; ; sent++ {
		sctx, scancel := context.WithTimeout(ctx, lostAfter)
		var err error
		u, err = srv.Upgrade(sctx)
		scancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return u, fmt.Errorf("upgrade %d: %w", n, err)
		}
		if !u.Ready.IsZero() {
			// Only the old generation's exit is slow: wait on for it.
			st, err := srv.WaitExit(ctx, u.Old)
			switch {
			case errors.Is(err, harness.ErrNotReaped):
			case err != nil:
				return u, fmt.Errorf("upgrade %d: new generation %d ready, but: %w", n, u.New, err)
			default:
				u.OldStatus, u.OldReaped = st, true
			}
			u.OldExited = time.Now()
			break
		}
		if sent == maxSIGHUPs || srv.PID() != u.Old {
			return u, fmt.Errorf("upgrade %d: %d SIGHUPs sent: %w", n, sent, err)
		}
		row.lostSIGHUPs++
		row.details = append(row.details, fmt.Sprintf("upgrade %d: no new generation %v after the SIGHUP at +%v; sending another",
			n, lostAfter, u.Signalled.Sub(start).Round(time.Millisecond)))
	}
	row.ups = append(row.ups, u)
	row.details = append(row.details, fmt.Sprintf("upgrade %d: %d -> %d, SIGHUP at +%v, new ready after %v, old gone %v after that",
		n, u.Old, u.New, u.Signalled.Sub(start).Round(time.Millisecond),
		u.Ready.Sub(u.Signalled).Round(100*time.Microsecond), u.OldExited.Sub(u.Ready).Round(100*time.Microsecond)))
	return u, nil
}

// throughUpgrades runs run back to back until it has upgraded srv n
// times, and returns the runs. Each SIGHUP comes at least upgradeEvery
// after the one before and settle after the old generation's exit, and
// only while a run has been under way for runLead and has runTail left;
// so some come later than upgradeEvery, none outside a run. The tool has
// exited when throughUpgrades returns.
func throughUpgrades[R any](ctx context.Context, srv *harness.Server, n int, row *outsideRow, run func(context.Context) (R, error)) ([]outside.Timed[R], error) {
	type loaded struct {
		runs []outside.Timed[R]
		err  error
	}
	var current atomic.Int64 // when the run under way began (UnixNano); 0 before the first
	stop, done := make(chan struct{}), make(chan loaded, 1)
	start := time.Now()
	go func() {
		runs, err := outside.Repeat(ctx, stop, func(ctx context.Context) (R, error) {
			current.Store(time.Now().UnixNano())
			return run(ctx)
		})
		done <- loaded{runs, err}
	}()
	// Repeat returns once the run under way ends (within pacedRun) or ctx
	// kills it, so every path below waits a bounded time for it.
	var (
		res   loaded
		ended bool
	)
	finish := func() loaded {
		if !ended {
			ended = true
			close(stop)
			res = <-done
		}
		return res
	}
	defer finish()

	// inRun waits until a SIGHUP now would fall well inside a run.
	inRun := func() error {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if s := current.Load(); s != 0 {
				if in := time.Since(time.Unix(0, s)); in >= runLead && in <= pacedRun-runTail {
					return nil
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case res = <-done:
				ended = true
				if res.err != nil {
					return res.err
				}
				return errors.New("the load stopped before the upgrades were done")
			case <-t.C:
			}
		}
	}
	var next time.Time
	for range n {
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(d):
			}
		}
		if err := inRun(); err != nil {
			return nil, err
		}
		u, err := upgrade(ctx, srv, row, start)
		if err != nil {
			return nil, err
		}
		next = u.Signalled.Add(upgradeEvery)
		if t := u.OldExited.Add(settle); t.After(next) {
			next = t
		}
	}
	if finish(); res.err != nil {
		return nil, fmt.Errorf("load: %w", res.err)
	}
	for _, u := range row.ups {
		for _, r := range res.runs {
			if !u.Signalled.Before(r.Start) && !u.Signalled.After(r.End) {
				row.crossed++
				break
			}
		}
	}
	row.runs = len(res.runs)
	return res.runs, nil
}

// oldExits notes the old generations that did not exit with status 0.
func oldExits(ups []harness.Upgrade) []string {
	var bad []string
	unknown := 0
	for _, u := range ups {
		switch {
		case !u.OldReaped:
			unknown++
		case !u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0:
			bad = append(bad, fmt.Sprintf("%#x", uint32(u.OldStatus)))
		}
	}
	var notes []string
	if len(bad) > 0 {
		notes = append(notes, fmt.Sprintf("%d old generations did not exit 0 (wait status %s)", len(bad), strings.Join(bad, ", ")))
	}
	if unknown > 0 {
		notes = append(notes, fmt.Sprintf("%d old generations' exit status unknown (not reaped by the bench)", unknown))
	}
	return notes
}

// logProblems notes the warnings and errors in a server log: hitless's
// slog levels, and what the README server logs when something went wrong
// (its "serve: … use of closed network connection" after every upgrade
// is the pattern's normal way, not one).
func logProblems(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("server log unreadable: %v", err)
	}
	var hits []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, p := range []string{"level=WARN", "level=ERROR", "upgrade failed", "shutdown:", "panic:", "fatal error:"} {
			if strings.Contains(line, p) {
				hits = append(hits, line)
				break
			}
		}
	}
	if len(hits) == 0 {
		return ""
	}
	first := hits[0]
	if len(first) > 160 {
		first = first[:160] + "…"
	}
	return fmt.Sprintf("server log: %d warnings or errors, first: `%s`", len(hits), strings.ReplaceAll(first, "|", `\|`))
}

// slug turns a kind's name into part of a file name.
func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// machine is what the table says about where and how it was measured.
type machine struct {
	cpus                  int
	model                 string
	loadBefore, loadAfter string
	nofile                uint64
	somaxconn             string // the cap on a listener's backlog
	took                  time.Duration
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "" where
// there is none.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// loadAverage returns the 1, 5 and 15 minute load averages from
// /proc/loadavg, or "?" where there is none.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// somaxconn returns Linux's cap on a listener's backlog, or "?": with
// fewer slots than wrk has connections, the connections it opens at once
// wait for the server's accepts, some for a SYN retransmission.
func somaxconn() string {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

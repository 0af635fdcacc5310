//go:build linux

package main

// Fault injection under load: the process runs out of descriptors, the new
// generation is SIGKILLed before it is ready, the old one is SIGKILLed while
// it drains. Each test drives the built example with real sockets, a client
// that never retries (internal/loadgen) and cmd/hitless, and reads /proc
// (descriptors, children, zombies, which process holds which connection),
// hence Linux only.
//
// The kill points are random; the seed is logged, and HITLESS_FAULT_SEED
// replays a run.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/ctlproto"
	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
	"golang.org/x/sys/unix"
)

// TestControlSocketSurvivesFDExhaustion runs the example with at most 256
// descriptors (prlimit --nofile=256:256; every later generation inherits
// the limit), holds 400 idle TCP connections to its HTTP port so that it
// runs out of descriptors, and asks for status, stop and reload meanwhile:
// each must fail cleanly on the client side (a timeout, exit status 1).
// Once the connections are gone, the control socket must answer again in
// the same generation (security review M1), the stop and the reload whose
// clients gave up must not be carried out (M2), and status, a reload that
// succeeds and a stop must all work within a few seconds.
func TestControlSocketSurvivesFDExhaustion(t *testing.T) {
	const (
		limit = 256
		flood = 400 // connections held: more than the limit
	)
	cli := faultCLI(t)
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile, sock := filepath.Join(dir, "http.pid"), filepath.Join(dir, "control.sock")
	args := []string{binary, "-addr", addr, "-pidfile", pidFile, "-control", sock, "-upgrade-timeout", "10s", "-drain-timeout", "2s"}
	cfg := harness.Config{PIDFile: pidFile}
	if p, err := exec.LookPath("prlimit"); err == nil {
		cfg.Binary, cfg.Args = p, append([]string{fmt.Sprintf("--nofile=%d:%d", limit, limit), "--"}, args...)
	} else {
		// No util-linux: the shell's ulimit sets the soft and hard limits.
		cfg.Binary, cfg.Args = "/bin/sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$@"`, limit), "sh"}, args...)
	}
	s, logPath := harness.StartT(t, cfg)
	pid := s.PID()
	if got := nofileLimit(t, pid); got != fmt.Sprintf("%d %d", limit, limit) {
		t.Fatalf("pid %d: open-file limit (soft hard) is %q, want %d %d", pid, got, limit, limit)
	}
	if r := faultRun(cli, "status", "-socket", sock, "-timeout", "3s"); r.code != 0 {
		t.Fatalf("hitless status before the flood: %v", r)
	}
	base := fdCount(pid)
	t.Logf("pid %d serves with %d descriptors open, limit %d", pid, base, limit)

	// The flood: idle connections, which the server holds until
	// ReadHeaderTimeout (10 s), far longer than this test holds them.
	floodStart := time.Now()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break // the backlog is full: enough
		}
		conns = append(conns, c)
	}
	if err := pollUntil(5*time.Second, func() bool { return fdCount(pid) >= limit }); err != nil {
		t.Fatalf("%d connections held, but pid %d has %d descriptors open, not %d: %v", len(conns), pid, fdCount(pid), limit, err)
	}
	t.Logf("%d connections held; pid %d has all %d descriptors in use %v after the flood began",
		len(conns), pid, limit, since(floodStart))

	// A stop from a client that gives up but keeps its connection open (a
	// frozen process): only the deadline it carries can tell the service
	// that nobody waits for it any more.
	frozen, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer frozen.Close()
	frozen.Write(ctlproto.Request{Verb: ctlproto.VerbStop, DeadlineUnixMS: time.Now().Add(time.Second).UnixMilli()}.Marshal())

	// Out of descriptors: every verb fails on the client side, cleanly.
	var wg sync.WaitGroup
	during := make(map[string]hitlessResult)
	var mu sync.Mutex
	for _, verb := range []string{"status", "stop", "reload"} {
		wg.Go(func() {
			r := faultRun(cli, verb, "-socket", sock, "-timeout", "1s")
			mu.Lock()
			during[verb] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, verb := range []string{"status", "stop", "reload"} {
		r := during[verb]
		t.Logf("while out of descriptors: hitless %s: %v", verb, r)
		if r.code != 1 || !strings.Contains(r.out, "no outcome within 1s") || r.took > 3*time.Second {
			t.Errorf("hitless %s while out of descriptors: %v; want exit status 1 with \"no outcome within 1s\", about 1 s later", verb, r)
		}
	}
	if got := fdCount(pid); got < limit-2 {
		t.Errorf("pid %d has only %d descriptors open during the flood: the verbs above may not have met exhaustion", pid, got)
	}

	// Release, and watch the descriptors come back.
	released := time.Now()
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	if err := pollUntil(5*time.Second, func() bool { return fdCount(pid) <= base+2 }); err != nil {
		t.Fatalf("pid %d still has %d descriptors open after the flood ended (was %d): %v", pid, fdCount(pid), base, err)
	}
	t.Logf("descriptors back to %d %v after the connections were closed (held %v)", fdCount(pid), since(released), released.Sub(floodStart).Round(time.Millisecond))

	// The requests waited in the control socket's backlog. Read now, each
	// must be dropped, not carried out (review M2): past its deadline, or
	// (a stop or reload) because its client has closed its end. Seeing
	// them dropped proves they were read.
	frozen.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(frozen).ReadBytes('\n')
	resp, perr := ctlproto.ParseResponse(line)
	t.Logf("after the flood, the frozen client's stop got: %s", bytes.TrimSpace(line))
	if err != nil || perr != nil || resp.OK || resp.Code != ctlproto.CodeExpired {
		t.Errorf("the stop of a client that gave up but kept its connection: answer %q (%v, %v), want code %q", line, err, perr, ctlproto.CodeExpired)
	}
	for _, verb := range []string{"status", "stop", "stop", "reload"} {
		want := regexp.MustCompile(`dropped a request (that arrived after its deadline|whose requester had gone away).* verb=` + verb + `\b`)
		n := 1
		if verb == "stop" {
			n = 2 // hitless stop and the frozen one
		}
		if err := pollUntil(5*time.Second, func() bool { return len(want.FindAll(readLog(logPath), -1)) >= n }); err != nil {
			t.Errorf("the %s sent while out of descriptors was not reported as dropped: %v", verb, err)
		}
	}
	if m := regexp.MustCompile(`msg="control socket: (stop|reload) requested"`).Find(readLog(logPath)); m != nil {
		t.Errorf("a request sent while out of descriptors was carried out: %s", m)
	}
	if got := s.PID(); got != pid || !alive(pid) {
		t.Fatalf("after the flood the PID file names %d (alive: %v), want %d still serving", got, alive(pid), pid)
	}
	if code, servedBy, err := getPID(addr); err != nil || code != 200 || servedBy != pid {
		t.Fatalf("after the flood GET / = %d from pid %d (%v), want 200 from %d", code, servedBy, err, pid)
	}

	// The control socket answers in the same generation, and everything
	// works.
	r := faultRun(cli, "status", "-socket", sock, "-timeout", "5s")
	t.Logf("after the flood: hitless status: %v", r)
	if want := fmt.Sprintf("pid %d, generation 1, serving", pid); r.code != 0 || !strings.Contains(r.out, want) || strings.Contains(r.out, "last upgrade") {
		t.Fatalf("hitless status after the flood: %v; want %q, and no upgrade attempted", r, want)
	}
	r = faultRun(cli, "reload", "-socket", sock, "-timeout", "15s")
	t.Logf("after the flood: hitless reload: %v", r)
	if r.code != 0 || !strings.Contains(r.out, "generation 2") || r.took > 5*time.Second {
		t.Fatalf("hitless reload after the flood: %v; want exit status 0 and generation 2 within 5 s", r)
	}
	next := s.PID()
	if next == pid {
		t.Fatalf("the reload succeeded but the PID file still names %d", pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := s.WaitExit(ctx, pid); err != nil || st.ExitStatus() != 0 {
		t.Errorf("generation 1 (pid %d) after the reload: %v, %v; want exit status 0", pid, st, err)
	}
	r = faultRun(cli, "stop", "-socket", sock, "-timeout", "10s")
	t.Logf("after the flood: hitless stop: %v", r)
	if r.code != 0 || r.took > 5*time.Second {
		t.Fatalf("hitless stop: %v; want exit status 0 within 5 s", r)
	}
	if st, err := s.WaitExit(ctx, next); err != nil || st.ExitStatus() != 0 {
		t.Errorf("generation 2 (pid %d) after hitless stop: %v, %v; want exit status 0", next, st, err)
	}
}

// TestKillNewGenerationBeforeReady upgrades the example 50 times under
// keep-alive and new-connection load, and SIGKILLs each new generation at a
// random moment between its start (it appears among the serving process's
// children) and its readiness (it has told the old generation, by the byte
// on tableflip's ready pipe): in every other round anywhere in that
// window, in the others after the new process has reached hitless's code
// (upgrade.New has pointed its stderr at the old generation), where the
// side channel, the listeners, the readiness gate and the PID file are at
// work. The kill is SIGSTOP, a look at where the process is and at the
// connections it holds, then SIGKILL; a process that turns out to have
// told the old generation already is let go on (that round does not
// count). After each kill: the reload fails, saying that the new
// generation was killed by SIGKILL; the old generation serves on, and the
// PID file names it, not the killed process; it has no child and no zombie
// left; its descriptor count is what it was before; the killed process had
// accepted no connection. No request may fail in the whole run.
//
// The example's readiness gate (-require-file) cannot widen the window: it
// fails at once when the file is missing rather than wait for it, so the
// window is the new process's own start-up (15–60 ms with -race here, of
// which 1–3 ms in hitless). -preflight=false keeps the new generation the
// only child; with the default crash-loop protection the fourth reload
// would be refused for 10 s, hence -crash-loop-after -1.
func TestKillNewGenerationBeforeReady(t *testing.T) {
	const rounds = 50
	rng, seed := faultRand(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	s := start(t, "-control", sock, "-preflight=false", "-crash-loop-after", "-1", "-upgrade-timeout", "10s")
	client := control.Client{Socket: sock}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// How long a start takes here, under load, from the process's
	// appearance and from its reaching hitless: the windows the kills are
	// spread over. The calibration upgrades are real ones.
	var window, inWindow time.Duration
	for i := range 3 {
		stop := faultLoad(t, s.addr, loadgen.Config{Kind: loadgen.KeepAlive, Workers: 3, Pace: time.Millisecond})
		old := s.PID()
		reload := asyncReload(ctx, client)
		child, seen, err := waitChild(old, 5*time.Second)
		if err != nil {
			stop()
			t.Fatalf("calibration %d: %v", i+1, err)
		}
		reached, inHitless := waitStderrPipe(child, 5*time.Second)
		// Ready: the PID file names it.
		for deadline := time.Now().Add(5 * time.Second); s.PID() != child && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
		if window == 0 || time.Since(seen) < window {
			window = time.Since(seen)
		}
		if inHitless && (inWindow == 0 || time.Since(reached) < inWindow) {
			inWindow = time.Since(reached)
		}
		if err := <-reload; err != nil {
			stop()
			t.Fatalf("calibration %d: reload: %v", i+1, err)
		}
		if got := s.PID(); got != child {
			t.Fatalf("calibration %d: PID file names %d, want the new generation %d", i+1, got, child)
		}
		if _, err := s.WaitExit(ctx, old); err != nil && !errors.Is(err, harness.ErrNotReaped) {
			t.Fatal(err)
		}
		stop()
	}
	inWindow = max(inWindow, time.Millisecond)
	t.Logf("calibration (shortest of 3): a new generation was ready %v after it appeared, %v after it reached hitless", window.Round(100*time.Microsecond), inWindow.Round(100*time.Microsecond))

	old := s.PID()
	baseFDs, err := settledFDs(old, -1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var (
		results            []loadgen.Result
		delays, roundTimes []time.Duration
		late, accepted     int
		leaked, stalePID   int
		stages             = map[string]int{}
	)
	begin := time.Now()
	for done := 0; done < rounds; {
		if late > rounds {
			t.Fatalf("%d of the kills came after the new generation was ready: the windows (%v, %v) are too wide", late, window, inWindow)
		}
		roundStart := time.Now()
		stop := faultLoad(t, s.addr,
			loadgen.Config{Kind: loadgen.KeepAlive, Workers: 3, Pace: time.Millisecond},
			loadgen.Config{Kind: loadgen.NewConn, Workers: 2, Pace: time.Millisecond})
		time.Sleep(20 * time.Millisecond)
		reload := asyncReload(ctx, client)
		child, seen, err := waitChild(old, 5*time.Second)
		if err != nil {
			stop()
			t.Fatalf("round %d: %v", done+1, err)
		}
		var delay time.Duration
		if done%2 == 0 {
			delay = time.Duration(rng.Int64N(int64(window)))
			time.Sleep(delay)
		} else {
			if _, ok := waitStderrPipe(child, 5*time.Second); ok {
				time.Sleep(time.Duration(rng.Int64N(int64(inWindow))))
			}
			delay = time.Since(seen)
		}
		syscall.Kill(child, syscall.SIGSTOP)
		waitState(child, 'T', time.Second)
		wrotePID := s.PID() == child
		if wrotePID && !readyPending(child, old) {
			// Too late: it is ready. Let it go on and serve; it is the old
			// generation of the next round.
			syscall.Kill(child, syscall.SIGCONT)
			if err := <-reload; err != nil {
				stop()
				t.Fatalf("round %d: the new generation %d wrote the PID file, but the reload says %v", done+1, child, err)
			}
			if _, err := s.WaitExit(ctx, old); err != nil && !errors.Is(err, harness.ErrNotReaped) {
				stop()
				t.Fatal(err)
			}
			results = append(results, stop()...)
			late++
			if done%2 == 0 {
				window = window * 9 / 10
			} else {
				inWindow = max(inWindow*8/10, 100*time.Microsecond)
			}
			old = s.PID()
			if baseFDs, err = settledFDs(old, -1, 2*time.Second); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// Where it was: still the forked copy of the old generation (which
		// holds copies of all of the old one's descriptors, accepted
		// connections included, until it executes the binary), in the Go
		// runtime's start, or in hitless's.
		var held map[int]bool
		stage := "before exec"
		switch {
		case wrotePID:
			// It has written the PID file but not yet told the old
			// generation (the byte on tableflip's ready pipe).
			held = heldConns(child, s.addr)
			stage = "PID file written"
		case !sharesVM(child, old):
			held = heldConns(child, s.addr)
			stage = "runtime start"
			if stderrIsPipe(child) {
				stage = "in hitless"
			}
		}
		stages[stage]++
		syscall.Kill(child, syscall.SIGKILL)
		err = <-reload
		time.Sleep(10 * time.Millisecond) // a little more load on the old generation alone
		results = append(results, stop()...)
		done++
		delays = append(delays, delay)
		if len(held) > 0 {
			accepted++
			t.Errorf("round %d: the new generation %d had accepted %d connection(s) (client ports %v) before it had told the old generation that it was ready (stage: %s)", done, child, len(held), sortedPorts(held), stage)
		}

		var ce *control.ChildError
		if !errors.As(err, &ce) || ce.Reason != control.ReasonCrashed || ce.Signal != syscall.SIGKILL || ce.PID != child {
			t.Errorf("round %d: reload after SIGKILL of the new generation %d: %v; want a ChildError: pid %d crashed, SIGKILL", done, child, err, child)
		}
		if !alive(old) {
			t.Fatalf("round %d: the old generation %d is gone", done, old)
		}
		if got := s.PID(); got == child {
			// (A PID file left naming an earlier killed process is not
			// reported again.)
			stalePID++
			t.Errorf("round %d: after the kill (%s) the PID file names the killed process %d, not the old generation %d, which serves", done, stage, got, old)
		}
		if code, by, err := getPID(s.addr); err != nil || code != 200 || by != old {
			t.Fatalf("round %d: GET / = %d from pid %d (%v), want 200 from the old generation %d", done, code, by, err, old)
		}
		if err := pollUntil(time.Second, func() bool { return len(childrenOf(old)) == 0 && len(zombies(old, os.Getpid())) == 0 }); err != nil {
			t.Errorf("round %d: children of %d: %v, zombies: %v", done, old, childrenOf(old), zombies(old, os.Getpid()))
		}
		if n, err := settledFDs(old, baseFDs, 2*time.Second); err != nil {
			// Reported once: later rounds compare with the new count.
			if n > baseFDs {
				t.Errorf("round %d: the kill (%s) left the old generation with %d more descriptor(s): %v", done, stage, n-baseFDs, err)
				leaked += n - baseFDs
			} else {
				t.Logf("round %d: the old generation has %d descriptors, %d fewer than before: %v", done, n, baseFDs-n, err)
			}
			baseFDs = n
		}
		roundTimes = append(roundTimes, time.Since(roundStart))
	}
	total := loadgen.Merge(results...)
	t.Logf("seed %d: %d kills in %v, %d more came too late and were let go on; where the kills found the new process: %v; kill times after it appeared: %s; rounds: %s",
		seed, rounds, since(begin), late, stages, summarize(delays), summarize(roundTimes))
	t.Logf("load: %d requests, %d failed %v", total.Requests, total.Failed(), total.Failures)
	if total.Failed() != 0 || total.Requests == 0 {
		t.Errorf("%d of %d requests failed: %v", total.Failed(), total.Requests, total.Errors)
	}
	if accepted > 0 || leaked != 0 || stalePID > 0 {
		t.Errorf("in %d of %d rounds the new generation had accepted connections before it was ready, in %d the PID file named the killed process afterwards; the kills left %d descriptor(s) behind in the old generation", accepted, rounds, stalePID, leaked)
	}
}

// TestKillOldGenerationWhileDraining upgrades the example 50 times under
// keep-alive, new-connection and slow-request load, with one /?sleep=20s
// request held on the old generation so that it drains for long, and
// SIGKILLs the old generation at a random moment of its drain (0–300 ms
// after the new one is ready). Requests on connections the killed process
// held may fail; every other request must succeed. The connections it held
// are read from /proc while it is stopped (SIGSTOP, then SIGKILL), and each
// failure is matched to its connection by the client's port in loadgen's
// error text. After each kill: the new generation serves, `hitless status`
// answers from it, no zombie is left, and its descriptor count (each
// round's new generation, measured idle) is that of a generation whose
// predecessor exited normally, in every round.
func TestKillOldGenerationWhileDraining(t *testing.T) {
	const rounds = 50
	rng, seed := faultRand(t)
	cli := faultCLI(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	s := start(t, "-control", sock, "-preflight=false", "-upgrade-timeout", "10s", "-drain-timeout", "10s")
	client := control.Client{Socket: sock}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The reference: the idle descriptor count of a generation whose
	// predecessor exited normally.
	if _, err := s.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	refFDs, err := settledFDs(s.PID(), -1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var (
		fdsSeen             []int
		counts              tally
		inFlight            int64
		delays, drains      []time.Duration
		reloads, roundTimes []time.Duration
	)
	begin := time.Now()
	for round := 1; round <= rounds; round++ {
		roundStart := time.Now()
		old := s.PID()
		stop := faultLoad(t, s.addr,
			loadgen.Config{Kind: loadgen.KeepAlive, Workers: 3, Pace: time.Millisecond, Timeout: 5 * time.Second},
			loadgen.Config{Kind: loadgen.NewConn, Workers: 2, Pace: time.Millisecond, Timeout: 5 * time.Second},
			loadgen.Config{Kind: loadgen.Slow, Workers: 3, Sleep: 200 * time.Millisecond, Timeout: 5 * time.Second})
		anchor, err := holdRequest(s.addr, "/?sleep=20s")
		if err != nil {
			stop()
			t.Fatalf("round %d: %v", round, err)
		}
		if err := pollUntil(2*time.Second, func() bool { return heldConns(old, s.addr)[anchor.port] }); err != nil {
			stop()
			t.Fatalf("round %d: the old generation %d did not accept the long request: %v", round, old, err)
		}
		time.Sleep(30 * time.Millisecond)
		rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
		asked := time.Now()
		err = client.Reload(rctx)
		rcancel()
		ready := time.Now()
		reloads = append(reloads, ready.Sub(asked))
		if err != nil {
			stop()
			t.Fatalf("round %d: reload: %v", round, err)
		}
		next := s.PID()
		if next == old {
			stop()
			t.Fatalf("round %d: the reload succeeded, but the PID file still names %d", round, old)
		}
		delay := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		time.Sleep(delay)
		syscall.Kill(old, syscall.SIGSTOP)
		drains = append(drains, time.Since(ready))
		if err := waitState(old, 'T', time.Second); err != nil {
			stop()
			t.Fatalf("round %d: the old generation %d is not draining at the kill: %v", round, old, err)
		}
		held := heldConns(old, s.addr)
		syscall.Kill(old, syscall.SIGKILL)
		delays = append(delays, delay)
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := s.WaitExit(wctx, old)
		wcancel()
		if err != nil || !st.Signaled() || st.Signal() != syscall.SIGKILL {
			t.Errorf("round %d: the old generation %d: %v, %v; want killed by SIGKILL", round, old, st, err)
		}
		if err := anchor.wait(5 * time.Second); err == nil {
			t.Errorf("round %d: the long request on the killed generation succeeded", round)
		}
		if !held[anchor.port] {
			t.Errorf("round %d: the long request's connection (port %d) is not among those the killed process held: %v", round, anchor.port, held)
		}
		time.Sleep(30 * time.Millisecond) // load on the new generation alone
		counts.add(t, round, old, stop(), held, true)
		inFlight += int64(len(held))

		if code, by, err := getPID(s.addr); err != nil || code != 200 || by != next {
			t.Fatalf("round %d: GET / = %d from pid %d (%v), want 200 from the new generation %d", round, code, by, err, next)
		}
		r := faultRun(cli, "status", "-socket", sock, "-timeout", "3s")
		if want := fmt.Sprintf("pid %d, generation %d, serving", next, round+2); r.code != 0 || !strings.Contains(r.out, want) {
			t.Fatalf("round %d: hitless status: %v; want %q", round, r, want)
		}
		if z := zombies(next, os.Getpid()); len(z) > 0 {
			t.Errorf("round %d: zombies left: %v", round, z)
		}
		n, err := settledFDs(next, refFDs, 2*time.Second)
		if err != nil {
			t.Errorf("round %d: the new generation, whose predecessor was killed, has not the descriptors of one whose predecessor exited: %v", round, err)
		}
		fdsSeen = append(fdsSeen, n)
		roundTimes = append(roundTimes, time.Since(roundStart))
	}
	t.Logf("seed %d: %d kills in %v, each (SIGSTOP) %s after the new generation was ready (asked delays %s); reloads took %s; rounds %s",
		seed, rounds, since(begin), summarize(drains), summarize(delays), summarize(reloads), summarize(roundTimes))
	t.Logf("%d requests, %d ok, %d failed, all on the %d connections the killed processes held (the 20 s request included); idle descriptors of the new generations: %v (after a normal upgrade: %d)",
		counts.requests, counts.ok, counts.onKilled, inFlight, fdsSeen, refFDs)
	if counts.ok+counts.onKilled != counts.requests {
		t.Errorf("%d requests, %d ok and %d failed on killed processes: %d unaccounted for", counts.requests, counts.ok, counts.onKilled, counts.requests-counts.ok-counts.onKilled)
	}
}

// ---- helpers ----

// tally counts the requests of rounds that kill a generation, and
// matches each failure to its connection by the client port in
// loadgen's error text.
type tally struct {
	requests, ok int64
	onKilled     int64 // failed on a connection the killed process held
	foreign      int64 // failed on any other
}

// add adds rs, the load of one round in which the generation killed
// held the client ports held. A failure on any other connection is
// reported if report is set.
func (c *tally) add(t *testing.T, round, killed int, rs []loadgen.Result, held map[int]bool, report bool) {
	t.Helper()
	for _, r := range rs {
		c.requests += r.Requests
		c.ok += r.OK
		// Every failure has its line in Errors (at most 20 per run; a
		// round has fewer when nothing is wrong), which names its
		// connection.
		if report && int64(len(r.Errors)) != r.Failed() {
			t.Errorf("round %d: %s: %d failures but %d described; cannot tell whose they were: %v", round, r.Kind, r.Failed(), len(r.Errors), r.Errors)
		}
		for _, e := range r.Errors {
			if port, ok := loadgen.ClientPort(e); ok && held[port] {
				c.onKilled++
				continue
			}
			c.foreign++
			if report {
				t.Errorf("round %d: a request not held by the killed generation %d failed: %s (it held client ports %v)", round, killed, e, sortedPorts(held))
			}
		}
	}
}

var (
	faultCLIOnce sync.Once
	faultCLIPath string
	faultCLIErr  error
)

// faultCLI builds cmd/hitless once, next to the example's binary (removed
// with it by TestMain).
func faultCLI(t *testing.T) string {
	t.Helper()
	faultCLIOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		faultCLIPath = filepath.Join(filepath.Dir(binary), "hitless")
		faultCLIErr = harness.Build(ctx, "./cmd/hitless", faultCLIPath, false, "")
	})
	if faultCLIErr != nil {
		t.Fatal(faultCLIErr)
	}
	return faultCLIPath
}

func (r hitlessResult) String() string {
	return fmt.Sprintf("exit %d after %v: %s", r.code, r.took, r.out)
}

// faultRun runs cmd/hitless, bounded by 30 s on top of its own -timeout.
func faultRun(cli string, args ...string) hitlessResult { return runCLI(30*time.Second, cli, args...) }

// faultRand returns the random source of a test and its seed.
func faultRand(t *testing.T) (*rand.Rand, uint64) {
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("HITLESS_FAULT_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (HITLESS_FAULT_SEED=%d replays it)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), seed
}

// faultLoad runs the given loads against addr until the returned function
// is called, which waits for them and returns their results.
func faultLoad(t *testing.T, addr string, cfgs ...loadgen.Config) (stop func() []loadgen.Result) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	results := make([]loadgen.Result, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		cfg.Network, cfg.Addr = "tcp", addr
		if cfg.Timeout == 0 {
			cfg.Timeout = 5 * time.Second
		}
		wg.Go(func() {
			r, err := loadgen.Run(ctx, cfg)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	stop = func() []loadgen.Result {
		cancel()
		wg.Wait()
		return results
	}
	t.Cleanup(func() { stop() }) // after a t.Fatal
	return stop
}

// asyncReload asks for a reload and delivers its outcome on the channel.
func asyncReload(ctx context.Context, c control.Client) <-chan error {
	ch := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		ch <- c.Reload(rctx)
	}()
	return ch
}

// waitChild waits until pid has one child, the new generation, and returns
// it and when it was first seen. A child must be there on two looks 300 µs
// apart: Go's first fork in a process is preceded by a probe (a clone that
// exits at once, syscall.checkClonePidfd), which is not the new
// generation, and the children files of pid's threads are not read at one
// instant.
func waitChild(pid int, timeout time.Duration) (int, time.Time, error) {
	deadline := time.Now().Add(timeout)
	var last []int
	for time.Now().Before(deadline) {
		var kids []int
		for _, k := range childrenOf(pid) {
			if alive(k) {
				kids = append(kids, k)
			}
		}
		if len(kids) == 1 && slices.Contains(last, kids[0]) {
			return kids[0], time.Now(), nil
		}
		last = kids
		time.Sleep(300 * time.Microsecond)
	}
	var what []string
	for _, k := range last {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k))
		what = append(what, fmt.Sprintf("%d: %q", k, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	return 0, time.Time{}, fmt.Errorf("pid %d did not start one new generation within %v; its children: [%s]", pid, timeout, strings.Join(what, ", "))
}

// stderrIsPipe reports whether pid's stderr is a pipe: in a new generation,
// that it has reached upgrade.New, which passes its stderr through the old
// generation until it is ready.
func stderrIsPipe(pid int) bool {
	fd2, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/2", pid))
	return strings.HasPrefix(fd2, "pipe:")
}

// waitStderrPipe waits until stderrIsPipe(pid), and says when.
func waitStderrPipe(pid int, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && alive(pid) {
		if stderrIsPipe(pid) {
			return time.Now(), true
		}
		time.Sleep(100 * time.Microsecond)
	}
	return time.Time{}, false
}

// readyPending reports whether child, stopped, has not yet told its
// parent, old, that it is ready: it still holds the write end of
// tableflip's ready pipe (its fd 3, closed right after the byte is
// written), the parent still holds the read end (closed right after the
// byte is read), and the byte is not in the pipe (FIONREAD on a reader of
// our own). Looked at twice, 2 ms apart: the parent may be between reading
// the byte and closing its end.
func readyPending(child, old int) bool {
	look := func() bool {
		fd3, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", child))
		if err != nil || !strings.HasPrefix(fd3, "pipe:") {
			return false
		}
		dir := fmt.Sprintf("/proc/%d/fd", old)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if target, _ := os.Readlink(p); target != fd3 {
				continue
			}
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				return false
			}
			n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
			unix.Close(fd)
			return err == nil && n == 0
		}
		return false
	}
	// The old generation reads the byte and then closes its end: between
	// the two the pipe looks empty, as if nothing had been written. Give
	// it time to close (a loaded machine may not run it for a while: CI,
	// with two systemds booted, once took longer than 30 ms, and the kill
	// then landed on a generation the old one had already handed over to).
	for range 10 {
		if !look() {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return look()
}

// sharesVM reports whether processes a and b share their memory (kcmp(2)
// KCMP_VM): a child forked with CLONE_VM|CLONE_VFORK, as Go forks, does
// until it has executed its program.
func sharesVM(a, b int) bool {
	const kcmpVM = 1 // linux/kcmp.h
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpVM, 0, 0, 0)
	return errno == 0 && r == 0
}

// childrenOf lists pid's children (all threads'), from
// /proc/<pid>/task/*/children.
func childrenOf(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, w := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(w); err == nil && !slices.Contains(kids, k) {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// procState returns the state letter and parent of pid, ok false if it is
// gone.
func procState(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0][0], ppid, true
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, _, ok := procState(pid)
	return ok && st != 'Z' && st != 'X'
}

// waitState waits until pid is in the given state (T: stopped).
func waitState(pid int, want byte, timeout time.Duration) error {
	return pollUntil(timeout, func() bool {
		st, _, ok := procState(pid)
		return ok && st == want
	})
}

// zombies lists the zombie processes whose parent is one of parents.
func zombies(parents ...int) []int {
	ents, _ := os.ReadDir("/proc")
	var zs []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ppid, ok := procState(pid); ok && st == 'Z' && slices.Contains(parents, ppid) {
			zs = append(zs, pid)
		}
	}
	return zs
}

// fdCount is the number of descriptors pid has open, -1 if it is gone.
func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// fdTargets lists what pid's descriptors point to, for error messages.
func fdTargets(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	return strings.Join(out, " ")
}

// settledFDs waits until pid's descriptor count stops moving (the same in
// five reads 20 ms apart) and, when want >= 0, equals want; it returns the
// count, or an error that lists the descriptors.
func settledFDs(pid, want int, timeout time.Duration) (int, error) {
	var n, same int
	last := -2
	err := pollUntil(timeout, func() bool {
		n = fdCount(pid)
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		return same >= 4 && (want < 0 || n == want)
	})
	if err != nil {
		return n, fmt.Errorf("pid %d has %d descriptors open, want %d settled: %v; they are: %s", pid, n, want, err, fdTargets(pid))
	}
	return n, nil
}

// heldConns returns the client ports of the TCP connections to addr's port
// that pid holds (its accepted connections). It copies each of pid's
// sockets into this process with pidfd_getfd(2) (root, or ptrace rights
// over pid) and asks it for its addresses, then closes the copy: cheap,
// where /proc/<pid>/net/tcp lists every TIME_WAIT socket of the machine
// (tens of thousands under new-connection load, 100+ ms to read). Without
// pidfd_getfd it reads /proc/<pid>/net/tcp.
func heldConns(pid int, addr string) map[int]bool {
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	sockets := map[int]string{} // fd -> inode
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			if fd, err := strconv.Atoi(e.Name()); err == nil {
				sockets[fd] = strings.TrimSuffix(ino, "]")
			}
		}
	}
	if held, err := heldByPidfd(pid, port, sockets); err == nil {
		return held
	}
	inodes := map[string]bool{}
	for _, ino := range sockets {
		inodes[ino] = true
	}
	held := map[int]bool{}
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fl := strings.Fields(sc.Text())
			if len(fl) < 10 || !inodes[fl[9]] {
				continue
			}
			lport, rport := hexPort(fl[1]), hexPort(fl[2])
			if lport == port && rport != 0 {
				held[rport] = true
			}
		}
		f.Close()
	}
	return held
}

func heldByPidfd(pid, port int, sockets map[int]string) (map[int]bool, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pidfd)
	held := map[int]bool{}
	for fd := range sockets {
		dup, err := unix.PidfdGetfd(pidfd, fd, 0)
		if errors.Is(err, unix.EBADF) {
			continue // closed meanwhile
		}
		if err != nil {
			return nil, err
		}
		local, lerr := unix.Getsockname(dup)
		peer, perr := unix.Getpeername(dup)
		unix.Close(dup)
		if lerr != nil || perr != nil {
			continue // a listener, a unix socket without peer, ...
		}
		if lport, ok := inetPort(local); ok && lport == port {
			if rport, ok := inetPort(peer); ok {
				held[rport] = true
			}
		}
	}
	return held, nil
}

func inetPort(sa unix.Sockaddr) (int, bool) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port, true
	case *unix.SockaddrInet6:
		return a.Port, true
	}
	return 0, false
}

func hexPort(hostport string) int {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 {
		return -1
	}
	v, err := strconv.ParseUint(hostport[i+1:], 16, 16)
	if err != nil {
		return -1
	}
	return int(v)
}

func sortedPorts(m map[int]bool) []int {
	ps := make([]int, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	return ps
}

// heldRequest is one request on its own connection whose answer is read in
// the background.
type heldRequest struct {
	conn net.Conn
	port int
	done chan error
}

// holdRequest sends GET path on a new connection; wait returns its outcome.
func holdRequest(addr, path string) (*heldRequest, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	h := &heldRequest{conn: c, port: c.LocalAddr().(*net.TCPAddr).Port, done: make(chan error, 1)}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		c.Close()
		return nil, err
	}
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		h.done <- err
	}()
	return h, nil
}

// wait returns the request's outcome, closing its connection after
// timeout if it has none by then.
func (h *heldRequest) wait(timeout time.Duration) error {
	defer h.conn.Close()
	select {
	case err := <-h.done:
		return err
	case <-time.After(timeout):
		h.conn.Close()
		<-h.done
		return fmt.Errorf("no outcome within %v", timeout)
	}
}

// getPID sends GET / on a new connection and returns the status and the
// X-Pid of the process that answered.
func getPID(addr string) (int, int, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
	return resp.StatusCode, pid, nil
}

// nofileLimit returns pid's soft and hard limit on open files, as "soft hard".
func nofileLimit(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				return f[0] + " " + f[1]
			}
		}
	}
	return ""
}

func readLog(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// pollUntil calls ok every 5 ms until it returns true or timeout passes.
func pollUntil(timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// summarize gives min, median and max of ds.
func summarize(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return fmt.Sprintf("min %v, median %v, max %v", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]))
}

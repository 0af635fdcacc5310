//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

// TestTakeBackWhenNewGenerationDies upgrades the example 30 times under
// keep-alive and new-connection load, with a long request (/?sleep=600ms,
// longer when the machine is slow) held on the old generation so that it
// drains, and SIGKILLs the new generation at a random moment after it
// took over (0–300 ms after the reload returned, and at least 150 ms
// before the long request ends, so that the old generation still
// drains). The old generation must take the service back:
// requests on connections the killed process held may fail (they are
// matched to it by their client port, read from /proc while it is
// stopped); every other request must succeed, connection refusals
// included. After each kill the old generation answers GET /, the PID
// file and `hitless status` name it as serving, its long request
// completes, no zombie is left, and the next round's reload, from the
// same process, succeeds: a generation that took the service back can be
// upgraded again. The last round is let go on, and its new generation
// stops the service cleanly.
func TestTakeBackWhenNewGenerationDies(t *testing.T) {
	runTakeBack(t, 30, true)
}

// TestWithoutTakeBackRefuses is the mutation: with -take-back=false (Run,
// which lets the sockets go at the hand-over) the same kill leaves nobody
// accepting, and clients are refused or reset. 3 rounds are enough to
// see it.
func TestWithoutTakeBackRefuses(t *testing.T) {
	runTakeBack(t, 3, false)
}

func runTakeBack(t *testing.T, rounds int, takeBack bool) {
	rng, seed := faultRand(t)
	cli := faultCLI(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	s := start(t, "-control", sock, "-preflight=false", "-upgrade-timeout", "10s", "-drain-timeout", "10s",
		fmt.Sprintf("-take-back=%v", takeBack))
	client := control.Client{Socket: sock}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	old := s.PID()
	var (
		counts            tally
		delays, takeBacks []time.Duration
		generation        = 1
		skipped           int
		// hold is how long the request that keeps the old generation
		// draining lasts. On a loaded machine a reload can take most of
		// 600 ms; then the drain would end before the kill, and there
		// would be nothing to take back. It grows with the slowest
		// reload seen.
		hold = 600 * time.Millisecond
	)
	begin := time.Now()
	for round := 1; round <= rounds; round++ {
		stop := faultLoad(t, s.addr,
			loadgen.Config{Kind: loadgen.KeepAlive, Workers: 3, Pace: time.Millisecond, Timeout: 5 * time.Second},
			loadgen.Config{Kind: loadgen.NewConn, Workers: 2, Pace: time.Millisecond, Timeout: 5 * time.Second})
		anchor, err := holdRequest(s.addr, fmt.Sprintf("/?sleep=%dms", hold.Milliseconds()))
		ends := time.Now().Add(hold) // the old generation drains until then
		if err != nil {
			stop()
			t.Fatalf("round %d: %v", round, err)
		}
		if err := pollUntil(2*time.Second, func() bool { return heldConns(old, s.addr)[anchor.port] }); err != nil {
			stop()
			t.Fatalf("round %d: the old generation %d did not accept the long request: %v", round, old, err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
		reloadAt := time.Now()
		err = client.Reload(rctx)
		reloadTook := time.Since(reloadAt)
		rcancel()
		if err != nil {
			stop()
			t.Fatalf("round %d: reload from generation %d: %v", round, old, err)
		}
		next := s.PID()
		if next == old {
			stop()
			t.Fatalf("round %d: the reload succeeded, but the PID file still names %d", round, old)
		}
		hold = max(hold, 2*reloadTook+400*time.Millisecond) // for the next round
		// The kill must land while the old generation still drains.
		window := min(300*time.Millisecond, time.Until(ends)-150*time.Millisecond)
		if window <= 0 {
			// The reload took so long that the drain is about to end:
			// this round cannot test a take-back. The upgrade goes on,
			// and the round is run again from the new generation.
			skipped++
			t.Logf("round %d: the reload took %v, the long request ends in %v; not killed, run again with a %v request",
				round, reloadTook, time.Until(ends), hold)
			if skipped > 5 {
				stop()
				t.Fatalf("round %d: %d reloads took too long to kill the new generation during the drain", round, skipped)
			}
			counts.add(t, round, 0, stop(), nil, true)
			if err := anchor.wait(5 * time.Second); err != nil {
				t.Errorf("round %d: the long request on the old generation: %v", round, err)
			}
			wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
			_, err := s.WaitExit(wctx, old)
			wcancel()
			if err != nil {
				t.Fatalf("round %d: the old generation %d did not exit after its drain: %v", round, old, err)
			}
			old, generation = next, generation+1
			round--
			continue
		}
		delay := time.Duration(rng.Int64N(int64(window)))
		time.Sleep(delay)
		delays = append(delays, delay)
		syscall.Kill(next, syscall.SIGSTOP)
		if err := waitState(next, 'T', time.Second); err != nil {
			stop()
			t.Fatalf("round %d: the new generation %d did not stop: %v", round, next, err)
		}
		held := heldConns(next, s.addr)
		killed := time.Now()
		syscall.Kill(next, syscall.SIGKILL)
		if !takeBack {
			time.Sleep(300 * time.Millisecond) // load meets nobody accepting
			counts.add(t, round, next, stop(), held, false)
			anchor.wait(3 * time.Second)
			// The old generation drains and exits: restart the service.
			wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
			_, err := s.WaitExit(wctx, old)
			wcancel()
			if err != nil {
				t.Fatalf("round %d: the old generation %d did not exit: %v", round, old, err)
			}
			s = start(t, "-control", sock, "-preflight=false", "-upgrade-timeout", "10s", "-drain-timeout", "10s", "-take-back=false")
			old, generation = s.PID(), 1
			continue
		}
		// Taken back: the PID file names the old generation again.
		if err := pollUntil(3*time.Second, func() bool { return s.PID() == old }); err != nil {
			stop()
			t.Fatalf("round %d: after the kill of %d the PID file names %d, not the old generation %d: %v", round, next, s.PID(), old, err)
		}
		takeBacks = append(takeBacks, time.Since(killed))
		time.Sleep(30 * time.Millisecond) // load on the old generation alone
		counts.add(t, round, next, stop(), held, true)
		if err := anchor.wait(5 * time.Second); err != nil {
			t.Errorf("round %d: the long request on the old generation, which drained it meanwhile: %v", round, err)
		}
		if code, by, err := getPID(s.addr); err != nil || code != 200 || by != old {
			t.Fatalf("round %d: GET / = %d from pid %d (%v), want 200 from the old generation %d", round, code, by, err, old)
		}
		r := faultRun(cli, "status", "-socket", sock, "-timeout", "3s")
		if want := fmt.Sprintf("pid %d, generation %d, serving", old, generation); r.code != 0 || !strings.Contains(r.out, want) {
			t.Fatalf("round %d: hitless status: %v; want %q", round, r, want)
		}
		if z := zombies(old); len(z) > 0 {
			t.Errorf("round %d: zombies left: %v", round, z)
		}
	}
	t.Logf("seed %d: %d rounds in %v (%d more not killed: slow reloads; the last request held %v); kills %s after the reload returned; taken back (PID file) %s after the kill",
		seed, rounds, since(begin), skipped, hold, summarize(delays), summarize(takeBacks))
	t.Logf("%d requests, %d ok, %d failed: %d of the first 20 per round and kind on connections the killed processes held, %d on others",
		counts.requests, counts.ok, counts.requests-counts.ok, counts.onKilled, counts.foreign)
	if !takeBack {
		if counts.foreign == 0 {
			t.Errorf("without take-back, no request failed other than those the killed generation held: the mutation shows nothing")
		}
		return
	}
	if counts.requests == 0 || counts.ok+counts.onKilled != counts.requests {
		t.Errorf("%d requests, %d ok and %d failed on killed processes: %d unaccounted for", counts.requests, counts.ok, counts.onKilled, counts.requests-counts.ok-counts.onKilled)
	}
	// Upgraded once more, and stopped: the generation that took the
	// service back 30 times hands over and exits normally.
	if _, err := s.Upgrade(ctx); err != nil {
		t.Fatalf("a last upgrade after the take-backs: %v", err)
	}
	if code, by, err := getPID(s.addr); err != nil || code != 200 || by == old {
		t.Fatalf("after the last upgrade: GET / = %d from pid %d (%v), want 200 from a new generation", code, by, err)
	}
}

// TestStopIsNotTakenBack: a new generation that stops for good (SIGTERM)
// while the old one still drains tells the old one first, which then
// does not take the service back: it finishes its drain (its long request
// completes) and exits, and so does the service. The second part: an old
// generation told to stop while it drains does not take back either when
// the new one is killed.
func TestStopIsNotTakenBack(t *testing.T) {
	for _, c := range []struct {
		name string
		stop func(t *testing.T, old, next int)
	}{
		{"new generation stopped", func(t *testing.T, old, next int) {
			syscall.Kill(next, syscall.SIGTERM)
		}},
		{"old generation stopped, new one killed", func(t *testing.T, old, next int) {
			syscall.Kill(old, syscall.SIGTERM)
			time.Sleep(100 * time.Millisecond)
			syscall.Kill(next, syscall.SIGKILL)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := start(t, "-preflight=false", "-drain-timeout", "10s")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			old := s.PID()
			anchor, err := holdRequest(s.addr, "/?sleep=1500ms")
			if err != nil {
				t.Fatal(err)
			}
			if err := pollUntil(2*time.Second, func() bool { return heldConns(old, s.addr)[anchor.port] }); err != nil {
				t.Fatalf("the long request was not accepted: %v", err)
			}
			// SIGHUP, not s.Upgrade, which waits for the old generation
			// to exit: this must happen while it drains.
			syscall.Kill(old, syscall.SIGHUP)
			if err := pollUntil(5*time.Second, func() bool { return s.PID() != old }); err != nil {
				t.Fatalf("no new generation: %v", err)
			}
			next := s.PID()
			if !alive(old) {
				t.Fatalf("the old generation %d is gone already; its drain should take 1.5 s", old)
			}
			c.stop(t, old, next)
			if err := anchor.wait(5 * time.Second); err != nil {
				t.Errorf("the long request on the old generation: %v", err)
			}
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = s.WaitExit(wctx, old)
			wcancel()
			if err != nil {
				t.Fatalf("the old generation %d did not exit after its drain: %v\n%s", old, err, readLog(s.log))
			}
			if bytes.Contains(readLog(s.log), []byte("serving again")) {
				t.Fatalf("the old generation took the service back after a stop:\n%s", readLog(s.log))
			}
			if code, by, err := getPID(s.addr); err == nil {
				t.Fatalf("after the stop, GET / = %d from pid %d: someone still serves", code, by)
			}
		})
	}
}

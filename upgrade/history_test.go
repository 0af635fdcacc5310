//go:build unix

package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/internal/handoff"
)

// recorder is an Observer that keeps what it is told, and checks that it
// is never called concurrently and that it may ask for the status.
type recorder struct {
	h      *history // if set, asked for the status from within Observe
	mu     sync.Mutex
	busy   bool
	events []Event
	errs   []string
}

func (r *recorder) Observe(ev Event) {
	r.mu.Lock()
	if r.busy {
		r.errs = append(r.errs, "Observe called concurrently")
	}
	r.busy = true
	r.mu.Unlock()
	if r.h != nil {
		var st control.Status
		r.h.status(&st) // would deadlock if Observe were called under the history's lock
	}
	r.mu.Lock()
	r.busy = false
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) kinds() []EventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []EventKind
	for _, ev := range r.events {
		ks = append(ks, ev.Kind)
	}
	return ks
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Error(e)
	}
	var prev Totals
	for _, ev := range r.events {
		if ev.Totals.Upgrades < prev.Upgrades || ev.Totals.Failures < prev.Failures || ev.Totals.TakeBacks < prev.TakeBacks ||
			ev.Totals.DrainEnded < prev.DrainEnded || ev.Totals.DrainCut < prev.DrainCut {
			t.Errorf("totals went back at %s: %+v after %+v", ev.Kind, ev.Totals, prev)
		}
		prev = ev.Totals
	}
}

// generation is one simulated generation's history, linked to the next
// the way handoff links them.
type generation struct {
	h   *history
	obs *recorder
	out chan json.RawMessage // what its drained report is sent on
}

func newGeneration(t *testing.T, keep, pid, gen int, prev []byte, in <-chan json.RawMessage) *generation {
	t.Helper()
	g := &generation{obs: &recorder{}, out: make(chan json.RawMessage, 1)}
	g.h = newHistoryWith(historyConfig{keep: keep, pid: pid, gen: gen, version: "v" + string(rune('0'+gen)),
		obs: g.obs, stateLimit: DefaultStateLimit, prev: prev, drained: in,
		send: func(b json.RawMessage) error { g.out <- b; return nil }})
	g.obs.h = g.h
	t.Cleanup(g.h.close)
	return g
}

func (g *generation) status() control.Status {
	var st control.Status
	g.h.status(&st)
	return st
}

// upgradeTo carries out a successful upgrade from g to a new generation
// and its drain (ended, cut), as the lifecycle calls the hooks.
func (g *generation) upgradeTo(t *testing.T, keep, pid int, ended, cut int) *generation {
	t.Helper()
	next := g.h.cfg.gen + 1
	g.h.requested(time.Now().Add(-time.Millisecond))
	g.h.attemptStarted(next, control.KindUpgrade)
	snap, err := g.h.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	n := newGeneration(t, keep, pid, next, snap, g.out)
	n.h.ready()
	g.h.upgraded(handoff.Child{PID: pid, Build: n.h.cfg.version})
	g.h.drained(drain.Report{Name: "generation", Ended: ended, Cut: cut, Duration: 20 * time.Millisecond}, nil, true)
	waitFor(t, "the drained report", func() bool { return !n.status().History[len(n.status().History)-1].DrainedAt.IsZero() })
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestHistoryHandedOverAcrossGenerations(t *testing.T) {
	g1 := newGeneration(t, 16, 101, 1, nil, nil)
	g1.h.ready()
	g2 := g1.upgradeTo(t, 16, 102, 3, 1)

	// A failure in generation 2, then an upgrade to 3.
	g2.h.attemptStarted(3, control.KindUpgrade)
	g2.h.failed(&ChildError{Reason: control.ReasonExited, PID: 999, ExitStatus: 3,
		Stderr: "secret output", Err: errors.New("bad configuration")})
	g3 := g2.upgradeTo(t, 16, 103, 5, 0)

	st := g3.status()
	if st.Version != "v3" {
		t.Errorf("version %q, want v3", st.Version)
	}
	want := control.Totals{Upgrades: 2, Failures: 1, FailuresByReason: map[string]int64{"exited": 1}, DrainEnded: 8, DrainCut: 1}
	if got := st.Totals; got.Upgrades != want.Upgrades || got.Failures != want.Failures || got.FailuresByReason["exited"] != 1 ||
		got.DrainEnded != want.DrainEnded || got.DrainCut != want.DrainCut {
		t.Errorf("totals %+v, want %+v", got, want)
	}
	if len(st.History) != 3 {
		t.Fatalf("history has %d entries, want 3: %+v", len(st.History), st.History)
	}
	for i, w := range []struct {
		outcome    control.Outcome
		from, to   control.Process
		reason     string
		ended, cut int
	}{
		{control.OutcomeOK, control.Process{PID: 101, Generation: 1, Version: "v1"}, control.Process{PID: 102, Generation: 2, Version: "v2"}, "", 3, 1},
		{control.OutcomeFailed, control.Process{PID: 102, Generation: 2, Version: "v2"}, control.Process{PID: 999, Generation: 3}, "exited", 0, 0},
		{control.OutcomeOK, control.Process{PID: 102, Generation: 2, Version: "v2"}, control.Process{PID: 103, Generation: 3, Version: "v3"}, "", 5, 0},
	} {
		e := st.History[i]
		if e.Kind != control.KindUpgrade || e.Outcome != w.outcome || e.From != w.from || e.To != w.to || e.Reason != w.reason ||
			e.DrainEnded != w.ended || e.DrainCut != w.cut {
			t.Errorf("entry %d: %+v\nwant %+v", i, e, w)
		}
		if e.Started.IsZero() || e.Finished.Before(e.Started) || e.Requested.After(e.Started) || e.Took <= 0 {
			t.Errorf("entry %d: times requested %v started %v finished %v took %v", i, e.Requested, e.Started, e.Finished, e.Took)
		}
		if w.outcome == control.OutcomeOK && (e.DrainTook != 20*time.Millisecond || e.DrainedAt.IsZero()) {
			t.Errorf("entry %d: drain %v at %v, want 20ms", i, e.DrainTook, e.DrainedAt)
		}
	}
	if e := st.History[1].Error; strings.Contains(e, "secret") || !strings.Contains(e, "exited") {
		t.Errorf("failure's error %q: want the summary, without the child's output", e)
	}
	// The old generations' own rings agree on their upgrades.
	if h := g2.status().History; len(h) != 3 || h[2].DrainEnded != 5 || g2.status().Totals.DrainEnded != 8 {
		t.Errorf("generation 2's history %+v, totals %+v", h, g2.status().Totals)
	}

	for _, tc := range []struct {
		name string
		g    *generation
		want []EventKind
	}{
		{"generation 1", g1, []EventKind{EventReady, EventUpgradeStarted, EventUpgraded, EventDrained}},
		{"generation 2", g2, []EventKind{EventReady, EventPreviousDrained, EventUpgradeStarted, EventUpgradeFailed,
			EventUpgradeStarted, EventUpgraded, EventDrained}},
		{"generation 3", g3, []EventKind{EventReady, EventPreviousDrained}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.g.obs.check(t)
			if got := tc.g.obs.kinds(); !equalKinds(got, tc.want) {
				t.Errorf("events %v, want %v", got, tc.want)
			}
		})
	}
	g3.obs.mu.Lock()
	last := g3.obs.events[len(g3.obs.events)-1]
	g3.obs.mu.Unlock()
	if last.Totals.Upgrades != 2 || last.Totals.DrainEnded != 8 || last.From.PID != 102 || last.Drain.Ended != 5 {
		t.Errorf("generation 3's last event %+v", last)
	}
}

func equalKinds(a, b []EventKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHistoryLenKeepsTheNewest(t *testing.T) {
	for _, tc := range []struct {
		name       string
		keep, want int
	}{{"two", 2, 2}, {"none", -1, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGeneration(t, tc.keep, 100, 1, nil, nil)
			g.h.ready()
			for i := range 4 {
				g.h.attemptStarted(2, control.KindUpgrade)
				g.h.failed(&ChildError{Reason: control.ReasonCrashed, PID: 200 + i, Signal: syscall.SIGSEGV})
			}
			g.h.attemptStarted(2, control.KindUpgrade)
			st := g.status()
			if len(st.History) != tc.want+1 || st.History[len(st.History)-1].Outcome != control.OutcomeInProgress {
				t.Fatalf("history %+v: want %d entries and the one in progress", st.History, tc.want)
			}
			if tc.want > 0 && st.History[0].To.PID != 202 {
				t.Errorf("oldest entry kept is to pid %d, want 202", st.History[0].To.PID)
			}
			if st.Totals.Failures != 4 || st.Totals.FailuresByReason["crashed"] != 4 {
				t.Errorf("totals %+v, want 4 crashed", st.Totals)
			}
			// What is handed over: the totals, and the attempt in progress
			// that the next generation completes.
			snap, err := g.h.snapshot()
			if err != nil {
				t.Fatal(err)
			}
			n := newGeneration(t, tc.keep, 300, 2, snap, nil)
			n.h.ready()
			st = n.status()
			if len(st.History) != tc.want || st.Totals.Failures != 4 || st.Totals.Upgrades != 1 {
				t.Errorf("next generation: history %d entries, totals %+v", len(st.History), st.Totals)
			}
		})
	}
}

func TestHistoryTakenBack(t *testing.T) {
	g1 := newGeneration(t, 16, 101, 1, nil, nil)
	g1.h.ready()
	g1.h.attemptStarted(2, control.KindUpgrade)
	g1.h.upgraded(handoff.Child{PID: 102, Build: "v2"})
	g1.h.takenBack(102, "was killed by SIGKILL")
	// The drain that ran while generation 2 served ends after the
	// take-back; nobody is told.
	g1.h.drained(drain.Report{Ended: 2, Duration: time.Millisecond}, nil, false)
	st := g1.status()
	e := st.History[0]
	if e.Outcome != control.OutcomeTakenBack || e.Reason != reasonDied || !strings.Contains(e.Error, "SIGKILL") || e.DrainEnded != 2 {
		t.Errorf("entry %+v", e)
	}
	if st.Totals.TakeBacks != 1 || st.Totals.Upgrades != 1 || st.Totals.DrainEnded != 2 {
		t.Errorf("totals %+v", st.Totals)
	}
	if got, want := g1.obs.kinds(), []EventKind{EventReady, EventUpgradeStarted, EventUpgraded, EventTakenBack, EventDrained}; !equalKinds(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	select {
	case b := <-g1.out:
		t.Errorf("a drained report was sent after the take-back: %s", b)
	default:
	}
}

func TestHistoryCanceledAttemptIsNoFailure(t *testing.T) {
	g := newGeneration(t, 16, 100, 1, nil, nil)
	g.h.ready()
	g.h.failed(ErrStopped) // before any attempt began: nothing to record
	g.h.attemptStarted(2, control.KindUpgrade)
	g.h.failed(ErrStopped)
	st := g.status()
	if len(st.History) != 1 || st.History[0].Outcome != control.OutcomeCanceled || st.Totals.Failures != 0 {
		t.Errorf("history %+v, totals %+v", st.History, st.Totals)
	}
}

func TestHistoryDrainOfAGenerationNeverReadyCountsNothing(t *testing.T) {
	g := newGeneration(t, 16, 100, 2, nil, nil)
	g.h.drained(drain.Report{Ended: 1}, nil, false)
	if st := g.status(); st.Totals.DrainEnded != 0 || len(g.obs.kinds()) != 0 {
		t.Errorf("totals %+v, events %v", st.Totals, g.obs.kinds())
	}
}

func TestHistoryNilObserver(t *testing.T) {
	h := newHistoryWith(historyConfig{keep: 16, pid: 1, gen: 1, stateLimit: DefaultStateLimit})
	defer h.close()
	h.ready()
	h.mu.Lock()
	ev := h.event(EventReady, time.Now())
	h.mu.Unlock()
	if ev != nil {
		t.Fatal("an event was built for nobody")
	}
	allocs := testing.AllocsPerRun(100, func() { h.takenBack(2, "exited") })
	if allocs > 2 {
		t.Errorf("a take-back allocates %v times without an Observer", allocs)
	}
}

func TestHistorySnapshotFitsTheStateLimit(t *testing.T) {
	g := newGeneration(t, 1000, 100, 1, nil, nil)
	g.h.cfg.stateLimit = 4096
	g.h.ready()
	for range 100 {
		g.h.attemptStarted(2, control.KindUpgrade)
		g.h.failed(&ChildError{Reason: control.ReasonTimedOut, Timeout: time.Second})
	}
	snap, err := g.h.snapshot()
	if err != nil || len(snap) > 4096 {
		t.Fatalf("snapshot of %d bytes, %v", len(snap), err)
	}
	var st historyState
	if err := json.Unmarshal(snap, &st); err != nil || st.Totals.Failures != 100 || len(st.History) == 0 || len(st.History) == 100 {
		t.Errorf("snapshot: %d entries, totals %+v, %v", len(st.History), st.Totals, err)
	}
}

func TestHistoryIgnoresWhatItCannotRead(t *testing.T) {
	for _, prev := range []string{`{`, `{"format":99,"totals":{"upgrades":5}}`} {
		h := newHistoryWith(historyConfig{keep: 16, pid: 1, gen: 2, prev: []byte(prev), stateLimit: DefaultStateLimit})
		var st control.Status
		h.status(&st)
		h.close()
		if st.Totals.Upgrades != 0 || len(st.History) != 0 {
			t.Errorf("%s: took %+v", prev, st)
		}
	}
}

func TestBuildVersion(t *testing.T) {
	if got := buildVersion("v1.2.3"); got != "v1.2.3" {
		t.Errorf("buildVersion(v1.2.3) = %q", got)
	}
	for _, tc := range []struct {
		name string
		info debug.BuildInfo
		want string
	}{
		{"module version", debug.BuildInfo{Main: debug.Module{Version: "v1.4.2"}}, "v1.4.2"},
		{"revision", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "false"}}}, "0123456789ab"},
		{"dirty", debug.BuildInfo{Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}, "0123456789ab-dirty"},
		{"nothing", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionOf(&tc.info); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestHistoryAcrossRealGenerations runs the test server through two
// upgrades and a failure and reads the history from the last
// generation's control socket: handed over twice, completed by each new
// generation, the failure counted with its reason, and the drain figures
// filled in when the previous generation's report arrives.
func TestHistoryAcrossRealGenerations(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ts := startTestServer(t, "tcp", envControl+"="+sock)
	first := ts.PID()
	for i := range 2 {
		old := ts.PID()
		if err := ts.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if r := ts.nextResult(); r.Err != "" {
			t.Fatalf("upgrade %d: %s", i+1, r.Err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := ts.WaitPIDChange(ctx, old)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	ts.setMode("exit")
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if r := ts.nextResult(); !r.Failed {
		t.Fatalf("upgrade to a generation that exits: %+v", r)
	}
	ts.setMode("ok")

	c := control.Client{Socket: sock}
	var st control.Status
	waitFor(t, "the second drain's figures", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		st, err = c.Status(ctx)
		return err == nil && len(st.History) == 3 && !st.History[1].DrainedAt.IsZero()
	})
	if st.Generation != 3 || st.Totals.Upgrades != 2 || st.Totals.Failures != 1 || st.Totals.FailuresByReason["exited"] != 1 {
		t.Errorf("generation %d, totals %+v", st.Generation, st.Totals)
	}
	h := st.History
	if h[0].From.PID != first || h[0].To.Generation != 2 || h[1].To.PID != st.PID || h[1].From.PID != h[0].To.PID ||
		h[0].Outcome != control.OutcomeOK || h[1].Outcome != control.OutcomeOK || h[2].Outcome != control.OutcomeFailed || h[2].Reason != "exited" {
		t.Errorf("history:\n%+v\n%+v\n%+v", h[0], h[1], h[2])
	}
	if h[0].DrainedAt.IsZero() || h[0].To.Version == "" || h[1].Took <= 0 {
		t.Errorf("first upgrade's drain or version missing: %+v", h[0])
	}
}

// TestObserverHearsInOrder calls a hook from many goroutines at once: the
// Observer is never called concurrently, and hears the totals in the
// order they changed.
func TestObserverHearsInOrder(t *testing.T) {
	obs := &recorder{}
	h := newHistoryWith(historyConfig{keep: 16, pid: 1, gen: 1, obs: obs, stateLimit: DefaultStateLimit})
	defer h.close()
	obs.h = h
	const n = 200
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { h.takenBack(2, "exited") })
	}
	wg.Wait()
	obs.check(t)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.events) != n {
		t.Fatalf("%d events, want %d", len(obs.events), n)
	}
	for i, ev := range obs.events {
		if ev.Totals.TakeBacks != int64(i+1) {
			t.Fatalf("event %d carries %d take-backs: heard out of order", i, ev.Totals.TakeBacks)
		}
	}
}

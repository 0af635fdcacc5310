package queue

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/control"
)

// t0 is when every script starts.
var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// Outcomes an owner reports for an attempt.
var (
	errChild  = &control.ChildError{Reason: control.ReasonCrashed, PID: 42}
	errChild2 = &control.ChildError{Reason: control.ReasonExited, PID: 43, ExitStatus: 1}
	// errOther is a failure that does not count toward the crash loop
	// (not a *ChildError).
	errOther = errors.New("could not tell systemd")
	// errKilled is what an attempt the owner cancelled ends with.
	errKilled = errors.New("attempt cancelled")
)

// ev is one event of a script.
type ev struct {
	name string
	// at, if set, moves the clock to t0+at before the event.
	at time.Duration
	do func(m *Machine, now time.Time) []Action
}

func req(id ID) ev { return request(Request{ID: id}) }
func hurried(id ID) ev {
	return request(Request{ID: id, Hurry: true})
}
func async(id ID) ev { return request(Request{ID: id, Async: true}) }

func request(r Request) ev {
	return ev{name: fmt.Sprintf("Request(%+v)", r), do: func(m *Machine, now time.Time) []Action { return m.Request(now, r) }}
}

func started() ev {
	return ev{name: "Started", do: func(m *Machine, now time.Time) []Action { return m.Started(now) }}
}

func done(err error, counts bool) ev {
	return ev{name: fmt.Sprintf("Done(%v, %v)", err, counts), do: func(m *Machine, now time.Time) []Action { return m.Done(now, err, counts) }}
}

func giveUp(id ID) ev {
	return ev{name: fmt.Sprintf("GiveUp(%d)", id), do: func(m *Machine, now time.Time) []Action { return m.GiveUp(now, id) }}
}

func exit() ev {
	return ev{name: "Exit", do: func(m *Machine, now time.Time) []Action { return m.Exit(now) }}
}

func settle(id ID) ev {
	return ev{name: fmt.Sprintf("Settle(%d)", id), do: func(m *Machine, now time.Time) []Action { return m.Settle(now, id) }}
}

// at moves the clock to t0+d before e.
func at(d time.Duration, e ev) ev {
	e.at = d
	e.name = fmt.Sprintf("%s at %v", e.name, d)
	return e
}

// Expected actions.
var (
	aStart  = Action{Kind: Start}
	aHurry  = Action{Kind: Hurry}
	aCancel = Action{Kind: Cancel}
)

func reply(err error, ids ...ID) Action { return Action{Kind: Reply, IDs: ids, Err: err} }
func forward(ids ...ID) Action          { return Action{Kind: Forward, IDs: ids} }
func settled(ids ...ID) Action          { return Action{Kind: Settled, IDs: ids} }

func backoff(until time.Duration, failures int, last error) error {
	return &control.BackoffError{Until: t0.Add(until), Failures: failures, Last: last}
}

// step is an event and the actions it must return; status, if set, must
// be the machine's status afterwards.
type step struct {
	ev     ev
	want   []Action
	status *Status
}

// do is a step expecting want.
func do(e ev, want ...Action) step { return step{ev: e, want: want} }

// then adds an expected status to s.
func (s step) then(st Status) step { s.status = &st; return s }

type script struct {
	name  string
	cfg   Config
	steps []step
}

func run(t *testing.T, sc script) {
	t.Helper()
	m := New(sc.cfg)
	now := t0
	for i, s := range sc.steps {
		if s.ev.at != 0 {
			now = t0.Add(s.ev.at)
		}
		got := s.ev.do(m, now)
		if !sameActions(got, s.want) {
			t.Fatalf("step %d, %s:\n got %s\nwant %s", i, s.ev.name, fmtActions(got), fmtActions(s.want))
		}
		if s.status != nil {
			if st := m.Status(); !sameStatus(st, *s.status) {
				t.Fatalf("step %d, %s: status\n got %+v\nwant %+v", i, s.ev.name, st, *s.status)
			}
		}
	}
}

func sameActions(got, want []Action) bool {
	return slices.EqualFunc(got, want, func(g, w Action) bool {
		return g.Kind == w.Kind && slices.Equal(g.IDs, w.IDs) && sameErr(g.Err, w.Err)
	})
}

// sameErr compares a *BackoffError by its fields, everything else by
// identity: the machine passes errors through, it never wraps them.
func sameErr(got, want error) bool {
	var wb, gb *control.BackoffError
	if errors.As(want, &wb) {
		return errors.As(got, &gb) && gb.Until.Equal(wb.Until) && gb.Failures == wb.Failures && gb.Last == wb.Last
	}
	return got == want
}

func sameStatus(got, want Status) bool {
	return got.Phase == want.Phase && got.Failures == want.Failures && got.Backoff.Equal(want.Backoff) &&
		got.LastErr == want.LastErr && got.LastAt.Equal(want.LastAt) && got.Upgraded == want.Upgraded
}

func fmtActions(as []Action) string {
	if len(as) == 0 {
		return "[]"
	}
	var b strings.Builder
	for i, a := range as {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.Kind.String())
		if a.IDs != nil || a.Kind == Reply {
			fmt.Fprintf(&b, "(%v", a.IDs)
			if a.Kind == Reply {
				fmt.Fprintf(&b, ", %v", a.Err)
			}
			b.WriteString(")")
		}
	}
	return b.String()
}

func TestMachine(t *testing.T) {
	crashLoop := Config{CrashLoopAfter: 2, CrashLoopBackoff: 10 * time.Second}
	scripts := []script{
		// Coalescing and the next attempt.
		{name: "request while Idle starts an attempt", steps: []step{
			do(req(1), aStart).then(Status{Phase: Waiting}),
			do(started()).then(Status{Phase: Running}),
			do(at(time.Second, done(nil, false)), reply(nil, 1)).
				then(Status{Phase: Exited, LastAt: t0.Add(time.Second), Upgraded: true}),
		}},
		{name: "requests coalesce into a Waiting attempt", steps: []step{
			do(req(1), aStart),
			do(req(2)),
			do(async(3)),
			do(req(4)).then(Status{Phase: Waiting}),
			do(started()),
			do(done(nil, false), reply(nil, 1, 2, 3, 4)),
		}},
		{name: "request while Running waits for the next attempt", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)).then(Status{Phase: Running}),
			do(req(3)),
			do(at(time.Second, done(errChild, true)), reply(errChild, 1), aStart).
				then(Status{Phase: Waiting, Failures: 1, LastErr: errChild, LastAt: t0.Add(time.Second)}),
			do(req(4)), // coalesces into the second attempt
			do(started()),
			do(req(5)),
			do(done(nil, false), reply(nil, 2, 3, 4), forward(5)),
		}},
		{name: "a failure with nobody waiting goes back to Idle", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(done(errChild, true), reply(errChild, 1)).
				then(Status{Phase: Idle, Failures: 1, LastErr: errChild, LastAt: t0}),
			do(req(2), aStart),
		}},
		{name: "a failure that does not count", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(done(errChild, true), reply(errChild, 1)),
			do(req(2), aStart),
			do(done(errOther, false), reply(errOther, 2)).
				then(Status{Phase: Idle, Failures: 1, LastErr: errOther, LastAt: t0}),
		}},
		{name: "forwarding after success", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(async(3)),
			do(req(4)),
			do(done(nil, false), reply(nil, 1), forward(2, 3, 4)).
				then(Status{Phase: Exited, LastAt: t0, Upgraded: true}),
			do(req(5), reply(control.ErrUpgraded, 5)),
			do(async(6), reply(control.ErrUpgraded, 6)),
			do(exit()),
			do(settle(100), settled(100)),
		}},

		// The crash-loop back-off.
		{name: "back-off after N failures refuses the queued requests once", cfg: crashLoop, steps: []step{
			do(req(1), aStart),
			do(started()),
			do(at(1*time.Second, done(errChild, true)), reply(errChild, 1)).
				then(Status{Phase: Idle, Failures: 1, LastErr: errChild, LastAt: t0.Add(time.Second)}),
			do(at(2*time.Second, req(2)), aStart),
			do(started()),
			do(req(3)),
			do(async(4)),
			do(at(3*time.Second, done(errChild2, true)),
				reply(errChild2, 2), reply(backoff(13*time.Second, 2, errChild2), 3, 4)).
				then(Status{Phase: Idle, Failures: 2, Backoff: t0.Add(13 * time.Second), LastErr: errChild2, LastAt: t0.Add(3 * time.Second)}),
			do(at(12*time.Second, req(5)), reply(backoff(13*time.Second, 2, errChild2), 5)),
			do(settle(100), settled(100)),
		}},
		{name: "back-off expiring, then doubling", cfg: crashLoop, steps: []step{
			do(req(1), aStart),
			do(done(errChild, true), reply(errChild, 1)),
			do(req(2), aStart),
			do(done(errChild, true), reply(errChild, 2)).
				then(Status{Phase: Idle, Failures: 2, Backoff: t0.Add(10 * time.Second), LastErr: errChild, LastAt: t0}),
			do(at(10*time.Second-1, req(3)), reply(backoff(10*time.Second, 2, errChild), 3)),
			do(at(10*time.Second, req(4)), aStart),
			do(started()),
			do(at(11*time.Second, done(errChild2, true)), reply(errChild2, 4)).
				then(Status{Phase: Idle, Failures: 3, Backoff: t0.Add(31 * time.Second), LastErr: errChild2, LastAt: t0.Add(11 * time.Second)}),
			do(at(30*time.Second, req(5)), reply(backoff(31*time.Second, 3, errChild2), 5)),
			do(at(31*time.Second, req(6)), aStart),
		}},
		{name: "a failure that does not count leaves the back-off alone", cfg: crashLoop, steps: []step{
			do(req(1), aStart),
			do(done(errChild, true), reply(errChild, 1)),
			do(req(2), aStart),
			do(started()),
			do(req(3)),
			do(done(errOther, false), reply(errOther, 2), aStart).
				then(Status{Phase: Waiting, Failures: 1, LastErr: errOther, LastAt: t0}),
		}},
		{name: "a success resets failures and back-off", cfg: Config{CrashLoopAfter: 1, CrashLoopBackoff: 10 * time.Second}, steps: []step{
			do(req(1), aStart),
			do(done(errChild, true), reply(errChild, 1)).
				then(Status{Phase: Idle, Failures: 1, Backoff: t0.Add(10 * time.Second), LastErr: errChild, LastAt: t0}),
			do(at(10*time.Second, req(2)), aStart),
			do(started()),
			do(at(20*time.Second, done(nil, false)), reply(nil, 2)).
				then(Status{Phase: Exited, LastAt: t0.Add(20 * time.Second), Upgraded: true}),
		}},
		{name: "back-off disabled by a zero CrashLoopBackoff", cfg: Config{CrashLoopAfter: 1}, steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(done(errChild, true), reply(errChild, 1), aStart).
				then(Status{Phase: Waiting, Failures: 1, Backoff: t0, LastErr: errChild, LastAt: t0}),
		}},

		// Stop.
		{name: "Stop while Idle", steps: []step{
			do(exit()).then(Status{Phase: Exited}),
			do(req(1), reply(control.ErrStopped, 1)),
			do(async(2), reply(control.ErrStopped, 2)),
			do(giveUp(1)),
			do(settle(100), settled(100)),
			do(exit()).then(Status{Phase: Exited}),
		}},
		{name: "Stop while Waiting", steps: []step{
			do(req(1), aStart),
			do(req(2)),
			do(exit(), aCancel).then(Status{Phase: Exited}),
			do(req(3), reply(control.ErrStopped, 3)),
			do(exit()),
			do(done(control.ErrStopped, false), reply(control.ErrStopped, 1, 2)).
				then(Status{Phase: Exited}),
		}},
		{name: "Stop while Running", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(async(3)),
			do(exit(), aCancel),
			do(req(4), reply(control.ErrStopped, 4)),
			do(done(errKilled, false), reply(errKilled, 1), reply(control.ErrStopped, 2, 3)).
				then(Status{Phase: Exited}),
		}},
		{name: "Stop while Running, the attempt failing on its own", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(exit(), aCancel),
			do(done(errChild, true), reply(errChild, 1)).
				then(Status{Phase: Exited, Failures: 1, LastErr: errChild, LastAt: t0}),
		}},
		{name: "success racing Stop", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(exit(), aCancel),
			do(req(3), reply(control.ErrStopped, 3)),
			do(done(nil, false), reply(nil, 1), forward(2)).
				then(Status{Phase: Exited, LastAt: t0, Upgraded: true}),
			do(req(4), reply(control.ErrUpgraded, 4)),
		}},
		{name: "Stop after a success", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(done(nil, false), reply(nil, 1)),
			do(exit()).then(Status{Phase: Exited, LastAt: t0, Upgraded: true}),
		}},

		// Settle.
		{name: "Settle while Idle", steps: []step{
			do(settle(100), settled(100)).then(Status{Phase: Idle}),
		}},
		{name: "Settle while Waiting", steps: []step{
			do(req(1), aStart),
			do(settle(100)),
			do(settle(101)),
			do(done(errChild, true), reply(errChild, 1), settled(100, 101)),
		}},
		{name: "Settle while Running waits for the next attempt too", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(settle(100)),
			do(req(2)),
			do(done(errChild, true), reply(errChild, 1), aStart),
			do(settle(101)),
			do(started()),
			do(done(nil, false), reply(nil, 2), settled(100, 101)),
		}},
		{name: "Settle while Running, the next attempt refused", cfg: Config{CrashLoopAfter: 1, CrashLoopBackoff: time.Minute}, steps: []step{
			do(req(1), aStart),
			do(started()),
			do(settle(100)),
			do(req(2)),
			do(done(errChild, true), reply(errChild, 1), reply(backoff(time.Minute, 1, errChild), 2), settled(100)),
		}},
		{name: "Settle after Stop, the attempt winding down", steps: []step{
			do(req(1), aStart),
			do(exit(), aCancel),
			do(settle(100)),
			do(done(control.ErrStopped, false), reply(control.ErrStopped, 1), settled(100)),
			do(settle(101), settled(101)),
		}},

		// Requesters that give up.
		{name: "GiveUp in Waiting, not the last: no Cancel", steps: []step{
			do(req(1), aStart),
			do(req(2)),
			do(giveUp(1)).then(Status{Phase: Waiting}),
			do(started()),
			do(done(nil, false), reply(nil, 2)),
		}},
		{name: "GiveUp in Waiting, the last: Cancel", steps: []step{
			do(req(1), aStart),
			do(req(2)),
			do(giveUp(2)),
			do(giveUp(1), aCancel).then(Status{Phase: Running}),
			do(giveUp(1)),
			do(req(3)), // waits for the next attempt
			do(done(errKilled, false), aStart).then(Status{Phase: Waiting}),
			do(started()),
			do(done(nil, false), reply(nil, 3)),
		}},
		{name: "GiveUp cancels, nobody else comes", steps: []step{
			do(req(1), aStart),
			do(settle(100)),
			do(at(time.Second, giveUp(1)), aCancel),
			do(at(2*time.Second, done(errKilled, false)), settled(100)).
				then(Status{Phase: Idle}),
			do(req(2), aStart),
		}},
		{name: "GiveUp cancels, and the attempt failed on its own meanwhile", steps: []step{
			do(req(1), aStart),
			do(giveUp(1), aCancel),
			do(started()),
			do(done(errChild, true)).then(Status{Phase: Idle, Failures: 1, LastErr: errChild, LastAt: t0}),
		}},
		{name: "GiveUp cancels, but the attempt succeeds just then", steps: []step{
			do(req(1), aStart),
			do(giveUp(1), aCancel),
			do(started()),
			do(req(2)),
			do(done(nil, false), forward(2)).then(Status{Phase: Exited, LastAt: t0, Upgraded: true}),
		}},
		{name: "GiveUp then Stop: one Cancel", steps: []step{
			do(req(1), aStart),
			do(giveUp(1), aCancel),
			do(req(2)),
			do(exit()),
			do(done(errKilled, false), reply(control.ErrStopped, 2)),
		}},
		{name: "GiveUp in Running: no Reply, still carried out", steps: []step{
			do(req(1), aStart),
			do(req(2)),
			do(started()),
			do(giveUp(1)),
			do(done(nil, false), reply(nil, 2)),
		}},
		{name: "GiveUp in Running, all of them: no Cancel", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(giveUp(1)).then(Status{Phase: Running}),
			do(done(nil, false)).then(Status{Phase: Exited, LastAt: t0, Upgraded: true}),
		}},
		{name: "GiveUp in next: never carried out", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(giveUp(2)),
			do(done(errChild, true), reply(errChild, 1)).then(Status{Phase: Idle, Failures: 1, LastErr: errChild, LastAt: t0}),
		}},
		{name: "GiveUp in next, the others still start", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(req(3)),
			do(giveUp(2)),
			do(done(errChild, true), reply(errChild, 1), aStart),
			do(started()),
			do(done(nil, false), reply(nil, 3)),
		}},
		{name: "GiveUp in next: not forwarded", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(req(3)),
			do(giveUp(2)),
			do(done(nil, false), reply(nil, 1), forward(3)),
		}},
		{name: "GiveUp in next, not refused by the back-off either", cfg: Config{CrashLoopAfter: 1, CrashLoopBackoff: time.Minute}, steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(giveUp(2)),
			do(done(errChild, true), reply(errChild, 1)),
		}},
		{name: "GiveUp after Stop", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(req(2)),
			do(req(3)),
			do(exit(), aCancel),
			do(giveUp(2)),
			do(giveUp(1)),
			do(done(errKilled, false), reply(control.ErrStopped, 3)),
		}},
		{name: "GiveUp of an answered or unknown request", steps: []step{
			do(giveUp(7)),
			do(req(1), aStart),
			do(done(errChild, true), reply(errChild, 1)),
			do(giveUp(1)),
			do(req(2), aStart),
			do(giveUp(1)),
			do(giveUp(99)).then(Status{Phase: Waiting, Failures: 1, LastErr: errChild, LastAt: t0}),
		}},
		{name: "Async is never cancelled", steps: []step{
			do(async(1), aStart),
			do(req(2)),
			do(giveUp(2)),
			do(giveUp(1)),
			do(started()),
			do(done(errChild, true), reply(errChild, 1)),
		}},
		{name: "Async in next is never given up", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(async(2)),
			do(giveUp(2)),
			do(done(errChild, true), reply(errChild, 1), aStart),
			do(done(errChild, true), reply(errChild, 2)),
		}},

		// Hurry.
		{name: "Hurry with the request that starts the attempt, once", steps: []step{
			do(hurried(1), aStart, aHurry),
			do(hurried(2)),
			do(req(3)),
		}},
		{name: "Hurry from a coalescing request, once", steps: []step{
			do(req(1), aStart),
			do(hurried(2), aHurry),
			do(hurried(3)),
		}},
		{name: "Hurry while Running is for the next attempt", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(hurried(2)),
			do(hurried(3)),
			do(done(errChild, true), reply(errChild, 1), aStart, aHurry),
			do(hurried(4)),
		}},
		{name: "Hurry of a request that gave up in next is not asked for", steps: []step{
			do(req(1), aStart),
			do(started()),
			do(hurried(2)),
			do(req(3)),
			do(giveUp(2)),
			do(done(errChild, true), reply(errChild, 1), aStart),
		}},
		{name: "Hurry after a Cancel is for the next attempt", steps: []step{
			do(hurried(1), aStart, aHurry),
			do(giveUp(1), aCancel),
			do(hurried(2)),
			do(done(errKilled, false), aStart, aHurry),
		}},
	}
	for _, sc := range scripts {
		t.Run(sc.name, func(t *testing.T) { run(t, sc) })
	}
}

// TestBurstStartsAtMostTwoAttempts feeds 50 requests while the first
// attempt starts its new process (after request s) and ends (after request
// d), the attempt after it, if any, still waiting for the previous
// generation when the burst ends. Whatever s, d and the outcome, there are
// at most two Starts and every request hears exactly once. s = 0 stands
// for an attempt that starts its new process only after the burst.
func TestBurstStartsAtMostTwoAttempts(t *testing.T) {
	const n = 50
	for _, err := range []error{nil, errChild, errOther} {
		for s := 0; s <= n; s++ {
			for d := s; d <= n; d++ {
				if s == 0 && d > 0 {
					continue // Done needs Started first
				}
				m := New(Config{CrashLoopAfter: 1})
				now := t0
				var acts []Action
				for id := ID(1); id <= n; id++ {
					acts = append(acts, m.Request(now, Request{ID: id, Async: id%7 == 0})...)
					if int(id) == s {
						acts = append(acts, m.Started(now)...)
					}
					if int(id) == d {
						acts = append(acts, m.Done(now, err, err == errChild)...)
					}
					now = now.Add(10 * time.Millisecond)
				}
				// Let whatever attempt exists now succeed.
				for ph := m.Status().Phase; ph == Waiting || ph == Running; ph = m.Status().Phase {
					if ph == Waiting {
						acts = append(acts, m.Started(now)...)
					}
					acts = append(acts, m.Done(now, nil, false)...)
				}
				starts, heard := 0, map[ID]int{}
				for _, a := range acts {
					switch a.Kind {
					case Start:
						starts++
					case Reply, Forward:
						for _, id := range a.IDs {
							heard[id]++
						}
					}
				}
				if starts > 2 {
					t.Errorf("err %v, Started after %d, Done after %d: %d Starts", err, s, d, starts)
				}
				for id := ID(1); id <= n; id++ {
					if heard[id] != 1 {
						t.Errorf("err %v, Started after %d, Done after %d: request %d heard %d times", err, s, d, id, heard[id])
					}
				}
			}
		}
	}
}

func TestBackoffDoublesAtMost16Times(t *testing.T) {
	m := New(Config{CrashLoopAfter: 2, CrashLoopBackoff: time.Second})
	now := t0
	want := []time.Duration{0, 1, 2, 4, 8, 16, 16, 16}
	for i, w := range want {
		if acts := m.Request(now, Request{ID: ID(i)}); !sameActions(acts, []Action{aStart}) {
			t.Fatalf("failure %d: Request: %s", i+1, fmtActions(acts))
		}
		m.Done(now, errChild, true)
		st := m.Status()
		if st.Failures != i+1 {
			t.Fatalf("failure %d: Failures = %d", i+1, st.Failures)
		}
		if w == 0 {
			if !st.Backoff.IsZero() {
				t.Fatalf("failure %d: Backoff = %v, want none", i+1, st.Backoff)
			}
			continue
		}
		if got := st.Backoff.Sub(now); got != w*time.Second {
			t.Fatalf("failure %d: back-off %v, want %v", i+1, got, w*time.Second)
		}
		now = st.Backoff
	}
}

func TestBackoffPeriodSaturates(t *testing.T) {
	for _, tc := range []struct {
		first time.Duration
		extra int
		want  time.Duration
	}{
		{time.Second, 0, time.Second},
		{time.Second, 3, 8 * time.Second},
		{time.Second, 100, 16 * time.Second},
		{1 << 60, 4, 1<<63 - 1},
		{-time.Second, 2, 0},
	} {
		if got := backoffPeriod(tc.first, tc.extra); got != tc.want {
			t.Errorf("backoffPeriod(%v, %d) = %v, want %v", tc.first, tc.extra, got, tc.want)
		}
	}
}

// TestActionsDoNotAlias checks that the owner may keep and change an
// action's IDs without changing the machine.
func TestActionsDoNotAlias(t *testing.T) {
	m := New(Config{})
	m.Request(t0, Request{ID: 1})
	m.Started(t0)
	m.Request(t0, Request{ID: 2})
	m.Request(t0, Request{ID: 3})
	acts := m.Done(t0, errOther, false) // Reply(1), Start for 2 and 3
	for _, a := range acts {
		for i := range a.IDs {
			a.IDs[i] = 99
		}
	}
	if got := m.Done(t0, errOther, false); !sameActions(got, []Action{reply(errOther, 2, 3)}) {
		t.Fatalf("Done: %s", fmtActions(got))
	}
}

func TestMisusePanics(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(m *Machine)
		want string
	}{
		{"Started with no attempt", func(m *Machine) { m.Started(t0) }, "queue: Started with no attempt"},
		{"Started twice", func(m *Machine) {
			m.Request(t0, Request{ID: 1})
			m.Started(t0)
			m.Started(t0)
		}, "queue: Started twice for one attempt"},
		{"Done with no attempt", func(m *Machine) { m.Done(t0, nil, false) }, "queue: Done with no attempt"},
		{"Done twice", func(m *Machine) {
			m.Request(t0, Request{ID: 1})
			m.Done(t0, errOther, false)
			m.Done(t0, errOther, false)
		}, "queue: Done with no attempt"},
		{"duplicate ID in the batch", func(m *Machine) {
			m.Request(t0, Request{ID: 1})
			m.Request(t0, Request{ID: 1})
		}, "queue: request ID already waiting"},
		{"duplicate ID in next", func(m *Machine) {
			m.Request(t0, Request{ID: 1})
			m.Started(t0)
			m.Request(t0, Request{ID: 2})
			m.Request(t0, Request{ID: 2})
		}, "queue: request ID already waiting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != tc.want {
					t.Fatalf("panic %v, want %q", r, tc.want)
				}
			}()
			tc.do(New(Config{}))
		})
	}
}

func TestZeroMachine(t *testing.T) {
	var m Machine
	if got := m.Request(t0, Request{ID: 1}); !sameActions(got, []Action{aStart}) {
		t.Fatalf("Request: %s", fmtActions(got))
	}
	if got := m.Done(t0, errChild, true); !sameActions(got, []Action{reply(errChild, 1)}) {
		t.Fatalf("Done: %s", fmtActions(got))
	}
	if got := m.Request(t0, Request{ID: 2}); !sameActions(got, []Action{aStart}) {
		t.Fatalf("Request after a failure (no back-off): %s", fmtActions(got))
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Idle.String(), "Idle"},
		{Waiting.String(), "Waiting"},
		{Running.String(), "Running"},
		{Exited.String(), "Exited"},
		{Phase(7).String(), "Phase(7)"},
		{Phase(-1).String(), "Phase(-1)"},
		{Start.String(), "Start"},
		{Hurry.String(), "Hurry"},
		{Cancel.String(), "Cancel"},
		{Reply.String(), "Reply"},
		{Forward.String(), "Forward"},
		{Settled.String(), "Settled"},
		{ActionKind(0).String(), "ActionKind(0)"},
		{ActionKind(9).String(), "ActionKind(9)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// TestTakenBack: after a success, a take-back makes the machine Idle and
// not Upgraded again, counts as a failure (and toward the crash loop),
// and the next request starts an attempt; without a success it panics.
func TestTakenBack(t *testing.T) {
	m := New(Config{CrashLoopAfter: 2, CrashLoopBackoff: time.Second})
	up := func() {
		if acts := m.Request(t0, Request{ID: 1}); len(acts) != 1 || acts[0].Kind != Start {
			t.Fatalf("Request: %v, want Start", acts)
		}
		m.Started(t0)
		m.Done(t0, nil, false)
	}
	up()
	if st := m.Status(); st.Phase != Exited || !st.Upgraded {
		t.Fatalf("after a success: %+v", st)
	}
	why := errors.New("generation 2 was killed by SIGKILL")
	if acts := m.TakenBack(t0.Add(time.Second), why); acts != nil {
		t.Fatalf("TakenBack: %v, want no action", acts)
	}
	st := m.Status()
	if st.Phase != Idle || st.Upgraded || st.Failures != 1 || st.LastErr != why || !st.LastAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("after TakenBack: %+v", st)
	}
	// A success resets the failures; two take-backs in a row start the
	// back-off, as two failed upgrades would.
	up()
	m.TakenBack(t0, why)
	if st := m.Status(); st.Failures != 1 || !st.Backoff.IsZero() {
		t.Fatalf("after success and take-back: %+v", st)
	}
	up() // failures reset to 0
	m.TakenBack(t0, why)
	m.Request(t0, Request{ID: 2})
	m.Started(t0)
	m.Done(t0, errChild, true)
	if st := m.Status(); st.Failures != 2 || st.Backoff.IsZero() {
		t.Fatalf("a take-back and a failed upgrade in a row: %+v, want the back-off", st)
	}
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(fmt.Sprint(r), "queue: ") {
			t.Fatalf("TakenBack without a success: recovered %v, want a queue: panic", r)
		}
	}()
	New(Config{}).TakenBack(t0, why)
}

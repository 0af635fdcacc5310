package queue

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/control"
)

// The property test and the fuzzer drive a Machine the way its owner
// would, with random events, and check every step twice:
//
//   - against invariants that follow from the actions alone (the owner's
//     view): every request that does not give up hears exactly once, none
//     hears after giving up, never two attempts at once, Exited is final;
//   - against a reference model: a second, independent formulation of the
//     rules, which tracks each request on its own (where it waits) rather
//     than batches, and predicts each step's outcome per request.

// chooser supplies the driver's random choices.
type chooser interface {
	// intn returns a choice in [0, n).
	intn(n int) int
	// more says whether to go on with another event.
	more() bool
}

type randChooser struct {
	r    *rand.Rand
	left int
}

func (c *randChooser) intn(n int) int { return c.r.IntN(n) }
func (c *randChooser) more() bool     { c.left--; return c.left >= 0 }

// byteChooser turns fuzz input into choices, one byte each; it ends the
// sequence when the bytes run out.
type byteChooser struct{ b []byte }

func (c *byteChooser) intn(n int) int {
	if len(c.b) == 0 {
		return 0
	}
	v := int(c.b[0]) % n
	c.b = c.b[1:]
	return v
}
func (c *byteChooser) more() bool { return len(c.b) > 0 }

// Configs the driver picks from: none, immediate, short and long back-off.
var driverConfigs = []Config{
	{},
	{CrashLoopAfter: 1},
	{CrashLoopAfter: 1, CrashLoopBackoff: 3 * time.Second},
	{CrashLoopAfter: 2, CrashLoopBackoff: 10 * time.Second},
	{CrashLoopAfter: 3, CrashLoopBackoff: time.Second},
}

// drive runs one random event sequence and returns the first violation,
// with the events that led to it.
func drive(c chooser) error {
	d := newDriver(driverConfigs[c.intn(len(driverConfigs))])
	for c.more() {
		if err := d.random(c); err != nil {
			return d.fail(err)
		}
	}
	// Wind down: Stop, and let an attempt that is left end.
	if err := d.feed("Exit", func(m *Machine) []Action { return m.Exit(d.now) }, func(o *model) { o.exit() }); err != nil {
		return d.fail(err)
	}
	if d.live {
		if err := d.done(errKilled, false); err != nil {
			return d.fail(err)
		}
	}
	if err := d.final(); err != nil {
		return d.fail(err)
	}
	return nil
}

// driver plays the owner: it feeds events, carries out actions by
// bookkeeping, and checks.
type driver struct {
	m   *Machine
	o   *model
	now time.Time
	log []string

	nextID, nextSettle ID
	// The owner's view, from the actions alone.
	live, liveStarted, liveCancelled, liveHurried bool
	heard                                         map[ID]int
	async                                         map[ID]bool
	gaveUp                                        map[ID]bool // gave up while unanswered (so must never hear)
	settles                                       map[ID]int  // Settle calls: how often Settled
	exited                                        bool
}

func newDriver(cfg Config) *driver {
	return &driver{
		m: New(cfg), o: newModel(cfg), now: t0,
		nextID: 1, nextSettle: 1_000_000,
		heard: map[ID]int{}, async: map[ID]bool{}, gaveUp: map[ID]bool{}, settles: map[ID]int{},
		log: []string{fmt.Sprintf("config %+v", cfg)},
	}
}

func (d *driver) fail(err error) error {
	return fmt.Errorf("%w\nevents:\n  %s", err, strings.Join(d.log, "\n  "))
}

// random feeds one random event that the owner could feed now.
func (d *driver) random(c chooser) error {
	switch k := c.intn(100); {
	case k < 30:
		r := Request{ID: d.nextID, Async: c.intn(5) == 0, Hurry: c.intn(4) == 0}
		d.nextID++
		d.async[r.ID] = r.Async
		return d.feed(fmt.Sprintf("Request(%+v)", r), func(m *Machine) []Action { return m.Request(d.now, r) }, func(o *model) { o.request(d.now, r) })
	case k < 42:
		if !d.live || d.liveStarted {
			return nil
		}
		d.liveStarted = true
		return d.feed("Started", func(m *Machine) []Action { return m.Started(d.now) }, func(o *model) { o.start() })
	case k < 57:
		if !d.live {
			return nil
		}
		// What the owner could report: a cancelled attempt mostly reports
		// its cancellation, but may have failed or succeeded first; only an
		// attempt that started the new process can succeed.
		var outcomes []func() error
		if d.liveStarted {
			outcomes = append(outcomes, func() error { return d.done(nil, false) })
		}
		outcomes = append(outcomes,
			func() error { return d.done(errChild, true) },
			func() error { return d.done(errOther, false) })
		if d.liveCancelled {
			outcomes = append(outcomes, func() error { return d.done(errKilled, false) }, func() error { return d.done(errKilled, false) })
		}
		return outcomes[c.intn(len(outcomes))]()
	case k < 72:
		// Mostly one of the latest requests, which may still wait; else
		// anyone, answered or not, and now and then an ID never used.
		id := ID(c.intn(int(d.nextID) + 1))
		if c.intn(2) == 0 {
			id = max(d.nextID-1-ID(c.intn(4)), 0)
		}
		if !d.async[id] && d.heard[id] == 0 && id > 0 && id < d.nextID {
			d.gaveUp[id] = true
		}
		return d.feed(fmt.Sprintf("GiveUp(%d)", id), func(m *Machine) []Action { return m.GiveUp(d.now, id) }, func(o *model) { o.giveUp(id) })
	case k < 74:
		return d.feed("Exit", func(m *Machine) []Action { return m.Exit(d.now) }, func(o *model) { o.exit() })
	case k < 80:
		id := d.nextSettle
		d.nextSettle++
		d.settles[id] = 0
		return d.feed(fmt.Sprintf("Settle(%d)", id), func(m *Machine) []Action { return m.Settle(d.now, id) }, func(o *model) { o.settle(id) })
	default:
		d.now = d.now.Add(time.Duration(c.intn(12)) * time.Second / 2)
		d.log = append(d.log, fmt.Sprintf("clock +%v", d.now.Sub(t0)))
		return nil
	}
}

func (d *driver) done(err error, counts bool) error {
	d.live = false // before the actions: a Start among them is a new attempt
	return d.feed(fmt.Sprintf("Done(%v, %v)", err, counts), func(m *Machine) []Action { return m.Done(d.now, err, counts) }, func(o *model) { o.done(d.now, err, counts) })
}

// feed gives one event to the machine and to the model, and checks the
// actions and the status.
func (d *driver) feed(name string, machine func(*Machine) []Action, model func(*model)) error {
	wasExited := d.m.Status().Phase == Exited
	got := machine(d.m)
	d.log = append(d.log, fmt.Sprintf("%s -> %s", name, fmtActions(got)))
	d.o.expect = newOutcome()
	model(d.o)
	if err := d.carryOut(got); err != nil {
		return err
	}
	if err := d.o.expect.matches(got); err != nil {
		return fmt.Errorf("%s: differs from the model: %w", name, err)
	}
	st := d.m.Status()
	if want := d.o.status(); !sameStatus(st, want) {
		return fmt.Errorf("%s: status %+v, the model says %+v", name, st, want)
	}
	if wasExited && st.Phase != Exited {
		return fmt.Errorf("%s: Exited is final, now %v", name, st.Phase)
	}
	if st.Phase == Exited {
		d.exited = true
	}
	if st.Phase == Idle && d.live || (st.Phase == Waiting || st.Phase == Running) && !d.live {
		return fmt.Errorf("%s: phase %v, but an attempt exists: %v", name, st.Phase, d.live)
	}
	return nil
}

// carryOut applies the actions as the owner would, checking the
// invariants that need nothing but the actions.
func (d *driver) carryOut(acts []Action) error {
	for i, a := range acts {
		switch a.Kind {
		case Start, Hurry, Cancel:
			if a.IDs != nil || a.Err != nil {
				return fmt.Errorf("action %d: %v with IDs or Err", i, a.Kind)
			}
		case Reply, Forward, Settled:
			if len(a.IDs) == 0 {
				return fmt.Errorf("action %d: %v for nobody", i, a.Kind)
			}
			if !slices.IsSorted(a.IDs) || len(slices.Compact(slices.Clone(a.IDs))) != len(a.IDs) {
				return fmt.Errorf("action %d: %v IDs %v not in arrival order", i, a.Kind, a.IDs)
			}
			if a.Kind != Reply && a.Err != nil {
				return fmt.Errorf("action %d: %v with Err", i, a.Kind)
			}
		default:
			return fmt.Errorf("action %d: unknown kind %v", i, a.Kind)
		}
		switch a.Kind {
		case Start:
			if d.live {
				return fmt.Errorf("action %d: Start while an attempt exists", i)
			}
			if d.exited {
				return fmt.Errorf("action %d: Start after Exited", i)
			}
			d.live, d.liveStarted, d.liveCancelled, d.liveHurried = true, false, false, false
		case Hurry:
			if !d.live || d.liveHurried {
				return fmt.Errorf("action %d: Hurry with no attempt, or twice", i)
			}
			d.liveHurried = true
		case Cancel:
			if !d.live || d.liveCancelled {
				return fmt.Errorf("action %d: Cancel with no attempt, or twice", i)
			}
			d.liveCancelled = true
		case Reply, Forward:
			for _, id := range a.IDs {
				if id == 0 || id >= d.nextID {
					return fmt.Errorf("action %d: %v to request %d, never made", i, a.Kind, id)
				}
				if d.gaveUp[id] {
					return fmt.Errorf("action %d: %v to request %d, which gave up", i, a.Kind, id)
				}
				if d.heard[id]++; d.heard[id] > 1 {
					return fmt.Errorf("action %d: request %d heard twice", i, id)
				}
			}
		case Settled:
			for _, id := range a.IDs {
				n, ok := d.settles[id]
				if !ok || n > 0 {
					return fmt.Errorf("action %d: Settled %d, not waiting", i, id)
				}
				d.settles[id] = 1
			}
			if d.live {
				return fmt.Errorf("action %d: Settled while an attempt exists", i)
			}
		}
	}
	return nil
}

// final checks what must hold once everything has ended.
func (d *driver) final() error {
	if d.live {
		return errors.New("an attempt still exists after Exit and Done")
	}
	for id := ID(1); id < d.nextID; id++ {
		if !d.gaveUp[id] && d.heard[id] != 1 {
			return fmt.Errorf("request %d heard %d times", id, d.heard[id])
		}
	}
	for id, n := range d.settles {
		if n != 1 {
			return fmt.Errorf("Settle %d never Settled", id)
		}
	}
	return nil
}

// model is the reference: the same rules, said per request.
type model struct {
	cfg  Config
	reqs map[ID]*modelReq
	// order is every request in arrival order.
	order []*modelReq

	attempt                     bool // an attempt exists
	started, cancelled, hurried bool
	exited, upgraded            bool
	failures                    int
	backoff                     time.Time
	lastErr                     error
	lastAt                      time.Time
	settlers                    []ID

	expect *outcome
}

type modelReq struct {
	r     Request
	where where
}

type where int

const (
	answered where = iota // or given up
	inAttempt
	inNext
)

func newModel(cfg Config) *model { return &model{cfg: cfg, reqs: map[ID]*modelReq{}} }

func (o *model) each(w where, f func(*modelReq)) {
	for _, q := range o.order {
		if q.where == w {
			f(q)
		}
	}
}

func (o *model) request(now time.Time, r Request) {
	q := &modelReq{r: r}
	o.reqs[r.ID] = q
	o.order = append(o.order, q)
	switch {
	case o.exited && o.upgraded:
		o.expect.reply(r.ID, control.ErrUpgraded)
	case o.exited:
		o.expect.reply(r.ID, control.ErrStopped)
	case !o.attempt && now.Before(o.backoff):
		o.expect.reply(r.ID, &control.BackoffError{Until: o.backoff, Failures: o.failures, Last: o.lastErr})
	case !o.attempt:
		q.where = inNext
		o.startNext()
	case !o.started && !o.cancelled:
		q.where = inAttempt
		if r.Hurry && !o.hurried {
			o.hurried = true
			o.expect.hurries++
		}
	default:
		q.where = inNext
	}
}

// startNext starts an attempt for everyone in next.
func (o *model) startNext() {
	o.attempt, o.started, o.cancelled, o.hurried = true, false, false, false
	o.expect.starts++
	o.each(inNext, func(q *modelReq) {
		q.where = inAttempt
		if q.r.Hurry && !o.hurried {
			o.hurried = true
			o.expect.hurries++
		}
	})
}

func (o *model) start() { o.started = true }

func (o *model) done(now time.Time, err error, counts bool) {
	o.attempt = false
	o.each(inAttempt, func(q *modelReq) {
		q.where = answered
		o.expect.reply(q.r.ID, err)
	})
	if counts {
		o.failures++
		if o.cfg.CrashLoopAfter > 0 && o.failures >= o.cfg.CrashLoopAfter {
			period := max(o.cfg.CrashLoopBackoff, 0)
			for i := o.cfg.CrashLoopAfter; i < o.failures && i < o.cfg.CrashLoopAfter+4; i++ {
				period *= 2
			}
			o.backoff = now.Add(period)
		}
	}
	if !(o.cancelled && err != nil && !counts) {
		o.lastErr, o.lastAt = err, now
	}
	waiting := 0
	o.each(inNext, func(*modelReq) { waiting++ })
	switch {
	case err == nil:
		o.exited, o.upgraded, o.failures, o.backoff = true, true, 0, time.Time{}
		o.each(inNext, func(q *modelReq) {
			q.where = answered
			o.expect.forward(q.r.ID)
		})
	case waiting == 0:
	case o.exited || now.Before(o.backoff):
		e := control.ErrStopped
		if !o.exited {
			e = &control.BackoffError{Until: o.backoff, Failures: o.failures, Last: o.lastErr}
		}
		o.each(inNext, func(q *modelReq) {
			q.where = answered
			o.expect.reply(q.r.ID, e)
		})
	default:
		o.startNext()
	}
	if !o.attempt {
		o.expect.settled = append(o.expect.settled, o.settlers...)
		o.settlers = nil
	}
}

func (o *model) giveUp(id ID) {
	q := o.reqs[id]
	if q == nil || q.r.Async || q.where == answered {
		return
	}
	fromAttempt := q.where == inAttempt
	q.where = answered
	if !fromAttempt || o.started || o.cancelled {
		return
	}
	left := 0
	o.each(inAttempt, func(*modelReq) { left++ })
	if left == 0 {
		o.cancelled = true
		o.expect.cancels++
	}
}

func (o *model) exit() {
	if o.exited {
		return
	}
	o.exited = true
	if o.attempt && !o.cancelled {
		o.cancelled = true
		o.expect.cancels++
	}
}

func (o *model) settle(id ID) {
	if o.attempt {
		o.settlers = append(o.settlers, id)
	} else {
		o.expect.settled = append(o.expect.settled, id)
	}
}

func (o *model) status() Status {
	s := Status{Failures: o.failures, Backoff: o.backoff, LastErr: o.lastErr, LastAt: o.lastAt, Upgraded: o.upgraded}
	switch {
	case o.exited:
		s.Phase = Exited
	case !o.attempt:
		s.Phase = Idle
	case !o.started && !o.cancelled:
		s.Phase = Waiting
	default:
		s.Phase = Running
	}
	return s
}

// outcome is what the model expects of one step, order aside (the table
// tests check the order).
type outcome struct {
	starts, hurries, cancels int
	replies                  map[ID]error
	forwards                 []ID
	settled                  []ID
}

func newOutcome() *outcome { return &outcome{replies: map[ID]error{}} }

func (e *outcome) reply(id ID, err error) { e.replies[id] = err }
func (e *outcome) forward(id ID)          { e.forwards = append(e.forwards, id) }

func (e *outcome) matches(acts []Action) error {
	got := newOutcome()
	for _, a := range acts {
		switch a.Kind {
		case Start:
			got.starts++
		case Hurry:
			got.hurries++
		case Cancel:
			got.cancels++
		case Reply:
			for _, id := range a.IDs {
				got.replies[id] = a.Err
			}
		case Forward:
			got.forwards = append(got.forwards, a.IDs...)
		case Settled:
			got.settled = append(got.settled, a.IDs...)
		}
	}
	if got.starts != e.starts || got.hurries != e.hurries || got.cancels != e.cancels {
		return fmt.Errorf("%d Start, %d Hurry, %d Cancel; want %d, %d, %d",
			got.starts, got.hurries, got.cancels, e.starts, e.hurries, e.cancels)
	}
	if len(got.replies) != len(e.replies) {
		return fmt.Errorf("replies %v, want %v", got.replies, e.replies)
	}
	for id, err := range e.replies {
		if g, ok := got.replies[id]; !ok || !sameErr(g, err) {
			return fmt.Errorf("reply to %d: %v, want %v", id, g, err)
		}
	}
	if !slices.Equal(got.forwards, e.forwards) {
		return fmt.Errorf("forwards %v, want %v", got.forwards, e.forwards)
	}
	if !slices.Equal(got.settled, e.settled) {
		return fmt.Errorf("settled %v, want %v", got.settled, e.settled)
	}
	return nil
}

// TestRandomSequences drives 10 000 seeded random event sequences of up to
// 80 events each.
func TestRandomSequences(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 1_000
	}
	for i := range n {
		c := &randChooser{r: rand.New(rand.NewPCG(2026_12_01, uint64(i)))}
		c.left = c.intn(80) + 1
		if err := drive(c); err != nil {
			t.Fatalf("sequence %d: %v", i, err)
		}
	}
}

// FuzzMachine drives the machine with events chosen by the fuzz input,
// one byte per choice, with the same checks as TestRandomSequences.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 50, 0, 30, 50, 0})
	// A burst, a start, a failure, a give-up, a Stop.
	f.Add([]byte{3, 1, 1, 1, 1, 1, 1, 35, 1, 1, 50, 2, 60, 1, 76, 1, 1})
	f.Add([]byte("an upgrade request queue, as a state machine"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := drive(&byteChooser{b: b}); err != nil {
			t.Fatal(err)
		}
	})
}

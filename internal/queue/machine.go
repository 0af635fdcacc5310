package queue

import (
	"math"
	"time"

	"github.com/hitlessgo/hitless/control"
)

// Machine is the upgrade request queue of one generation. Each method is
// one event: it changes the state and returns what the owner must do, in
// order (nil when nothing). The now passed in is the time of the event;
// only Request and Done use it today, the others take it so that every
// event is fed the same way.
//
// Misuse panics with a "queue: " message: Started or Done with no attempt,
// Started twice for one attempt, a request ID that is already waiting.
//
// A Machine is not safe for concurrent use: one goroutine owns it. The
// zero Machine is ready to use, with the zero [Config].
type Machine struct {
	cfg Config

	// cur is the attempt that exists; nil when none does.
	cur *attempt
	// next are the requests waiting for the attempt after cur, in the
	// order they arrived. Empty whenever cur is nil: a request that
	// arrives with no attempt starts one or is refused.
	next []Request
	// settlers are the Settle calls waiting for cur to end.
	settlers []ID

	exited   bool // Exit, or a success: final
	upgraded bool // an attempt succeeded
	failures int
	backoff  time.Time
	lastErr  error
	lastAt   time.Time
}

// attempt is one attempt to upgrade, from Start to Done.
type attempt struct {
	// batch are the requests it carries out, in the order they arrived,
	// minus those that gave up.
	batch     []Request
	started   bool // it has started the new process (Started)
	cancelled bool // Cancel was issued for it
	hurried   bool // Hurry was issued for it
}

// takes says whether a request arriving now coalesces into a: it has not
// started the new process, and it is not being cancelled.
func (a *attempt) takes() bool { return !a.started && !a.cancelled }

// New returns a Machine with the crash-loop policy cfg, in phase Idle.
func New(cfg Config) *Machine {
	return &Machine{cfg: cfg}
}

// Request is the event "r arrived". What happens depends on the phase:
//
//   - Exited: Reply with [control.ErrUpgraded] if an attempt succeeded,
//     else [control.ErrStopped].
//   - Idle, while now is before the back-off's end: Reply with a
//     *[control.BackoffError].
//   - Idle: Start an attempt that carries r out (and Hurry if r asks).
//   - Waiting: r coalesces into the attempt and will get its outcome
//     (Hurry if r asks and nobody has yet for this attempt).
//   - Running: r waits for the next attempt; nothing happens now.
//
// It panics if a request with r.ID is already waiting.
func (m *Machine) Request(now time.Time, r Request) []Action {
	if m.waiting(r.ID) {
		panic("queue: request ID already waiting")
	}
	switch {
	case m.exited:
		return []Action{{Kind: Reply, IDs: []ID{r.ID}, Err: m.exitErr()}}
	case m.cur == nil && now.Before(m.backoff):
		return []Action{{Kind: Reply, IDs: []ID{r.ID}, Err: m.backoffErr()}}
	case m.cur == nil:
		return m.start([]Request{r})
	case m.cur.takes():
		m.cur.batch = append(m.cur.batch, r)
		if r.Hurry {
			return m.hurry()
		}
		return nil
	default:
		m.next = append(m.next, r)
		return nil
	}
}

// Started is the event "the attempt has started the new process": from
// now on the attempt takes no more requests, since their senders may have
// installed a newer binary than the one just started. It returns nothing
// today.
//
// Started may come after Cancel or Exit (the attempt got that far before
// the owner could stop it). It panics if no attempt exists or this one has
// already started.
func (m *Machine) Started(now time.Time) []Action {
	switch {
	case m.cur == nil:
		panic("queue: Started with no attempt")
	case m.cur.started:
		panic("queue: Started twice for one attempt")
	}
	m.cur.started = true
	return nil
}

// Done is the event "the attempt has ended". A nil err means the new
// generation took over: this generation is then Exited and [Status.Upgraded],
// failures and back-off are reset, the requests the attempt carried out get
// Reply(nil), and those waiting for the next attempt are Forwarded, even
// after Exit (the upgrade succeeded just as Stop came, so this generation
// drains rather than stops).
//
// Otherwise the requests the attempt carried out get Reply(err). If counts
// is true (err is a *[control.ChildError]: the new generation itself
// failed), the failure counts toward the crash loop: after
// [Config.CrashLoopAfter] counted failures in a row, requests are refused
// until now + CrashLoopBackoff << min(failures-CrashLoopAfter, 4). The owner
// passes false for an attempt it cancelled; such a failure also leaves
// LastErr and LastAt unchanged. The requests waiting for the next attempt
// then get Reply([control.ErrStopped]) after Exit, a *[control.BackoffError] while
// backing off (each request is answered exactly once, not retried), or
// else become the batch of a new attempt (Start, Hurry if one of them
// asks).
//
// Settle calls that waited are Settled if no attempt exists any more. Done
// panics if no attempt exists.
func (m *Machine) Done(now time.Time, err error, counts bool) []Action {
	a := m.cur
	if a == nil {
		panic("queue: Done with no attempt")
	}
	m.cur = nil
	acts := appendIDs(nil, Reply, ids(a.batch), err)
	next := m.next
	m.next = nil

	if counts {
		m.failures++
		if m.cfg.CrashLoopAfter > 0 && m.failures >= m.cfg.CrashLoopAfter {
			m.backoff = now.Add(backoffPeriod(m.cfg.CrashLoopBackoff, m.failures-m.cfg.CrashLoopAfter))
		}
	}
	if err == nil || counts || !a.cancelled {
		m.lastErr, m.lastAt = err, now
	}
	switch {
	case err == nil:
		m.exited, m.upgraded = true, true
		m.failures, m.backoff = 0, time.Time{}
		acts = appendIDs(acts, Forward, ids(next), nil)
	case len(next) == 0:
	case m.exited:
		acts = appendIDs(acts, Reply, ids(next), m.exitErr())
	case now.Before(m.backoff):
		acts = appendIDs(acts, Reply, ids(next), m.backoffErr())
	default:
		acts = append(acts, m.start(next)...)
	}

	if m.cur == nil {
		acts = appendIDs(acts, Settled, m.settlers, nil)
		m.settlers = nil
	}
	return acts
}

// GiveUp is the event "the requester of id is gone" (it timed out or
// disconnected). The request is forgotten wherever it waits: it never gets
// a Reply or Forward, and if it was waiting for the next attempt it is
// never carried out. If it was the last request of a Waiting attempt, the
// attempt is Cancelled, since nobody wants it any more; requests arriving
// while it winds down wait for the next attempt. An attempt that has
// started the new process cannot be undone: it goes on, and the request
// just gets no Reply.
//
// GiveUp of an Async request is ignored (nobody waits for it, so nobody
// can give up), as is GiveUp of a request that has already been answered
// or was never seen: the owner may race a timeout against a Reply.
func (m *Machine) GiveUp(now time.Time, id ID) []Action {
	if m.cur == nil {
		return nil // nothing waits
	}
	if i := index(m.next, id); i >= 0 {
		if !m.next[i].Async {
			m.next = remove(m.next, i)
		}
		return nil
	}
	a := m.cur
	i := index(a.batch, id)
	if i < 0 || a.batch[i].Async {
		return nil
	}
	a.batch = remove(a.batch, i)
	if len(a.batch) > 0 || !a.takes() {
		return nil
	}
	a.cancelled = true
	return []Action{{Kind: Cancel}}
}

// Exit is the event "this generation must go" (Stop). The machine is
// Exited from now on: every later request is refused at once. An attempt
// that exists is Cancelled, and its Done decides the rest: nil means the
// upgrade succeeded just as Stop came (see Done), an error means the
// requests it carried out get that error and those waiting for the next
// attempt get [control.ErrStopped]. With no attempt nothing waits, so
// nothing more happens. Exit after Exit, or after a success, does nothing.
func (m *Machine) Exit(now time.Time) []Action {
	if m.exited {
		return nil
	}
	m.exited = true
	if m.cur == nil || m.cur.cancelled {
		return nil
	}
	m.cur.cancelled = true
	return []Action{{Kind: Cancel}}
}

// TakenBack is the event "the generation this one handed over to died
// while this one drained, and this one serves again" (take-back). It is
// valid only after a successful attempt and before Exit: the machine is
// Idle again, not Upgraded, and the death counts as a failed upgrade
// (err, at now) toward the crash loop, as a new generation that dies
// before it is ready does. It returns no action: nothing waits (requests
// were refused with ErrUpgraded meanwhile). It panics if no attempt
// succeeded or Exit came after.
func (m *Machine) TakenBack(now time.Time, err error) []Action {
	if !m.upgraded || m.cur != nil {
		panic("queue: TakenBack without a successful attempt")
	}
	m.exited, m.upgraded = false, false
	m.failures++
	if m.cfg.CrashLoopAfter > 0 && m.failures >= m.cfg.CrashLoopAfter {
		m.backoff = now.Add(backoffPeriod(m.cfg.CrashLoopBackoff, m.failures-m.cfg.CrashLoopAfter))
	}
	m.lastErr, m.lastAt = err, now
	return nil
}

// Settle is the event "the owner wants to know when no attempt is
// pending" (Run, before it decides whether this generation stops or
// drains). It returns Settled for id at once if no attempt exists, else
// Done does when the last attempt ends (a failed attempt may be followed
// by the next one). Settle never changes the state otherwise.
func (m *Machine) Settle(now time.Time, id ID) []Action {
	if m.cur == nil {
		return []Action{{Kind: Settled, IDs: []ID{id}}}
	}
	m.settlers = append(m.settlers, id)
	return nil
}

// Status returns the machine's bookkeeping. It does not change the state.
func (m *Machine) Status() Status {
	return Status{
		Phase:    m.phase(),
		Failures: m.failures,
		Backoff:  m.backoff,
		LastErr:  m.lastErr,
		LastAt:   m.lastAt,
		Upgraded: m.upgraded,
	}
}

func (m *Machine) phase() Phase {
	switch {
	case m.exited:
		return Exited
	case m.cur == nil:
		return Idle
	case m.cur.takes():
		return Waiting
	default:
		return Running
	}
}

// start makes batch the batch of a new attempt.
func (m *Machine) start(batch []Request) []Action {
	m.cur = &attempt{batch: batch}
	acts := []Action{{Kind: Start}}
	for _, r := range batch {
		if r.Hurry {
			return append(acts, m.hurry()...)
		}
	}
	return acts
}

// hurry asks for a hurry for the current attempt, once.
func (m *Machine) hurry() []Action {
	if m.cur.hurried {
		return nil
	}
	m.cur.hurried = true
	return []Action{{Kind: Hurry}}
}

// waiting says whether a request with id waits for an attempt.
func (m *Machine) waiting(id ID) bool {
	return m.cur != nil && (index(m.cur.batch, id) >= 0 || index(m.next, id) >= 0)
}

func (m *Machine) exitErr() error {
	if m.upgraded {
		return control.ErrUpgraded
	}
	return control.ErrStopped
}

func (m *Machine) backoffErr() error {
	return &control.BackoffError{Until: m.backoff, Failures: m.failures, Last: m.lastErr}
}

// backoffPeriod is first << min(extra, 4), saturating instead of
// overflowing for absurdly long periods; zero if first is not positive.
func backoffPeriod(first time.Duration, extra int) time.Duration {
	shift := min(extra, 4)
	if first <= 0 {
		return 0
	}
	if first > math.MaxInt64>>shift {
		return math.MaxInt64
	}
	return first << shift
}

// appendIDs appends an action of kind for ids, unless ids is empty.
func appendIDs(acts []Action, kind ActionKind, ids []ID, err error) []Action {
	if len(ids) == 0 {
		return acts
	}
	return append(acts, Action{Kind: kind, IDs: ids, Err: err})
}

// ids returns the IDs of rs in a new slice, so that an action never
// shares memory with the machine.
func ids(rs []Request) []ID {
	if len(rs) == 0 {
		return nil
	}
	out := make([]ID, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func index(rs []Request, id ID) int {
	for i, r := range rs {
		if r.ID == id {
			return i
		}
	}
	return -1
}

// remove deletes rs[i], keeping the order (Replies list requests in the
// order they arrived).
func remove(rs []Request, i int) []Request {
	return append(rs[:i], rs[i+1:]...)
}

package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/internal/handoff"
)

// historyStateName is the state (OfferState) under which each generation
// hands the history and the totals to the next. The name is the
// library's; an application that offers a state under it gets
// ErrNameTaken.
const historyStateName = "hitless.history"

// historyFormat is the version of what goes under historyStateName and in
// the drained report. A generation that reads a higher one starts a new
// history rather than misread it.
const historyFormat = 1

// maxErrorText bounds Upgrade.Error: the history goes to every later
// generation and into every status answer, and a line says enough.
const maxErrorText = 200

// historyState is what a generation hands to the next. Pending is the
// attempt in progress (the one that starts the new generation, which
// completes it when it is ready); History holds the finished ones,
// oldest first.
type historyState struct {
	Format  int               `json:"format"`
	Totals  control.Totals    `json:"totals"`
	History []control.Upgrade `json:"history,omitempty"`
	Pending *control.Upgrade  `json:"pending,omitempty"`
}

// drainedReport is what a generation sends the one it handed over to once
// its drain has ended (handoff.SendDrained).
type drainedReport struct {
	Format     int          `json:"format"`
	PID        int          `json:"pid"`
	Generation int          `json:"generation"`
	Report     reportOnWire `json:"report"`
	Err        string       `json:"err,omitempty"`
}

// reportOnWire is a drain.Report, which has no JSON form of its own.
type reportOnWire struct {
	Name        string         `json:"name,omitempty"`
	Open        int            `json:"open,omitempty"`
	Ended       int            `json:"ended,omitempty"`
	Cut         int            `json:"cut,omitempty"`
	DurationNS  int64          `json:"duration_ns,omitempty"`
	LastEndedNS int64          `json:"last_ended_ns,omitempty"`
	Datagrams   int            `json:"datagrams,omitempty"`
	Answers     int            `json:"answers,omitempty"`
	Servers     []reportOnWire `json:"servers,omitempty"`
}

func reportToWire(r drain.Report) reportOnWire {
	w := reportOnWire{Name: r.Name, Open: r.Open, Ended: r.Ended, Cut: r.Cut,
		DurationNS: int64(r.Duration), LastEndedNS: int64(r.LastEnded), Datagrams: r.Datagrams, Answers: r.Answers}
	for _, s := range r.Servers {
		w.Servers = append(w.Servers, reportToWire(s))
	}
	return w
}

func reportFromWire(w reportOnWire) drain.Report {
	r := drain.Report{Name: w.Name, Open: w.Open, Ended: w.Ended, Cut: w.Cut,
		Duration: time.Duration(w.DurationNS), LastEnded: time.Duration(w.LastEndedNS), Datagrams: w.Datagrams, Answers: w.Answers}
	for _, s := range w.Servers {
		r.Servers = append(r.Servers, reportFromWire(s))
	}
	return r
}

// historyConfig is what a history needs from its Upgrader; the unit tests
// fill it in themselves.
type historyConfig struct {
	keep       int // entries kept; zero or negative keeps none
	pid, gen   int
	version    string
	obs        Observer
	log        *slog.Logger
	stateLimit int    // what a snapshot may take (Options.StateLimit)
	prev       []byte // the state the previous generation handed over, if any
	// drained delivers the previous generation's drained report; nil
	// without a previous generation.
	drained <-chan json.RawMessage
	// send sends this generation's drained report to the one it handed
	// over to.
	send func(json.RawMessage) error
}

// history keeps the upgrades of this service, hands them and the totals
// to the next generation and tells the Observer. The lifecycle calls its
// hooks; each takes mu for what it changes and queues the event that
// reports it, and then tells the Observer outside mu (unlockAndTell).
type history struct {
	cfg historyConfig

	mu          sync.Mutex
	ring        []control.Upgrade // the finished upgrades, oldest first
	pending     *control.Upgrade  // the attempt in progress, if any
	totals      control.Totals
	requestedAt time.Time // when the first request since the last attempt's start arrived
	isReady     bool
	queue       []Event // events not yet delivered to the Observer
	delivering  bool    // a goroutine is delivering the queue

	closeOnce sync.Once
	done      chan struct{} // closed by close
	ended     chan struct{} // closed when the goroutine waiting for the drained report ends
}

// newHistory is called in New, once u.h is set, before the scheduler
// starts. It takes the history the previous generation handed over, if
// any, and offers this generation's to the next.
func newHistory(u *Upgrader) *history {
	cfg := historyConfig{keep: u.opts.HistoryLen, pid: os.Getpid(), gen: u.h.Generation(),
		version: u.opts.Version, obs: u.opts.Observer, log: u.log, stateLimit: u.opts.StateLimit,
		send: u.h.SendDrained}
	if u.h.HasParent() {
		b, err := u.State(historyStateName)
		switch {
		case err == nil:
			cfg.prev = b
		case errors.Is(err, ErrNotHandedOver):
			// A first generation, or a previous one that runs a release
			// without the history: it starts here.
		default:
			u.log.Warn("the history the previous generation handed over cannot be read; starting a new one", "err", err)
		}
		cfg.drained = u.h.Drained()
	}
	h := newHistoryWith(cfg)
	if err := u.OfferState(historyStateName, h.snapshot); err != nil {
		u.log.Warn("the history will not be handed over", "err", err)
	}
	return h
}

func newHistoryWith(cfg historyConfig) *history {
	if cfg.keep < 0 {
		cfg.keep = 0
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	h := &history{cfg: cfg, done: make(chan struct{}), ended: make(chan struct{})}
	if cfg.prev != nil {
		var st historyState
		switch err := json.Unmarshal(cfg.prev, &st); {
		case err != nil:
			cfg.log.Warn("the history the previous generation handed over is malformed; starting a new one", "err", err)
		case st.Format > historyFormat:
			cfg.log.Warn("the history the previous generation handed over is of a newer format; starting a new one", "format", st.Format)
		default:
			h.totals = st.Totals
			h.push(st.History...)
			if p := st.Pending; p != nil && p.To.Generation == cfg.gen {
				h.pending = p
			}
		}
	}
	if cfg.drained == nil {
		close(h.ended)
		return h
	}
	go h.waitDrained(cfg.drained)
	return h
}

// push appends finished upgrades to the ring, keeping the last cfg.keep.
func (h *history) push(us ...control.Upgrade) {
	h.ring = append(h.ring, us...)
	if over := len(h.ring) - h.cfg.keep; over > 0 {
		h.ring = slices.Delete(h.ring, 0, over)
	}
}

// self is this generation as the history names it.
func (h *history) self() control.Process {
	return control.Process{PID: h.cfg.pid, Generation: h.cfg.gen, Version: h.cfg.version}
}

// event returns an Event of kind with the common fields; nil when nobody
// observes, so that a nil Observer costs nothing but this test. Called
// with mu held.
func (h *history) event(kind EventKind, at time.Time) *Event {
	if h.cfg.obs == nil {
		return nil
	}
	return &Event{Kind: kind, At: at, Generation: h.cfg.gen, PID: h.cfg.pid, Totals: h.totals.Clone()}
}

// unlockAndTell queues ev, if any, releases mu and tells the Observer
// what is queued. One goroutine at a time delivers, in the order the
// events were queued (the order of the changes they report), and never
// under mu, so that the Observer may ask for the status: a goroutine that
// finds another delivering leaves its event to it. Holding a second lock
// across Observe instead, taken before mu is released, would deadlock with
// an Observer that calls Status while another hook holds mu.
func (h *history) unlockAndTell(ev *Event) {
	if ev != nil {
		h.queue = append(h.queue, *ev)
	}
	if h.delivering || len(h.queue) == 0 {
		h.mu.Unlock()
		return
	}
	h.delivering = true
	for len(h.queue) > 0 {
		evs := h.queue
		h.queue = nil
		h.mu.Unlock()
		for _, e := range evs {
			h.cfg.obs.Observe(e)
		}
		h.mu.Lock()
	}
	h.delivering = false
	h.mu.Unlock()
}

// requested: an upgrade was requested (a signal, a reload). The next
// attempt counts its time from the first request since the last attempt
// began.
func (h *history) requested(at time.Time) {
	h.mu.Lock()
	if h.requestedAt.IsZero() {
		h.requestedAt = at
	}
	h.mu.Unlock()
}

// ready: this generation became ready (took over if it has a parent). The
// upgrade that started it is complete.
func (h *history) ready() {
	now := time.Now()
	h.mu.Lock()
	h.isReady = true
	ev := h.event(EventReady, now)
	if p := h.pending; p != nil {
		h.pending = nil
		p.To = h.self()
		p.Finished, p.Took, p.Outcome = now, now.Sub(p.Started), control.OutcomeOK
		h.totals.Upgrades++
		h.push(*p)
		if ev != nil {
			ev.From, ev.To, ev.Took, ev.Totals = p.From, p.To, p.Took, h.totals.Clone()
		}
	}
	h.unlockAndTell(ev)
}

// attemptStarted: an upgrade to generation next begins (before the
// preflight check, and before the snapshot that hands the history over,
// which therefore carries it as pending).
func (h *history) attemptStarted(next int, kind control.UpgradeKind) {
	now := time.Now()
	h.mu.Lock()
	requested := h.requestedAt
	h.requestedAt = time.Time{}
	if requested.IsZero() || requested.After(now) {
		requested = now
	}
	h.pending = &control.Upgrade{Kind: kind, Requested: requested, Started: now,
		From: h.self(), To: control.Process{Generation: next}, Outcome: control.OutcomeInProgress}
	ev := h.event(EventUpgradeStarted, now)
	if ev != nil {
		ev.From, ev.To = h.pending.From, h.pending.To
	}
	h.unlockAndTell(ev)
}

// upgraded: the attempt that began at attemptStarted succeeded.
func (h *history) upgraded(child handoff.Child) {
	now := time.Now()
	h.mu.Lock()
	p := h.pending
	h.pending = nil
	if p == nil {
		h.mu.Unlock()
		return
	}
	p.To.PID, p.To.Version = child.PID, child.Build
	p.Finished, p.Took, p.Outcome = now, now.Sub(p.Started), control.OutcomeOK
	h.totals.Upgrades++
	h.push(*p)
	ev := h.event(EventUpgraded, now)
	if ev != nil {
		ev.From, ev.To, ev.Took = p.From, p.To, p.Took
	}
	h.unlockAndTell(ev)
}

// failed: the attempt failed (not cancelled); err is its error. An
// attempt given up at a stop, or by its requesters, is recorded as
// cancelled and is no failure; a failure that is not a *ChildError
// counts with its code as the reason.
func (h *history) failed(err error) {
	now := time.Now()
	var ce *ChildError
	isChild := errors.As(err, &ce)
	abandoned := !isChild && (errors.Is(err, ErrStopped) || errors.Is(err, ErrUpgraded) || errors.Is(err, context.Canceled))
	h.mu.Lock()
	p := h.pending
	h.pending = nil
	if p == nil {
		// Given up before it began: nothing was started.
		h.mu.Unlock()
		return
	}
	p.Finished, p.Took = now, now.Sub(p.Started)
	p.Error = shortText(summary(err), maxErrorText)
	if abandoned {
		p.Outcome = control.OutcomeCanceled
		h.push(*p)
		h.mu.Unlock()
		return
	}
	if isChild {
		p.To.PID = ce.PID
	}
	p.Outcome, p.Reason = control.OutcomeFailed, control.ErrorCode(err)
	h.totals.Failures++
	if h.totals.FailuresByReason == nil {
		h.totals.FailuresByReason = make(map[string]int64)
	}
	h.totals.FailuresByReason[p.Reason]++
	h.push(*p)
	ev := h.event(EventUpgradeFailed, now)
	if ev != nil {
		ev.From, ev.To, ev.Took, ev.Err, ev.Reason = p.From, p.To, p.Took, err, p.Reason
	}
	h.unlockAndTell(ev)
}

// reasonDied is Upgrade.Reason for a take-back: the new generation died
// after it took over.
const reasonDied = "died"

// takenBack: the generation this one had handed over to (pid) died
// before this one's drain ended, and this one serves again. why says how
// it ended ("was killed by SIGKILL").
func (h *history) takenBack(pid int, why string) {
	now := time.Now()
	h.mu.Lock()
	h.totals.TakeBacks++
	var to control.Process
	if e := h.last(func(e *control.Upgrade) bool { return e.From.PID == h.cfg.pid && e.To.PID == pid }); e != nil {
		e.Outcome, e.Reason = control.OutcomeTakenBack, reasonDied
		e.Error = shortText("the new generation "+why+" while this one drained", maxErrorText)
		to = e.To
	}
	if to.PID == 0 {
		to = control.Process{PID: pid, Generation: h.cfg.gen + 1}
	}
	ev := h.event(EventTakenBack, now)
	if ev != nil {
		ev.From, ev.To, ev.Reason = h.self(), to, reasonDied
	}
	h.unlockAndTell(ev)
}

// last returns the newest entry of the ring that match accepts, or nil.
// Called with mu held.
func (h *history) last(match func(*control.Upgrade) bool) *control.Upgrade {
	for i := len(h.ring) - 1; i >= 0; i-- {
		if match(&h.ring[i]) {
			return &h.ring[i]
		}
	}
	return nil
}

// fillDrain records r as the drain that followed e.
func fillDrain(e *control.Upgrade, at time.Time, r drain.Report) {
	e.DrainedAt, e.DrainTook, e.DrainEnded, e.DrainCut = at, r.Duration, r.Ended, r.Cut
}

// drained: this generation's servers drained, after an upgrade (upgraded
// true: the report then goes to the new generation too) or at a stop. A
// generation that never became ready drained nothing of the service's and
// counts nothing.
func (h *history) drained(r drain.Report, err error, upgraded bool) {
	now := time.Now()
	h.mu.Lock()
	if !h.isReady {
		h.mu.Unlock()
		return
	}
	// The drain belongs to the newest hand-over of this generation whose
	// drain has not been recorded yet, if any (not at a plain stop).
	if e := h.last(func(e *control.Upgrade) bool {
		return e.From.PID == h.cfg.pid && e.DrainedAt.IsZero() &&
			(e.Outcome == control.OutcomeOK || e.Outcome == control.OutcomeTakenBack)
	}); e != nil {
		fillDrain(e, now, r)
	}
	h.totals.DrainEnded += int64(r.Ended)
	h.totals.DrainCut += int64(r.Cut)
	ev := h.event(EventDrained, now)
	if ev != nil {
		ev.Drain, ev.Err = r, err
	}
	h.unlockAndTell(ev)
	if !upgraded {
		return
	}
	rep := drainedReport{Format: historyFormat, PID: h.cfg.pid, Generation: h.cfg.gen, Report: reportToWire(r)}
	if err != nil {
		rep.Err = shortText(err.Error(), maxErrorText)
	}
	b, merr := json.Marshal(rep)
	if merr == nil {
		merr = h.cfg.send(b)
	}
	if merr != nil {
		h.cfg.log.Warn("could not tell the new generation how the drain went", "err", merr)
	}
}

// waitDrained waits for the previous generation's drained report, until
// close.
func (h *history) waitDrained(c <-chan json.RawMessage) {
	defer close(h.ended)
	select {
	case b := <-c:
		h.previousDrained(b)
	case <-h.done:
	}
}

// previousDrained adds the previous generation's drain to the totals and
// to the upgrade that started this generation.
func (h *history) previousDrained(b json.RawMessage) {
	var rep drainedReport
	if err := json.Unmarshal(b, &rep); err != nil || rep.Format > historyFormat {
		h.cfg.log.Warn("the previous generation's drain report cannot be read", "err", err, "format", rep.Format)
		return
	}
	now := time.Now()
	r := reportFromWire(rep.Report)
	h.mu.Lock()
	from := control.Process{PID: rep.PID, Generation: rep.Generation}
	mine := func(e *control.Upgrade) bool { return e.To.Generation == h.cfg.gen && e.From.PID == rep.PID }
	switch e := h.last(mine); {
	case h.pending != nil && mine(h.pending):
		// The report overtook this generation's ready().
		fillDrain(h.pending, now, r)
		from = h.pending.From
	case e != nil:
		fillDrain(e, now, r)
		from = e.From
	}
	h.totals.DrainEnded += int64(r.Ended)
	h.totals.DrainCut += int64(r.Cut)
	ev := h.event(EventPreviousDrained, now)
	if ev != nil {
		ev.From, ev.To, ev.Drain = from, h.self(), r
		if rep.Err != "" {
			ev.Err = errors.New(rep.Err)
		}
	}
	h.unlockAndTell(ev)
}

// snapshot is the state handed to the next generation (OfferState). It
// gives up the oldest entries rather than exceed Options.StateLimit,
// which would fail the upgrade.
func (h *history) snapshot() ([]byte, error) {
	h.mu.Lock()
	st := historyState{Format: historyFormat, Totals: h.totals.Clone(), History: slices.Clone(h.ring)}
	if h.pending != nil {
		p := *h.pending
		st.Pending = &p
	}
	h.mu.Unlock()
	for {
		b, err := json.Marshal(st)
		if err != nil || len(b) <= h.cfg.stateLimit || len(st.History) == 0 {
			return b, err
		}
		st.History = st.History[1:]
	}
}

// close ends what newHistory started. Called at release.
func (h *history) close() {
	h.closeOnce.Do(func() { close(h.done) })
	<-h.ended
}

// status fills in st's history fields. Called by Upgrader.Status.
func (h *history) status(st *control.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st.Version = h.cfg.version
	st.History = slices.Clone(h.ring)
	if h.pending != nil {
		st.History = append(st.History, *h.pending)
	}
	st.Totals = h.totals.Clone()
}

// shortText cuts s to at most n bytes, at a rune boundary, ending it with
// "..." when it cut.
func shortText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("...")
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// buildVersion is Options.Version, or what the build information says
// when it is empty: the main module's version, else its VCS revision
// (12 digits, "-dirty" if the tree was modified), else "unknown".
func buildVersion(v string) string {
	if v != "" {
		return v
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return versionOf(info)
}

func versionOf(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

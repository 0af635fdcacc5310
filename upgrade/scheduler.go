package upgrade

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/queue"
)

// scheduler runs the request queue (package queue decides; this carries
// out its decisions): one goroutine owns the queue.Machine and the attempt
// in progress, and every request, outcome and stop reaches it as a
// message. It ends at release, after the last attempt has reported.
type scheduler struct {
	requests chan request
	giveUps  chan queue.ID
	settles  chan chan struct{}
	backs    chan takeBack
	stop     chan struct{} // closed by end
	done     chan struct{} // closed when the loop has returned
	ids      atomic.Uint64
}

// takeBack tells the loop that this generation serves again (RunFunc):
// the loop makes a new Exit channel and puts the machine back to Idle.
type takeBack struct {
	err  error // why: counts as a failed upgrade
	done chan struct{}
}

// request is one request to upgrade on its way to the loop.
type request struct {
	id       queue.ID
	hurry    bool
	rollback bool       // to the previous build (Rollback)
	reply    chan error // buffered; nil when nobody waits (a signal)
}

func (s *scheduler) start(u *Upgrader) {
	s.requests = make(chan request)
	s.giveUps = make(chan queue.ID)
	s.settles = make(chan chan struct{})
	s.backs = make(chan takeBack)
	s.stop = make(chan struct{})
	s.done = make(chan struct{})
	go s.loop(u)
}

// end stops the loop once this generation has exited and no attempt is
// pending, and waits for it. The caller has called Upgrader.stop.
func (s *scheduler) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// Upgrade asks for an upgrade and waits for its outcome: it starts the new
// generation (the binary at os.Args[0], with the same arguments), hands it
// the listeners and waits until it is ready.
//
// It returns nil once the new generation is ready: Exit is then closed and
// this generation should drain and exit (Run does that). It returns a
// *ChildError (matching ErrChildFailed) if the new generation could not be
// started, failed its pre-flight check, crashed, exited or was not ready
// within UpgradeTimeout; it has then been killed and this generation serves
// on, unchanged. It returns a *BackoffError (matching ErrBackoff) while
// repeated failures hold upgrades back, ErrNotReady before Ready,
// ErrStopped after Stop, and ErrUpgraded when another upgrade, started
// before this request arrived, succeeded (the request was passed on to the
// new generation, which carries it out).
//
// Requests are queued, never refused for being concurrent: a request is
// carried out by the first attempt that starts after it arrived. While the
// previous generation still drains, or while an attempt runs, the request
// waits, and requests waiting together are carried out by one attempt
// whose outcome each of them gets. So at most two generations exist, and a
// burst of requests shorter than one upgrade leads to at most two upgrades.
//
// When ctx is done before the outcome, Upgrade returns an error wrapping
// ctx.Err(), and a request that has not started its new process yet is
// dropped: it is never carried out later. Safe for concurrent use.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	return publicErr(u.request(ctx, false))
}

// request queues an upgrade request and waits for its outcome.
func (u *Upgrader) request(ctx context.Context, hurry bool) error {
	return u.requestKind(ctx, hurry, false)
}

// requestKind is request for an upgrade or a rollback.
func (u *Upgrader) requestKind(ctx context.Context, hurry, rollback bool) error {
	if isClosed(u.exitC()) {
		return u.exitErr()
	}
	if !u.ready.Load() {
		if !isClosed(u.readyC) {
			return ErrNotReady
		}
		// Ready is under way (it already accepts, so the control socket
		// can be asked): wait for it rather than refuse.
		select {
		case <-u.readyDone:
		case <-u.exitC():
			return u.exitErr()
		case <-ctx.Done():
			return fmt.Errorf("upgrade: waiting for this generation to be ready: %w", ctx.Err())
		}
	}
	s := &u.sched
	r := request{id: queue.ID(s.ids.Add(1)), hurry: hurry, rollback: rollback, reply: make(chan error, 1)}
	select {
	case s.requests <- r:
	case <-s.done:
		return u.exitErr()
	case <-ctx.Done():
		return fmt.Errorf("upgrade: %w", ctx.Err())
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		select {
		case s.giveUps <- r.id:
		case <-s.done:
		}
		return fmt.Errorf("upgrade: waiting for the outcome: %w", ctx.Err())
	}
}

// requestAsync queues a request nobody waits for (a signal). One that
// arrives before Ready is carried out once this generation is ready: a
// deploy tool that signals just after a restart must not be ignored.
func (u *Upgrader) requestAsync() {
	s := &u.sched
	select {
	case s.requests <- request{id: queue.ID(s.ids.Add(1))}:
	case <-s.done:
	}
}

// takenBack makes this generation one that serves again, through the
// scheduler's loop (see RunFunc). err says why the newer one is gone.
func (u *Upgrader) takenBack(err error) {
	b := takeBack{err: err, done: make(chan struct{})}
	select {
	case u.sched.backs <- b:
		<-b.done
	case <-u.sched.done:
	}
}

// settle waits until no attempt is pending: its outcome decides whether
// the service stops or lives on in the next generation.
func (u *Upgrader) settle() {
	c := make(chan struct{})
	select {
	case u.sched.settles <- c:
		<-c
	case <-u.sched.done:
	}
}

// loop is the scheduler's goroutine: it turns what happens into events
// for the queue.Machine, and carries out the actions those return.
func (s *scheduler) loop(u *Upgrader) {
	defer close(s.done)
	l := &loop{u: u, s: s,
		m:       queue.New(queue.Config{CrashLoopAfter: u.opts.CrashLoop.After, CrashLoopBackoff: u.opts.CrashLoop.Backoff}),
		waiting: map[queue.ID]request{}, settlers: map[queue.ID]chan struct{}{},
		nextID: ^queue.ID(0), // settle and passed-on ids count down, requests up
	}
	exit := u.exitC()
	var stop <-chan struct{} // enabled once exited and no attempt reports
	for {
		now := time.Now()
		var acts []queue.Action
		select {
		case r := <-s.requests:
			acts = l.request(now, r)
		case <-u.h.Forwarded():
			u.log.Info("the previous generation passed on an upgrade request that arrived while it started this one")
			acts = l.request(now, request{id: l.newID()})
		case id := <-s.giveUps:
			delete(l.waiting, id)
			acts = l.m.GiveUp(now, id)
		case c := <-s.settles:
			id := l.newID()
			l.settlers[id] = c
			acts = l.m.Settle(now, id)
		case <-l.started:
			l.started = nil
			acts = l.m.Started(now)
		case err := <-l.done:
			acts = l.attemptDone(now, err)
			if exit == nil {
				stop = s.stop // release may have asked while it ran
			}
		case <-exit:
			exit, stop = nil, s.stop
			acts = l.m.Exit(now)
		case b := <-s.backs:
			u.revive()
			exit, stop = u.exitC(), nil
			acts = l.m.TakenBack(now, b.err)
			close(b.done)
		case <-stop:
			if l.done == nil {
				for _, c := range l.settlers {
					close(c)
				}
				return
			}
			stop = nil // again once the attempt has reported
		}
		for _, a := range acts {
			l.apply(a)
		}
		u.updateStatus(l.m.Status())
	}
}

// loop is the state of the scheduler's goroutine, which alone touches it.
type loop struct {
	u        *Upgrader
	s        *scheduler
	m        *queue.Machine
	waiting  map[queue.ID]request       // requests the machine has not answered
	settlers map[queue.ID]chan struct{} // settle calls waiting for no attempt
	nextID   queue.ID

	// The attempt in progress, if any.
	rollback bool // the next Start is a rollback's
	cancel   context.CancelFunc
	started  <-chan struct{}
	done     <-chan error
	canceled bool
}

func (l *loop) newID() queue.ID {
	id := l.nextID
	l.nextID--
	return id
}

func (l *loop) request(now time.Time, r request) []queue.Action {
	if r.rollback {
		// Alone, or not at all: merged with a waiting upgrade, it would
		// start one binary for requests that asked for two.
		if p := l.m.Status().Phase; p != queue.Idle {
			if p == queue.Exited {
				r.reply <- l.u.exitErr()
			} else {
				r.reply <- errRollbackBusy
			}
			return nil
		}
		l.u.log.Info("rollback requested")
	}
	l.waiting[r.id] = r
	l.u.hist.requested(now)
	if r.reply == nil {
		l.u.log.Info("upgrade requested")
	}
	acts := l.m.Request(now, queue.Request{ID: r.id, Async: r.reply == nil, Hurry: r.hurry})
	for _, a := range acts {
		if a.Kind == queue.Start {
			l.rollback = r.rollback
		}
	}
	return acts
}

func (l *loop) attemptDone(now time.Time, err error) []queue.Action {
	u := l.u
	l.cancel()
	l.cancel, l.started, l.done = nil, nil, nil
	var ce *control.ChildError
	counts := !l.canceled && errors.As(err, &ce)
	if err == nil {
		// Before anyone hears of the success: from now on the new
		// generation answers the control socket, and this one drains.
		u.controlSrv().stopAccepting()
		u.upgraded.Store(true)
		u.finish()
	}
	acts := l.m.Done(now, err, counts)
	if err != nil && !l.canceled {
		u.reportFailure(err, l.m.Status())
		u.hist.failed(err)
	}
	if err != nil && u.opts.PIDFile != "" {
		// A new generation that died after writing the PID file, before
		// it told us, left the file naming a dead process.
		if err := reclaimPIDFile(u.opts.PIDFile); err != nil {
			u.log.Warn("restoring the PID file after a failed upgrade", "err", err)
		}
	}
	l.canceled = false
	return acts
}

// apply carries out one action of the machine.
func (l *loop) apply(a queue.Action) {
	u := l.u
	switch a.Kind {
	case queue.Start:
		l.cancel, l.started, l.done = u.startAttempt(l.rollback)
		l.rollback = false
	case queue.Hurry:
		if err := u.h.Hurry(); err != nil {
			u.log.Warn("could not hurry the previous generation", "err", err)
		} else {
			u.log.Info("asked the previous generation to cut its drain short")
		}
	case queue.Cancel:
		l.canceled = true
		l.cancel()
	case queue.Reply:
		for _, id := range a.IDs {
			r, ok := l.waiting[id]
			delete(l.waiting, id)
			switch {
			case ok && r.reply != nil:
				r.reply <- a.Err
			case ok && errors.Is(a.Err, ErrBackoff):
				u.log.Warn("upgrade refused: backing off after repeated failures", "err", a.Err)
				u.sd.refused(refusedStatus(a.Err))
			}
		}
	case queue.Forward:
		l.forward(a.IDs)
	case queue.Settled:
		for _, id := range a.IDs {
			if c, ok := l.settlers[id]; ok {
				close(c)
				delete(l.settlers, id)
			}
		}
	}
}

// forward passes requests that arrived while a successful upgrade ran on
// to the new generation: a waiting requester is told to ask it (the
// control socket's client does), and the new generation itself is asked
// once, over the side channel, for those nobody waits for (signals).
func (l *loop) forward(ids []queue.ID) {
	asked := false
	for _, id := range ids {
		r := l.waiting[id]
		delete(l.waiting, id)
		if r.reply != nil {
			r.reply <- errPassedOn
			continue
		}
		if asked {
			continue
		}
		asked = true
		if err := l.u.h.Forward(); err != nil {
			l.u.log.Warn("passing an upgrade request on to the new generation", "err", err)
		} else {
			l.u.log.Info("passed an upgrade request that arrived meanwhile on to the new generation")
		}
	}
}

// startAttempt starts an attempt in its own goroutine, which the loop owns:
// it always reports on done, and cancel makes it end promptly.
func (u *Upgrader) startAttempt(rollback bool) (cancel context.CancelFunc, started <-chan struct{}, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	st, dn := make(chan struct{}), make(chan error, 1)
	go u.attempt(ctx, st, dn, rollback)
	return cancel, st, dn
}

// updateStatus copies the queue's bookkeeping into the status.
func (u *Upgrader) updateStatus(q queue.Status) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.status.Failures, u.status.BackoffUntil = q.Failures, time.Time{}
	if time.Now().Before(q.Backoff) {
		u.status.BackoffUntil = q.Backoff
	}
	if !q.LastAt.IsZero() {
		u.status.LastUpgradeAt = q.LastAt
		u.status.LastUpgrade = "ok"
		if q.LastErr != nil {
			u.status.LastUpgrade = summary(q.LastErr)
		}
	}
	switch {
	case u.status.State == control.StateStopping:
	case q.Upgraded:
		u.status.State = control.StateDraining
	case q.Phase == queue.Waiting || q.Phase == queue.Running:
		u.status.State = control.StateUpgrading
	case u.status.State == control.StateUpgrading:
		u.status.State = control.StateServing
	}
}

// summary is what may be shown to anyone of an upgrade's failure: not
// what the new generation wrote (security review M5).
func summary(err error) string {
	var ce *control.ChildError
	if errors.As(err, &ce) {
		return ce.Summary()
	}
	return err.Error()
}

func (u *Upgrader) reportFailure(err error, q queue.Status) {
	u.log.Error("upgrade failed; still serving", "err", err)
	status := "upgrade failed: " + summary(err)
	if time.Now().Before(q.Backoff) {
		status = fmt.Sprintf("upgrade failed %d times in a row, refusing upgrades until %s; last: %s",
			q.Failures, q.Backoff.Format(time.TimeOnly), summary(err))
		u.log.Warn("backing off", "failures", q.Failures, "until", q.Backoff)
	}
	u.sd.failed(status)
}

// refusedStatus is the STATUS= of a request the back-off refused.
func refusedStatus(err error) string {
	var be *BackoffError
	if !errors.As(err, &be) {
		return "upgrade refused: " + err.Error()
	}
	last := "unknown"
	if be.Last != nil {
		last = summary(be.Last)
	}
	return fmt.Sprintf("upgrade refused: %d failed in a row, refusing upgrades until %s; last: %s",
		be.Failures, be.Until.Format(time.TimeOnly), last)
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

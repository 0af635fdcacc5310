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
	stop     chan struct{} // closed by end
	done     chan struct{} // closed when the loop has returned
	ids      atomic.Uint64
}

// request is one request to upgrade on its way to the loop.
type request struct {
	id    queue.ID
	hurry bool
	reply chan error // buffered; nil when nobody waits (a signal)
}

func (s *scheduler) start(u *Upgrader) {
	s.requests = make(chan request)
	s.giveUps = make(chan queue.ID)
	s.settles = make(chan chan struct{})
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
	if isClosed(u.exit) {
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
		case <-u.exit:
			return u.exitErr()
		case <-ctx.Done():
			return fmt.Errorf("upgrade: waiting for this generation to be ready: %w", ctx.Err())
		}
	}
	s := &u.sched
	r := request{id: queue.ID(s.ids.Add(1)), hurry: hurry, reply: make(chan error, 1)}
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

func (s *scheduler) loop(u *Upgrader) {
	defer close(s.done)
	m := queue.New(queue.Config{CrashLoopAfter: u.opts.CrashLoop.After, CrashLoopBackoff: u.opts.CrashLoop.Backoff})
	var (
		waiting  = map[queue.ID]request{}
		settlers = map[queue.ID]chan struct{}{}
		nextID   = ^queue.ID(0) // settle and forwarded ids count down, requests up
		cancel   context.CancelFunc
		started  <-chan struct{}
		done     <-chan error
		exit     = u.exit
		stop     <-chan struct{}
		canceled bool
	)
	for {
		now := time.Now()
		var acts []queue.Action
		select {
		case r := <-s.requests:
			waiting[r.id] = r
			if r.reply == nil {
				u.log.Info("upgrade requested")
			}
			acts = m.Request(now, queue.Request{ID: r.id, Async: r.reply == nil, Hurry: r.hurry})
		case <-u.h.Forwarded():
			u.log.Info("the previous generation passed on an upgrade request that arrived while it started this one")
			id := nextID
			nextID--
			waiting[id] = request{id: id}
			acts = m.Request(now, queue.Request{ID: id, Async: true})
		case id := <-s.giveUps:
			delete(waiting, id)
			acts = m.GiveUp(now, id)
		case c := <-s.settles:
			id := nextID
			nextID--
			settlers[id] = c
			acts = m.Settle(now, id)
		case <-started:
			started = nil
			acts = m.Started(now)
		case err := <-done:
			done, started = nil, nil
			cancel()
			var ce *control.ChildError
			counts := !canceled && errors.As(err, &ce)
			if err == nil {
				// Before anyone hears of the success: from now on the new
				// generation answers the control socket, and this one
				// drains.
				u.control.stopAccepting()
				u.upgraded.Store(true)
				u.finish()
			}
			acts = m.Done(now, err, counts)
			if err != nil && !canceled {
				u.reportFailure(err, m.Status())
			}
			canceled = false
			if exit == nil {
				stop = s.stop // release may have asked while it ran
			}
		case <-exit:
			exit = nil
			stop = s.stop
			acts = m.Exit(now)
		case <-stop:
			if done == nil {
				for _, c := range settlers {
					close(c)
				}
				return
			}
			stop = nil // again once the attempt has reported (see done)
		}
		for _, a := range acts {
			switch a.Kind {
			case queue.Start:
				cancel, started, done = u.startAttempt()
			case queue.Hurry:
				if err := u.h.Hurry(); err != nil {
					u.log.Warn("could not hurry the previous generation", "err", err)
				} else {
					u.log.Info("asked the previous generation to cut its drain short")
				}
			case queue.Cancel:
				canceled = true
				cancel()
			case queue.Reply:
				for _, id := range a.IDs {
					if r, ok := waiting[id]; ok {
						delete(waiting, id)
						if r.reply != nil {
							r.reply <- a.Err
						} else if errors.Is(a.Err, ErrBackoff) {
							u.log.Warn("upgrade refused: backing off after repeated failures", "err", a.Err)
						}
					}
				}
			case queue.Forward:
				signalled := false
				for _, id := range a.IDs {
					r := waiting[id]
					delete(waiting, id)
					if r.reply != nil {
						r.reply <- errPassedOn
						continue
					}
					if signalled {
						continue
					}
					signalled = true
					if err := u.h.Forward(); err != nil {
						u.log.Warn("passing an upgrade request on to the new generation", "err", err)
					} else {
						u.log.Info("passed an upgrade request that arrived meanwhile on to the new generation")
					}
				}
			case queue.Settled:
				for _, id := range a.IDs {
					if c, ok := settlers[id]; ok {
						close(c)
						delete(settlers, id)
					}
				}
			}
		}
		u.updateStatus(m.Status())
	}
}

// startAttempt starts an attempt in its own goroutine, which the loop owns:
// it always reports on done, and cancel makes it end promptly.
func (u *Upgrader) startAttempt() (cancel context.CancelFunc, started <-chan struct{}, done <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	st, dn := make(chan struct{}), make(chan error, 1)
	go u.attempt(ctx, st, dn)
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

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

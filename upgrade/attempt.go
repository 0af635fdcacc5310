package upgrade

import (
	"context"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/handoff"
)

// attempt carries out one upgrade and reports on started once the new
// process is about to start (requests arriving later wait for the next
// attempt) and on done with the outcome. ctx is cancelled when nobody
// wants the attempt any more (every requester gave up, or Stop).
func (u *Upgrader) attempt(ctx context.Context, started chan<- struct{}, done chan<- error, rollback bool) {
	done <- u.runAttempt(ctx, started, rollback)
}

func (u *Upgrader) runAttempt(ctx context.Context, started chan<- struct{}, rollback bool) error {
	if rollback {
		// Requests that arrive from now on wait for the attempt after
		// this one: none is merged into a rollback.
		close(started)
		started = nil
	}
	select {
	case <-u.readyDone:
	case <-ctx.Done():
		return u.abandoned()
	}
	// At most two generations: wait until the previous one has drained
	// (the machine hurries it if a request asks).
	if err := u.h.WaitForParent(ctx); err != nil {
		if ctx.Err() != nil {
			return u.abandoned()
		}
		u.log.Warn("previous generation ended abnormally", "err", err)
	}
	if started != nil {
		close(started)
	}
	begin := time.Now()
	next := u.h.Generation() + 1
	start, kind := u.h.Start, control.KindUpgrade
	if rollback {
		kind = control.KindRollback
		build, _ := u.h.PreviousBuild()
		u.log.Info("rolling back", "to", build)
		u.sd.rollingBack(next, build)
		start = u.h.Rollback
	} else {
		u.log.Info("upgrading")
		u.sd.reloading(next)
	}
	u.hist.attemptStarted(next, kind)
	if err := u.preflight(ctx, rollback); err != nil {
		return err
	}
	child, err := start()
	if err != nil {
		return err
	}
	u.mu.Lock()
	u.succ = &child
	u.mu.Unlock()
	u.log.Info("new generation ready; draining", "took", time.Since(begin), "new_pid", child.PID)
	// Under NotifyAccess=main systemd refuses the new generation's pings
	// until it is the main process, and this one stops pinging once it
	// has handed over: reset the watchdog now, so that the new one has a
	// full period for its first ping as the main process.
	u.sd.pingWatchdog()
	u.sd.handOver(child.PID, next)
	u.hist.upgraded(child)
	return nil
}

// abandoned is the outcome of an attempt nobody wants any more.
func (u *Upgrader) abandoned() error {
	if isClosed(u.exitC()) {
		return u.exitErr()
	}
	return context.Canceled
}

// preflight checks, before anything is started, that the binary the next
// generation runs is one the kernel can execute (handoff.Binary: a
// complete executable for this platform, or a script whose interpreter
// is), then runs the application's own check, if any. A broken or
// half-copied deploy thus fails fast with a clear error. The first check
// reads only headers (tens of microseconds); the application's may cost
// what it likes, at the moment the upgrade begins. A stop ends it at once.
func (u *Upgrader) preflight(ctx context.Context, rollback bool) error {
	binary, err := handoff.Binary()
	if rollback {
		// The file a rollback runs is one that ran already; its path is
		// this process's descriptor of it.
		binary, err = u.h.PreviousBinary()
	}
	if err != nil {
		if rollback {
			return err
		}
		return &ChildError{Reason: control.ReasonStartFailed, Err: err}
	}
	if u.opts.Preflight == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, u.opts.UpgradeTimeout)
	defer cancel()
	if err := u.opts.Preflight(cctx, binary); err != nil {
		if ctx.Err() != nil {
			return u.abandoned()
		}
		return &ChildError{Reason: control.ReasonCheckFailed, Err: err}
	}
	return nil
}

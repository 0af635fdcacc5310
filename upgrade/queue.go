package upgrade

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hitlessgo/hitless/readiness"
)

// An upgradeRequest is one request to upgrade, from a signal, the control
// socket or a call to Upgrade.
type upgradeRequest struct {
	// reply receives the outcome (buffered); nil when nobody waits (a
	// signal).
	reply chan error
	hurry bool
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
// repeated failures hold upgrades back, ErrNotReady before Ready, ErrStopped
// after Stop, and ErrForwarded when another upgrade, started before this
// request arrived, succeeded: this generation is exiting and the request was
// passed on to the new one.
//
// Requests are queued, never refused for being concurrent: a request is
// carried out by the first attempt that starts after it arrived. While the
// previous generation still drains, or while an attempt runs, the request
// waits, and requests waiting together are carried out by one attempt
// whose outcome each of them gets. So at most two generations exist, and a
// burst of requests shorter than one upgrade leads to at most two upgrades.
// A request waits at most for the attempt running when it arrived
// (UpgradeTimeout), the previous generation's drain (its DrainTimeout, or
// less when hurried) and its own attempt (UpgradeTimeout).
//
// ctx bounds only the wait: when it is done Upgrade returns ctx.Err(), and
// the request is still carried out. Safe for concurrent use.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	return u.request(ctx, false)
}

// request queues an upgrade request and waits for its outcome.
func (u *Upgrader) request(ctx context.Context, hurry bool) error {
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
	r := upgradeRequest{reply: make(chan error, 1), hurry: hurry}
	select {
	case u.requests <- r:
	case <-u.loopStopped:
		return u.exitErr()
	case <-ctx.Done():
		return fmt.Errorf("upgrade: %w", ctx.Err())
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("upgrade: waiting for the outcome: %w", ctx.Err())
	}
}

// requestAsync queues a request nobody waits for (a signal). One that
// arrives before Ready is carried out once this generation is ready: a
// deploy tool that signals just after a restart must not be ignored.
func (u *Upgrader) requestAsync() {
	select {
	case u.requests <- upgradeRequest{}:
	case <-u.loopStopped:
	}
}

func reply(rs []upgradeRequest, err error) {
	for _, r := range rs {
		if r.reply != nil {
			r.reply <- err
		}
	}
}

// loop owns the queue: which requests wait for the attempt that has not
// started yet (batch), which arrived while it runs (next), and the
// crash-loop state. Attempts run in their own goroutine and report through
// u.running and u.done.
func (u *Upgrader) loop() {
	defer close(u.loopStopped)
	var (
		batch, next []upgradeRequest
		pending     bool // an attempt exists
		running     bool // it has started the new process (or is about to)
		settlers    []chan struct{}
		failures    int
		backoff     time.Time
	)
	start := func() {
		pending, running = true, false
		u.setState(StateUpgrading)
		go u.attempt()
	}
	for {
		select {
		case r := <-u.requests:
			switch {
			case isClosed(u.exit):
				reply([]upgradeRequest{r}, u.exitErr())
			case !pending && time.Now().Before(backoff):
				u.log.Warn("upgrade refused: backing off after repeated failures", "until", backoff)
				reply([]upgradeRequest{r}, &BackoffError{Until: backoff, Failures: failures, Last: u.Status().LastUpgrade})
			case !pending:
				batch = []upgradeRequest{r}
				u.log.Info("upgrade requested")
				start()
				if r.hurry {
					u.askHurry()
				}
			case !running:
				batch = append(batch, r) // coalesces into the waiting attempt
				if r.hurry {
					u.askHurry()
				}
			default:
				next = append(next, r) // for the attempt after this one
			}

		case <-u.running:
			running = true

		case err := <-u.done:
			pending, running = false, false
			select { // a hurry nobody used
			case <-u.hurryC:
			default:
			}
			if err == nil {
				// Before anyone hears of the success: from now on the new
				// generation answers the control socket, and this one says
				// it drains.
				u.control.stopAccepting()
				u.setState(StateDraining)
			}
			reply(batch, err)
			batch = nil
			var ce *ChildError
			u.mu.Lock()
			u.status.LastUpgradeAt = time.Now()
			switch {
			case err == nil:
				u.status.LastUpgrade, failures = "ok", 0
			case errors.As(err, &ce):
				failures++
				u.status.LastUpgrade = err.Error()
				if u.opts.CrashLoopAfter > 0 && failures >= u.opts.CrashLoopAfter {
					backoff = time.Now().Add(u.opts.CrashLoopBackoff << min(failures-u.opts.CrashLoopAfter, 4))
				}
			default:
				u.status.LastUpgrade = err.Error()
			}
			u.status.Failures, u.status.BackoffUntil = failures, backoff
			if err != nil && u.status.State == StateUpgrading {
				u.status.State = StateServing
			}
			u.mu.Unlock()

			if err == nil {
				u.upgraded.Store(true)
				u.finish()
				u.forward(next)
				next = nil
			} else {
				u.reportFailure(err, failures, backoff)
				if len(next) > 0 {
					if time.Now().Before(backoff) {
						reply(next, &BackoffError{Until: backoff, Failures: failures, Last: err.Error()})
						next = nil // each request is answered once
					} else if !isClosed(u.exit) {
						batch, next = next, nil
						start()
					}
				}
			}
			if !pending {
				for _, s := range settlers {
					close(s)
				}
				settlers = nil
			}

		case s := <-u.settle:
			if pending {
				settlers = append(settlers, s)
			} else {
				close(s)
			}

		case <-u.exit:
			// Stopped or upgraded: requests that can no longer be carried
			// out here are answered now; an attempt still pending ends
			// promptly (Stop kills its process) and reports through done.
			if !pending {
				reply(next, u.exitErr())
				next = nil
			}
			u.afterExit(&batch, &next, &pending, &settlers)
			return
		}
	}
}

// afterExit serves the loop once this generation must go: it lets a pending
// attempt report, answers every later request, and ends at stopLoop.
func (u *Upgrader) afterExit(batch, next *[]upgradeRequest, pending *bool, settlers *[]chan struct{}) {
	for {
		if !*pending {
			for _, s := range *settlers {
				close(s)
			}
			*settlers = nil
		}
		select {
		case r := <-u.requests:
			reply([]upgradeRequest{r}, u.exitErr())
		case <-u.running:
		case err := <-u.done:
			*pending = false
			if err == nil {
				// The upgrade succeeded just as Stop was called: the new
				// generation serves, so this one drains rather than stops.
				u.upgraded.Store(true)
				u.forward(*next)
			} else {
				reply(*next, u.exitErr())
			}
			*next = nil
			reply(*batch, err)
			*batch = nil
		case s := <-u.settle:
			if *pending {
				*settlers = append(*settlers, s)
			} else {
				close(s)
			}
		case <-u.loopStop:
			return
		}
	}
}

func (u *Upgrader) askHurry() {
	select {
	case u.hurryC <- struct{}{}:
	default: // already asked
	}
}

func (u *Upgrader) stopLoop() {
	select {
	case <-u.loopStop:
	default:
		close(u.loopStop)
	}
	<-u.loopStopped
}

// attempt carries out one upgrade: wait for the previous generation to
// exit (hurrying it if asked), check the binary, start the new generation
// and wait until it is ready.
func (u *Upgrader) attempt() {
	select {
	case <-u.readyDone:
	case <-u.exit:
		u.done <- u.exitErr()
		return
	}
	if err := u.waitForParent(); err != nil {
		u.done <- err
		return
	}
	u.running <- struct{}{}
	start := time.Now()
	u.log.Info("upgrading")
	if _, err := readiness.Notify(readiness.Reloading, monotonicUsec(),
		readiness.Status(fmt.Sprintf("upgrading to generation %d (pid %d serving)", u.generation+1, os.Getpid()))); err != nil {
		u.log.Warn("telling systemd", "err", err)
	}
	if err := u.preflight(); err != nil {
		u.done <- err
		return
	}
	// The generation number travels in the environment only for the
	// moment the new process is started.
	os.Setenv(envGeneration, strconv.Itoa(u.generation+1))
	// A hurry that arrived before this attempt's new generation existed
	// is not for the drain that follows it.
	select {
	case <-u.hurrySigs:
	default:
	}
	stderrTail := u.captureStderr()
	err := classify(u.tfUpgrade(), u.opts.UpgradeTimeout+u.opts.Probation)
	tail := stderrTail()
	os.Unsetenv(envGeneration)
	var ce *ChildError
	if errors.As(err, &ce) && ce.Reason != StartFailed {
		ce.Stderr = tail
	}
	if err == nil {
		u.log.Info("new generation ready; draining", "took", time.Since(start))
		u.handOver()
	}
	u.done <- err
}

// handOver tells systemd that the new generation is the main process now,
// and waits until systemd has taken that in (BARRIER), so that it never
// sees this process exit first and thinks the service died. The new
// generation claims the main PID itself too, which needs NotifyAccess=all;
// this message from the current main process is accepted with the default
// NotifyAccess=main as well.
func (u *Upgrader) handOver() {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	pid := u.newGenerationPID()
	if pid == 0 {
		u.log.Warn("cannot tell systemd the new main PID: the new generation was not found")
		return
	}
	if _, err := readiness.Notify(readiness.MainPID(pid), readiness.Ready,
		readiness.Status(fmt.Sprintf("serving, generation %d, pid %d", u.generation+1, pid))); err != nil {
		u.log.Warn("telling systemd the new main PID", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := readiness.Barrier(ctx); err != nil {
		u.log.Warn("waiting for systemd to take in the new main PID", "err", err)
	}
}

// tfUpgrade is tableflip's Upgrade, minus a race: WaitForParent returns as
// soon as the parent's pipe reaches EOF, but tableflip's own loop learns of
// the parent's exit a moment later, and refuses an upgrade until then with
// "parent hasn't exited". Nothing was started in that case, so asking again
// shortly is not a retry of a failed upgrade.
func (u *Upgrader) tfUpgrade() error {
	for tries := 0; ; tries++ {
		err := u.tf.Upgrade()
		if err == nil || err.Error() != "parent hasn't exited" || tries == 200 {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (u *Upgrader) reportFailure(err error, failures int, backoff time.Time) {
	u.log.Error("upgrade failed; still serving", "err", err)
	status := "upgrade failed: " + err.Error()
	if time.Now().Before(backoff) {
		status = fmt.Sprintf("upgrade failed %d times in a row, refusing upgrades until %s; last: %v",
			failures, backoff.Format(time.TimeOnly), err)
		u.log.Warn("backing off", "failures", failures, "until", backoff)
	}
	// READY=1 ends the reload systemd was told about, with the truth in
	// STATUS=.
	if _, nerr := readiness.Notify(readiness.Ready, readiness.Status(status)); nerr != nil {
		u.log.Warn("telling systemd", "err", nerr)
	}
}

// waitForParent waits until the previous generation has exited, asking it
// to hurry when a waiting request wants that, and giving up when this
// generation is stopped meanwhile.
func (u *Upgrader) waitForParent() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- u.tf.WaitForParent(ctx) }()
	for {
		select {
		case err := <-result:
			if err != nil {
				u.log.Warn("previous generation ended abnormally", "err", err)
			}
			return nil
		case <-u.hurryC:
			if err := u.hurry.send(); err != nil {
				u.log.Warn("could not hurry the previous generation", "err", err)
			} else {
				u.log.Info("asked the previous generation to cut its drain short")
			}
		case <-u.exit:
			cancel()
			<-result
			return u.exitErr()
		}
	}
}

// forward passes requests that arrived while a successful upgrade ran on
// to the new generation, which carries them out: their senders may have
// installed a newer binary after that upgrade had started.
func (u *Upgrader) forward(rs []upgradeRequest) {
	if len(rs) == 0 {
		return
	}
	pid := u.newGenerationPID()
	signalled := false
	for _, r := range rs {
		if r.reply != nil {
			// Callers and control-socket clients ask the new generation
			// themselves (Client.Reload does).
			r.reply <- &forwardedError{pid: pid}
			continue
		}
		if signalled {
			continue
		}
		signalled = true
		if pid == 0 {
			u.log.Warn("could not find the new generation to pass an upgrade request on to")
			continue
		}
		if err := sendSignal(pid, sigHUP); err != nil {
			u.log.Warn("passing an upgrade request on to the new generation", "pid", pid, "err", err)
		} else {
			u.log.Info("passed an upgrade request that arrived meanwhile on to the new generation", "pid", pid)
		}
	}
}

// newGenerationPID finds the generation that just became ready: the PID
// file names it, else it is our newest child.
func (u *Upgrader) newGenerationPID() int {
	if u.opts.PIDFile != "" {
		if b, err := os.ReadFile(u.opts.PIDFile); err == nil {
			if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid != os.Getpid() {
				return pid
			}
		}
	}
	return newestChild()
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

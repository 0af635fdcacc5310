package upgrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/internal/handoff"
)

// Run reports ready (see Ready), waits until this generation must go (a
// successful upgrade, Stop, or ctx done, which acts as Stop), then drains
// every server in parallel within DrainTimeout, closes the listeners,
// releases everything (see Stop) and returns. When the service stops for
// good (not after an upgrade) it also tells systemd STOPPING=1, removes its
// unix socket files and its PID file.
//
// It returns nil when everything drained, and otherwise the drain errors,
// which say how many connections were cut and wrap
// context.DeadlineExceeded (or context.Canceled when a newer generation
// with an upgrade waiting cut the drain short). If Ready fails, Run
// stops, drains and returns Ready's error.
//
// Run cannot take the service back from a new generation that dies while
// this one drains (its servers, once drained, cannot serve again): it
// lets go of the sockets as soon as the new generation is ready. RunFunc
// can.
func (u *Upgrader) Run(ctx context.Context, servers ...drain.Drainer) error {
	if err := u.enterRun(); err != nil {
		return err
	}
	defer u.release()
	return u.run(ctx, servers, nil)
}

// RunFunc is Run with servers that serve calls into being, so that this
// generation can serve again: serve starts this generation's servers on
// listeners it gets from Listen and ListenPacket, and returns them to be
// drained. RunFunc calls it once before Ready, and again each time this
// generation takes the service back.
//
// Take-back: while this generation drains after an upgrade, it keeps its
// own copies of the listening sockets (not accepting). If the new
// generation dies before this one's drain has ended, without having said
// that it stops for good (it crashed, was killed, or exited on its own),
// this generation serves again at once: Listen and ListenPacket, called
// from serve again, return new listeners on the same sockets, whose
// queues kept the connections that arrived meanwhile; the old servers
// finish their drain. It then answers the control socket again, writes
// the PID file, tells systemd that it is the main process again (MAINPID=,
// READY=1, STATUS= saying what happened; that needs NotifyAccess=all, as
// every hand-over does), and serves until it is upgraded again or
// stopped. The death counts as a failed upgrade (Status, the crash loop,
// the Observer). Connections the dead generation had accepted died with
// it: Probation is what keeps a binary that dies soon after it starts
// from taking any.
//
// If serve fails the first time, RunFunc stops and returns its error; if
// it fails at a take-back, this generation stops (its drains end first).
// Otherwise RunFunc returns what Run returns.
func (u *Upgrader) RunFunc(ctx context.Context, serve func(ctx context.Context) ([]drain.Drainer, error)) error {
	if serve == nil {
		return errors.New("upgrade: RunFunc with a nil serve function")
	}
	if err := u.enterRun(); err != nil {
		return err
	}
	defer u.release()
	servers, err := serve(ctx)
	if err != nil {
		err = fmt.Errorf("upgrade: serve: %w", err)
		if u.h.HasParent() {
			u.h.Fail(err) // the previous generation quotes it
		}
		u.stop()
		return errors.Join(err, u.drainAll(servers, nil))
	}
	return u.run(ctx, servers, serve)
}

func (u *Upgrader) enterRun() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.released {
		return ErrStopped
	}
	u.inRun = true
	return nil
}

// run is the life of Run and RunFunc; serve is nil for Run.
func (u *Upgrader) run(ctx context.Context, servers []drain.Drainer, serve func(context.Context) ([]drain.Drainer, error)) error {
	readyErr := u.Ready(ctx)
	if readyErr != nil {
		u.stop()
	}
	var earlier []*drainJob // drains of the lives before take-backs
	for {
		select {
		case <-u.exitC():
		case <-ctx.Done():
			u.stop()
		}
		u.settle()
		// The next generation (or nobody, at a stop) answers the control
		// socket from now on; requests in progress here end on their own.
		u.controlSrv().stopAccepting()
		child := u.successor()
		if !u.upgraded.Load() || child == nil {
			break
		}
		if serve == nil {
			// Nothing could serve the sockets again: let them go, so that
			// if the new generation dies, clients are refused at once
			// rather than queued until this one exits.
			u.h.Commit()
		}
		job := u.drainAsync(servers)
		if !u.awaitDrainOrDeath(ctx, job, child, serve != nil) {
			err := u.finishDrain(job, true)
			u.closeListeners()
			return errors.Join(readyErr, err)
		}
		earlier = append(earlier, job)
		servers = nil
		next, err := u.takeBack(ctx, *child, serve)
		if err != nil {
			u.log.Error("could not serve again after taking the service back; stopping", "err", err)
			u.stop()
			readyErr = err
		}
		servers = next
	}
	return errors.Join(readyErr, u.drainAll(servers, earlier))
}

// awaitDrainOrDeath waits until job's drain has ended, and reports
// whether child died before that (or as it ended) and this generation
// should take the service back: only under RunFunc (takeBack), and never
// once this generation was told to stop (Stop, or ctx done), which it
// then carries out by draining to the end.
func (u *Upgrader) awaitDrainOrDeath(ctx context.Context, job *drainJob, child *handoff.Child, takeBack bool) bool {
	var died <-chan struct{}
	if takeBack {
		died = child.Died
	}
	done := ctx.Done()
	for {
		select {
		case <-job.done:
			select {
			case <-died:
				// It died as the drain ended: take back all the same.
				return !u.h.Stopped()
			default:
				return false
			}
		case <-died:
			if !u.h.Stopped() {
				return true
			}
			died = nil
		case <-done:
			u.stop()
			done = nil
		}
	}
}

// drainAll is the end of a generation that did not hand over: a stop, or
// a new generation that never became ready (the previous generation then
// still serves on the same sockets, PID file and unit, and this one
// leaves all of them alone). It drains servers, waits for the drains of
// earlier lives, closes the listeners and returns what failed.
func (u *Upgrader) drainAll(servers []drain.Drainer, earlier []*drainJob) error {
	stopping := !u.upgraded.Load() && (u.ready.Load() || !u.h.HasParent())
	if stopping {
		// A generation that stops for good must not be taken back by
		// the one before it, if that one still drains.
		u.h.Leave()
		u.setState(control.StateStopping)
		u.log.Info("stopping; draining")
		u.sd.stopping()
		if err := u.listeners.Unlink(); err != nil {
			u.log.Warn("removing socket files", "err", err)
		}
	}
	// The drain's time starts after what systemd was told: a notify
	// socket nobody reads costs up to a second a message.
	dctx, cancel := context.WithTimeout(context.Background(), u.opts.DrainTimeout)
	defer cancel()
	g := drain.Group{Name: "generation " + strconv.Itoa(u.h.Generation())}
	if stopping {
		deadline, _ := dctx.Deadline()
		g.Heartbeat = u.sd.extendStop(deadline)
	}
	g.Add(servers...)
	report, err := g.Drain(dctx)
	u.logDrain(report)
	u.hist.drained(report, err, false)
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("upgrade: %w", err))
	}
	for _, j := range earlier {
		if err := u.finishDrain(j, false); err != nil {
			errs = append(errs, err)
		}
	}
	u.closeListeners()
	if stopping && u.opts.PIDFile != "" {
		if err := removePIDFile(u.opts.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			u.log.Warn("removing PID file", "err", err)
		}
	}
	return errors.Join(errs...)
}

// drainJob is the drain of one life's servers after an upgrade, which
// runs while this generation watches the new one.
type drainJob struct {
	done   chan struct{}
	report drain.Report
	err    error
}

// drainAsync stops the watchdog (the new generation pings now), and
// drains servers within DrainTimeout in a goroutine the job owns; a newer
// generation may cut it short (Hurry).
func (u *Upgrader) drainAsync(servers []drain.Drainer) *drainJob {
	u.mu.Lock()
	dog := u.dog
	u.dog = nil
	u.mu.Unlock()
	dog.end()
	u.setState(control.StateDraining)
	j := &drainJob{done: make(chan struct{})}
	dctx, cancel := context.WithTimeout(context.Background(), u.opts.DrainTimeout)
	stopHurry := u.listenHurry(cancel)
	g := drain.Group{Name: "generation " + strconv.Itoa(u.h.Generation())}
	g.Add(servers...)
	go func() {
		defer close(j.done)
		defer cancel()
		defer stopHurry()
		j.report, j.err = g.Drain(dctx)
	}()
	return j
}

// finishDrain waits for j, logs it, tells the history (sent on to the
// new generation if handedOver) and returns its error.
func (u *Upgrader) finishDrain(j *drainJob, handedOver bool) error {
	<-j.done
	u.logDrain(j.report)
	u.hist.drained(j.report, j.err, handedOver)
	if j.err != nil {
		return fmt.Errorf("upgrade: %w", j.err)
	}
	return nil
}

func (u *Upgrader) logDrain(report drain.Report) {
	for _, r := range report.Servers {
		level := slog.LevelInfo
		if r.Cut > 0 {
			level = slog.LevelWarn
		}
		u.log.Log(context.Background(), level, "drained", "server", r.Name, "open", r.Open,
			"ended", r.Ended, "cut", r.Cut, "took", r.Duration.Round(time.Millisecond))
	}
}

func (u *Upgrader) closeListeners() {
	if err := u.listeners.Close(); err != nil {
		u.log.Warn("closing listeners", "err", err)
	}
}

// TakenBackError is the error a take-back records as the outcome of the
// upgrade it undid (Status.LastUpgrade, the Observer): the generation
// this one had handed over to died while this one drained.
type TakenBackError struct {
	Generation, PID int
	// How says how it ended: "was killed by SIGKILL", "exited with
	// status 2".
	How string
}

func (e *TakenBackError) Error() string {
	return fmt.Sprintf("generation %d (pid %d) %s after it took over; the previous generation took the service back", e.Generation, e.PID, e.How)
}

// takeBack makes this generation serve again after child died: see
// RunFunc. It returns the new servers.
func (u *Upgrader) takeBack(ctx context.Context, child handoff.Child, serve func(context.Context) ([]drain.Drainer, error)) ([]drain.Drainer, error) {
	how, err := u.h.TakeBack(child)
	if err != nil {
		return nil, err
	}
	why := &TakenBackError{Generation: u.h.Generation() + 1, PID: child.PID, How: how}
	u.log.Error("the new generation died while this one drained; serving again", "new_pid", child.PID, "how", how)
	u.listeners.Reopen()
	u.takenBack(why)
	servers, err := serve(ctx)
	if err != nil {
		return servers, fmt.Errorf("upgrade: serve, taking the service back: %w", err)
	}
	if u.opts.ControlSocket != "" {
		c, err := u.startControl(u.opts.ControlSocket)
		if err != nil {
			u.log.Error("the control socket could not be served again", "err", err)
		} else {
			u.mu.Lock()
			old := u.control
			u.control = c
			u.mu.Unlock()
			old.close()
		}
	}
	u.setState(control.StateServing)
	if u.opts.PIDFile != "" {
		if err := writePIDFile(u.opts.PIDFile); err != nil {
			u.log.Warn("writing the PID file again", "err", err)
		}
	}
	u.sd.takenBack(u.h.Generation(), why.Error())
	dog := u.sd.startWatchdog()
	u.mu.Lock()
	u.dog = dog
	u.mu.Unlock()
	u.hist.takenBack(child.PID, how)
	return servers, nil
}

// listenHurry cancels the drain when the generation this one handed over
// to asks it to hurry, until the returned function is called.
func (u *Upgrader) listenHurry(cancel context.CancelFunc) (stop func()) {
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		select {
		case <-u.h.Hurried():
			u.log.Warn("a newer generation has an upgrade waiting; cutting the drain short")
			cancel()
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

package upgrade

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/readiness"
)

// systemd says what the service does, as sd_notify(3) expects, and only
// when the service runs under systemd (NOTIFY_SOCKET). Every message
// carries a STATUS= line an operator reads in `systemctl status`; none
// carries what a failing new generation wrote (see ChildError.Summary).
type systemd struct {
	log *slog.Logger
}

func (s systemd) on() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

func (s systemd) notify(states ...string) {
	if _, err := readiness.Notify(states...); err != nil {
		s.log.Warn("telling systemd", "err", err)
	}
}

func servingStatus(gen, pid int) string {
	return readiness.Status(fmt.Sprintf("serving, generation %d, pid %d", gen, pid))
}

// ready: this generation serves. A new generation claims the main PID
// itself, which needs NotifyAccess=all in the unit.
func (s systemd) ready(gen int, claim bool) {
	states := []string{readiness.Ready, servingStatus(gen, os.Getpid())}
	if claim {
		states = append(mainPID(os.Getpid()), states...)
	}
	s.notify(states...)
}

// mainPID returns the MAINPID= line for pid and, where the kernel gives
// one, the MAINPIDFDID= line with its pidfd inode ID. systemd 257 and
// later then check, when they read the message, that pid still names that
// process, and refuse the change if its PID has meanwhile been recycled;
// systemd 252 ignores the field (measured: the handover works the same
// with it). The pidfd itself (MAINPIDFD=1) is not attached: systemd 252
// does not know it and closes an attached descriptor with a warning
// ("Got extra auxiliary fds with notification message, closing them"),
// and nothing here tells which systemd reads the message; the ID gives
// 257 the same certainty.
//
// The ID is taken now, from the PID: for this process, exactly; for the
// new generation, the old one's child, it names the process that holds
// the PID at this moment, which it just heard from over the handoff. Where
// there is no ID (Linux before 6.9, 32-bit, not Linux; or the process has
// already exited), MAINPID= goes alone, as before.
func mainPID(pid int) []string {
	lines := []string{readiness.MainPID(pid)}
	if id, err := readiness.PIDFDID(pid); err == nil {
		lines = append(lines, readiness.MainPIDFDID(id))
	}
	return lines
}

// reloading: an upgrade to generation next starts.
func (s systemd) reloading(next int) {
	s.notify(readiness.Reloading, monotonicUsec(),
		readiness.Status(fmt.Sprintf("upgrading to generation %d (pid %d serving)", next, os.Getpid())))
}

// rollingBack: a rollback to build, as generation next, starts.
func (s systemd) rollingBack(next int, build string) {
	s.notify(readiness.Reloading, monotonicUsec(),
		readiness.Status(fmt.Sprintf("rolling back to %q as generation %d (pid %d serving)", build, next, os.Getpid())))
}

// failed ends the reload systemd was told about (READY=1), with the truth in
// STATUS=.
func (s systemd) failed(status string) {
	s.notify(readiness.Ready, readiness.Status(status))
}

// refused answers an upgrade request that nobody waits for (a SIGHUP)
// and that is refused, as a failed upgrade is answered: RELOADING=1 with
// MONOTONIC_USEC= of now, then READY=1 with the reason in STATUS=. Under
// Type=notify-reload systemd sent that SIGHUP itself and waits for this
// pair; without it, the reload hangs until TimeoutStartSec= and then
// fails as timed out. Under any other type it is a reload that ends at
// once.
func (s systemd) refused(status string) {
	if !s.on() {
		return
	}
	s.notify(readiness.Reloading, monotonicUsec())
	s.failed(status)
}

// handOver tells systemd that the new generation is the main process now,
// and waits until systemd has taken that in (BARRIER), so that it never
// sees this process exit first and thinks the service died. The message
// from the current main process is accepted with NotifyAccess=main too.
func (s systemd) handOver(pid, gen int) {
	if !s.on() {
		return
	}
	if pid == 0 {
		s.log.Warn("cannot tell systemd the new main PID: the new generation speaks handoff version 0 (it claims the main PID itself)")
		return
	}
	s.notify(append(mainPID(pid), readiness.Ready, servingStatus(gen, pid))...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := readiness.Barrier(ctx); err != nil {
		s.log.Warn("waiting for systemd to take in the new main PID", "err", err)
	}
}

// takenBack: this generation is the main process again, because the one
// it had handed over to died (RunFunc). systemd, which was told that one
// was the main process, accepts this from another PID only with
// NotifyAccess=all.
func (s systemd) takenBack(gen int, why string) {
	if !s.on() {
		return
	}
	s.notify(append(mainPID(os.Getpid()), readiness.Ready,
		readiness.Status(fmt.Sprintf("serving again, generation %d, pid %d: %s", gen, os.Getpid(), why)))...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := readiness.Barrier(ctx); err != nil {
		s.log.Warn("waiting for systemd to take in the main PID", "err", err)
	}
}

func (s systemd) stopping() {
	s.notify(readiness.Stopping, readiness.Status("stopping: draining"))
}

// extendStop keeps systemd's stop timeout ahead of a drain that ends at
// deadline, however long TimeoutStopSec is (drain.Group.Heartbeat).
func (s systemd) extendStop(deadline time.Time) func(next time.Duration) {
	return func(next time.Duration) {
		left := time.Until(deadline).Round(time.Second)
		s.notify(readiness.ExtendTimeout(next), readiness.Status(fmt.Sprintf("stopping: draining, %v left", left)))
	}
}

// store puts the sockets (listeners and datagram sockets) in systemd's fd
// store under their names, after removing the names it no longer needs
// (removal goes by name, so a name still in use is stored again right
// after).
func (s systemd) store(sockets map[string]syscall.Conn, unused []string) {
	if !s.on() {
		return
	}
	for _, name := range unused {
		line, err := readiness.FDName(name)
		if err == nil {
			_, err = readiness.Notify(readiness.FDStoreRemove, line)
		}
		if err != nil {
			s.log.Warn("removing a socket from systemd's store", "name", name, "err", err)
		}
	}
	for name, sc := range sockets {
		line, err := readiness.FDName(name)
		if err == nil {
			_, err = readiness.NotifyWithFiles([]syscall.Conn{sc}, readiness.FDStore, line)
		}
		if err != nil {
			s.log.Warn("storing a socket with systemd", "name", name, "err", err)
		}
	}
}

// watchdog pings systemd's watchdog (WatchdogSec=) from the moment this
// generation is the main process until it hands over to the next, or, when
// it stops, until it exits. The next generation starts pinging when it
// becomes ready, before this one stops: there is no gap.
type watchdog struct {
	stop, done chan struct{}
}

func (s systemd) startWatchdog() *watchdog {
	every, ok := readiness.WatchdogInterval()
	if !ok || !s.on() {
		return nil
	}
	w := &watchdog{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			s.notify(readiness.Watchdog)
			select {
			case <-tick.C:
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

// pingWatchdog pings systemd's watchdog once, if it is on.
func (s systemd) pingWatchdog() {
	if _, ok := readiness.WatchdogInterval(); ok && s.on() {
		s.notify(readiness.Watchdog)
	}
}

// end stops the pings. Nil-safe and idempotent.
func (w *watchdog) end() {
	if w == nil {
		return
	}
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

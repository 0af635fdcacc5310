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
func (u *Upgrader) Run(ctx context.Context, servers ...drain.Drainer) error {
	u.mu.Lock()
	if u.released {
		u.mu.Unlock()
		return ErrStopped
	}
	u.inRun = true
	u.mu.Unlock()
	defer u.release()

	readyErr := u.Ready(ctx)
	if readyErr != nil {
		u.stop()
	}
	select {
	case <-u.exit:
	case <-ctx.Done():
		u.stop()
	}
	u.settle()
	upgraded := u.upgraded.Load()
	// The next generation (or nobody, at a stop) answers the control
	// socket from now on; requests in progress here end on their own.
	u.control.stopAccepting()

	// A new generation that never became ready is not the service: the
	// previous generation still serves on the same sockets, PID file and
	// unit. It leaves all of them alone.
	stopping := !upgraded && (u.ready.Load() || !u.h.HasParent())
	if stopping {
		u.setState(control.StateStopping)
		u.log.Info("stopping; draining")
		u.sd.stopping()
		if err := u.listeners.Unlink(); err != nil {
			u.log.Warn("removing socket files", "err", err)
		}
	}

	dctx, cancel := context.WithTimeout(context.Background(), u.opts.DrainTimeout)
	defer cancel()
	if upgraded {
		// The new generation is the main process and pings now.
		u.mu.Lock()
		dog := u.dog
		u.mu.Unlock()
		dog.end()
		u.setState(control.StateDraining)
		// A newer generation may ask us to cut the drain short.
		defer u.listenHurry(cancel)()
	}
	g := drain.Group{Name: "generation " + strconv.Itoa(u.h.Generation())}
	if stopping {
		deadline, _ := dctx.Deadline()
		g.Heartbeat = u.sd.extendStop(deadline)
	}
	g.Add(servers...)
	report, drainErr := g.Drain(dctx)
	for _, r := range report.Servers {
		level := slog.LevelInfo
		if r.Cut > 0 {
			level = slog.LevelWarn
		}
		u.log.Log(context.Background(), level, "drained", "server", r.Name, "open", r.Open,
			"ended", r.Ended, "cut", r.Cut, "took", r.Duration.Round(time.Millisecond))
	}
	u.hist.drained(report, drainErr, upgraded)
	if err := u.listeners.Close(); err != nil {
		u.log.Warn("closing listeners", "err", err)
	}
	if stopping && u.opts.PIDFile != "" {
		if err := removePIDFile(u.opts.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			u.log.Warn("removing PID file", "err", err)
		}
	}
	if readyErr != nil {
		return readyErr
	}
	if drainErr != nil {
		return fmt.Errorf("upgrade: %w", drainErr)
	}
	return nil
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

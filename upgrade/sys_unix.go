//go:build unix

package upgrade

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const sigHUP = syscall.SIGHUP

func sendSignal(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

func checkExecutable(path string) error { return unix.Access(path, unix.X_OK) }

// monotonicUsec is the MONOTONIC_USEC= line that goes with RELOADING=1
// (systemd 253+, Type=notify-reload).
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return ""
	}
	return fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000)
}

// hurrySignals subscribes to sig for the whole life of the generation, so
// that a hurry that arrives between the upgrade's success and the start of
// the drain is not fatal (SIGUSR1/2 terminate a process by default). Nil
// when sig is zero.
func hurrySignals(sig syscall.Signal) chan os.Signal {
	if sig == 0 {
		return nil
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, sig)
	return c
}

func stopHurrySignals(c chan os.Signal) {
	if c != nil {
		signal.Stop(c)
	}
}

// listenHurry cancels the drain when a hurry signal arrives on c, until the
// returned function is called.
func listenHurry(c chan os.Signal, cancel context.CancelFunc, log *slog.Logger) (stop func()) {
	if c == nil {
		return func() {}
	}
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		select {
		case <-c:
			log.Warn("a newer generation has an upgrade waiting; cutting the drain short")
			cancel()
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-ended
	}
}

// waitGone waits until pid no longer exists (or is a zombie).
func waitGone(ctx context.Context, pid int) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH || isZombie(pid) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("upgrade: pid %d still running: %w", pid, ctx.Err())
		case <-tick.C:
		}
	}
}

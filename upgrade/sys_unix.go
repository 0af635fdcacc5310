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

// listenHurry handles sig while a drain runs, by cancelling it. It returns
// the function that uninstalls the handler.
func listenHurry(sig syscall.Signal, cancel context.CancelFunc, log *slog.Logger) (stop func()) {
	if sig == 0 {
		return func() {}
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, sig)
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
		signal.Stop(c)
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

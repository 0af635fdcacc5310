//go:build unix

package proc

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitGonePoll is how often WaitGone looks (see WaitGone for why it polls).
const waitGonePoll = 10 * time.Millisecond

func waitGone(ctx context.Context, pid int) error {
	tick := time.NewTicker(waitGonePoll)
	defer tick.Stop()
	for {
		switch err := syscall.Kill(pid, 0); {
		case errors.Is(err, syscall.ESRCH):
			return nil
		case err == nil, errors.Is(err, syscall.EPERM): // exists (EPERM: not ours to signal)
			if isZombie(pid) {
				return nil
			}
		default:
			return fmt.Errorf("proc: looking for pid %d: %w", pid, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proc: pid %d still running: %w", pid, ctx.Err())
		case <-tick.C:
		}
	}
}

// peerClosed peeks, without blocking, at what the peer sent: zero bytes
// means its end is closed.
func peerClosed(fd uintptr) (bool, error) {
	var b [1]byte
	for {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN || err == unix.EWOULDBLOCK:
			return false, nil
		case err == unix.ECONNRESET || err == unix.EPIPE:
			return true, nil
		case err != nil:
			return false, err
		}
		return n == 0, nil
	}
}

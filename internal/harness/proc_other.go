//go:build unix && !linux

package harness

import (
	"errors"
	"syscall"
)

// becomeSubreaper does nothing: only Linux has child subreapers. Orphaned
// generations go to init (launchd), which reaps them; their statuses are
// lost (ErrNotReaped).
func becomeSubreaper() error { return nil }

// goneOrZombie reports whether pid, not our child, has exited. Without
// /proc a zombie looks alive, but init reaps orphans promptly.
func goneOrZombie(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// childrenInGroup returns nothing: without a subreaper no generation is
// reparented to us.
func childrenInGroup(int) []int { return nil }

// ours cannot tell a server process from a stranger with a recycled pid
// without /proc, so it says no and Close relies on the group kill.
func ours(int, int) bool { return false }

//go:build !linux

package readiness

// PIDFDID returns ErrNoPIDFDID: pidfds are Linux's. See the Linux
// documentation of PIDFDID for what the ID is.
func PIDFDID(pid int) (uint64, error) { return 0, ErrNoPIDFDID }

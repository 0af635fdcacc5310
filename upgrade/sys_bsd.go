//go:build unix && !linux

package upgrade

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// hurrier signals the parent by PID; without pidfds, only while the parent
// is still our parent.
type hurrier struct {
	ppid int
	sig  syscall.Signal
}

func newHurrier(ppid int, sig syscall.Signal) hurrier { return hurrier{ppid: ppid, sig: sig} }

func (h hurrier) send() error {
	if h.sig == 0 {
		return errors.New("no HurrySignal configured")
	}
	if unix.Getppid() != h.ppid {
		return errors.New("the previous generation has exited")
	}
	return syscall.Kill(h.ppid, h.sig)
}

func newestChild() int { return 0 }

func isZombie(int) bool { return false }

//go:build unix

package control

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func signalName(s syscall.Signal) string {
	if name := unix.SignalName(s); name != "" {
		return name + " (" + s.String() + ")"
	}
	return s.String()
}

//go:build !unix

package upgrade

import "syscall"

func signalName(s syscall.Signal) string { return s.String() }

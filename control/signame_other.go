//go:build !unix

package control

import "syscall"

func signalName(s syscall.Signal) string { return s.String() }

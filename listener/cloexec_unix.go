//go:build unix

package listener

import "syscall"

func closeOnExec(fd int) { syscall.CloseOnExec(fd) }

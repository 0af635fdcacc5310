//go:build unix

package main

import "syscall"

const hurrySignal = syscall.SIGUSR2

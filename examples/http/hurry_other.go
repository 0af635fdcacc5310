//go:build !unix

package main

import "syscall"

// Upgrades are not supported here; nothing to hurry.
const hurrySignal = syscall.Signal(0)

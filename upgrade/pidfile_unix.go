//go:build unix

package upgrade

import "syscall"

// noFollow opens a PID file without following a symlink or blocking on a
// FIFO planted at its path.
const noFollow = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

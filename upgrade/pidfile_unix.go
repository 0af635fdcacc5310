//go:build unix

package upgrade

import (
	"syscall"

	"github.com/hitlessgo/hitless/internal/proc"
)

// noFollow opens a PID file without following a symlink or blocking on a
// FIFO planted at its path.
const noFollow = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// unsafeDir says why another user could replace a file in dir, if one
// could (security review M3; see proc.SafeDir).
func unsafeDir(dir string) error { return proc.SafeDir(dir) }

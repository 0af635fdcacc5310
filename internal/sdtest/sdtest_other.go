//go:build !linux

package sdtest

import (
	"os"
	"runtime"
	"testing"
)

// Boot skips t (or fails it if HITLESS_REQUIRE_SYSTEMD=1): a real systemd
// needs Linux. The methods of Systemd exist only on Linux.
func Boot(t testing.TB) *Systemd {
	t.Helper()
	giveUp(t, required(os.Getenv), unavailable(probe{goos: runtime.GOOS}))
	return nil
}

// Systemd is a real systemd; see the Linux build.
type Systemd struct{}

func stopOwned() error { return nil }

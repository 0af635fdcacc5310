//go:build !linux

package sdtest

import (
	"os"
	"runtime"
	"testing"
)

// Boot skips t (or fails it if HITLESS_REQUIRE_SYSTEMD=1): a real systemd
// needs Linux. The methods of Systemd exist only on Linux.
func Boot(t testing.TB) *Systemd { t.Helper(); return BootFlavor(t, Host) }

// BootFlavor skips t (or fails it if HITLESS_REQUIRE_SYSTEMD=1), as Boot.
func BootFlavor(t testing.TB, f Flavor) *Systemd {
	t.Helper()
	giveUp(t, required(os.Getenv), unavailable(probe{goos: runtime.GOOS}))
	return nil
}

// Each runs one skipped (or failed) subtest per flavor, as Boot.
func Each(t *testing.T, test func(t *testing.T, sd *Systemd)) {
	t.Helper()
	for _, f := range Flavors {
		t.Run("systemd-"+f.Name, func(t *testing.T) { test(t, BootFlavor(t, f)) })
	}
}

// Systemd is a real systemd; see the Linux build.
type Systemd struct{}

func stopOwned() error { return nil }

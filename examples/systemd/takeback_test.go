//go:build linux

package systemd_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/sdtest"
)

// TestTakeBackUnderSystemd: generation 2 is SIGKILLed after it took over,
// while generation 1 drains a long request. Generation 1 must take the
// service back and systemd must follow: MainPID names generation 1
// again, the unit stays active with no restart, STATUS= says what
// happened, the watchdog (1 s) is pinged by generation 1, the long
// request completes, and both a further reload and a stop work.
func TestTakeBackUnderSystemd(t *testing.T) { sdtest.Each(t, testTakeBackUnderSystemd) }

func testTakeBackUnderSystemd(t *testing.T, sd *sdtest.Systemd) {
	u := install(t, sd, "hitless-http.service", func(s string) string {
		return strings.Replace(s, "WatchdogSec=10s", "WatchdogSec=1s", 1)
	})
	u.mustCtl("start", u.name+".service")
	first := u.mainPID()
	long := inflight(u.addr, 1) // 2 s: generation 1 drains it
	time.Sleep(200 * time.Millisecond)
	u.mustCtl("reload", u.name+".service")
	second := u.mainPID()
	if second == first || u.servingPID() != second {
		t.Fatalf("after the reload MainPID is %d (was %d), serving %d", second, first, u.servingPID())
	}
	host, err := sd.HostPID(second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(host, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	service := u.name + ".service"
	if err := waitFor(3*time.Second, func() bool { return u.mainPID() == first }); err != nil {
		t.Fatalf("MainPID %d after generation 2 (pid %d) was killed, want generation 1 (pid %d) back: %v\n%s",
			u.mainPID(), second, first, err, sd.Journal(service))
	}
	if pid := u.servingPID(); pid != first {
		t.Fatalf("answered by pid %d, want generation 1 (%d)", pid, first)
	}
	status := u.prop("StatusText")
	t.Logf("taken back: MainPID %d, StatusText %q", u.mainPID(), status)
	if !strings.Contains(status, "serving again") || !strings.Contains(status, "SIGKILL") {
		t.Errorf("StatusText %q, want it to say that generation 1 serves again after a SIGKILL", status)
	}
	if err := <-long; err != nil {
		t.Errorf("the long request generation 1 drained: %v", err)
	}
	time.Sleep(2500 * time.Millisecond) // more than WatchdogSec, on generation 1 alone
	if st, n := u.prop("ActiveState"), u.prop("NRestarts"); st != "active" || n != "0" {
		t.Fatalf("after the take-back: %s, NRestarts %s\n%s", st, n, sd.Journal(service))
	}
	if j := sd.Journal(service); strings.Contains(j, "Watchdog timeout") {
		t.Fatalf("the watchdog fired:\n%s", j)
	}
	u.mustCtl("reload", service)
	third := u.mainPID()
	if third == first || third == second || u.servingPID() != third {
		t.Fatalf("the reload after the take-back: MainPID %d, serving %d", third, u.servingPID())
	}
	u.mustCtl("stop", service)
	if st, res := u.prop("ActiveState"), u.prop("Result"); st != "inactive" || res != "success" {
		t.Fatalf("after stop: %s, result %s\n%s", st, res, sd.Journal(service))
	}
}

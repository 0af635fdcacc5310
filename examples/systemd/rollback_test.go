//go:build linux

package systemd_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/sdtest"
)

// TestRollbackUnderSystemd: v1 runs; the deploy moves v2 over its file and
// `systemctl reload`s; then `hitless rollback`, on the unit's control
// socket, starts v1 again from the file the first generation ran (kept
// open; the path holds v2). systemd must follow: MainPID is the
// rolled-back generation, which answers v1, the unit stays active with no
// restart, and StatusText says which generation serves. No request fails
// under keep-alive and new-connection load throughout. A second rollback
// fails, saying that nothing older is kept, and changes nothing; a
// `systemctl reload` after it starts what is on disk (v2); stop ends
// inactive/success. Run on the plain unit and on the hardened one
// (DynamicUser=, ProtectProc=invisible, MemoryDenyWriteExecute=,
// NoNewPrivileges=, SystemCallFilter=), where the kept executable must
// still be reachable and executable through /proc/self/fd.
func TestRollbackUnderSystemd(t *testing.T) {
	sdtest.Each(t, func(t *testing.T, sd *sdtest.Systemd) {
		t.Run("plain", func(t *testing.T) {
			u := install(t, sd, "hitless-http.service", nil)
			testRollbackUnderSystemd(t, u, u.addr, func(r release) { u.put(r, false) })
		})
		t.Run("hardened", func(t *testing.T) {
			h := installHardened(t, sd, nil)
			testRollbackUnderSystemd(t, h.unit, h.addr, func(r release) {
				staged := h.bin + "-" + r.name
				h.copy(r.path, staged)
				h.place(staged, "hitless-http")
			})
		})
	})
}

func testRollbackUnderSystemd(t *testing.T, u *unit, addr string, deploy func(release)) {
	v1, v2 := releases(t)
	service := u.name + ".service"
	socket := u.runtimeDir + "/control.sock"
	// hitless runs the command line tool in the container, as an operator
	// would; what it printed (its standard error is in err) is returned.
	hitless := func(args ...string) (string, error) {
		out, err := u.sd.Exec(append([]string{u.cli}, append(args, "-socket", socket, "-timeout", "30s")...)...)
		if err != nil {
			out += err.Error()
		}
		t.Logf("hitless %s: %s", strings.Join(args, " "), strings.TrimSpace(out))
		return out, err
	}
	// agree checks that systemd and the service say the same: generation
	// gen serves, it is MainPID, it answers with version, and the unit
	// never restarted.
	agree := func(when string, gen int, version string) int {
		t.Helper()
		g, pid, v := u.settledAt(gen)
		if g != gen || v != version {
			t.Fatalf("%s: generation %d (pid %d) answers %q; want generation %d answering %q\n%s", when, g, pid, v, gen, version, u.sd.Journal(service))
		}
		if st, n := u.prop("ActiveState"), u.prop("NRestarts"); st != "active" || n != "0" {
			t.Fatalf("%s: %s, NRestarts %s\n%s", when, st, n, u.sd.Journal(service))
		}
		return pid
	}

	deploy(v1)
	u.mustCtl("start", service)
	stop := sync.OnceValue(load(t, addr, keepAlive, newConn))
	defer stop()
	first := agree("after start", 1, v1.name)
	if out, err := hitless("rollback"); err == nil || !strings.Contains(out, "nothing to roll back to") {
		t.Fatalf("rollback of the first generation: %v %q; want a failure saying there is nothing to roll back to", err, out)
	}

	deploy(v2) // the deploy: the path now holds v2
	u.mustCtl("reload", service)
	second := agree("after the reload", 2, v2.name)
	if out, err := hitless("status"); err != nil || !strings.Contains(out, `rollback to "v1"`) {
		t.Fatalf("hitless status: %v %q; want it to name v1 as the rollback's target", err, out)
	}
	if _, err := hitless("rollback"); err != nil {
		t.Fatalf("hitless rollback: %v\n%s", err, u.sd.Journal(service))
	}
	third := agree("after the rollback", 3, v1.name)
	if third == first || third == second {
		t.Fatalf("after the rollback MainPID is %d: generations 1 and 2 were %d and %d; want a new process", third, first, second)
	}
	if out, err := hitless("rollback"); err == nil || !strings.Contains(out, "started by a rollback") {
		t.Fatalf("a second rollback: %v %q; want a failure saying this generation was started by a rollback", err, out)
	}
	agree("after the refused rollback", 3, v1.name)

	u.mustCtl("reload", service) // the path still holds v2
	agree("after a reload from the rolled-back generation", 4, v2.name)
	time.Sleep(200 * time.Millisecond)
	noFailures(t, stop())
	u.mustCtl("stop", service)
	if st, res := u.prop("ActiveState"), u.prop("Result"); st != "inactive" || res != "success" {
		t.Fatalf("after stop: %s, result %s\n%s", st, res, u.sd.Journal(service))
	}
}

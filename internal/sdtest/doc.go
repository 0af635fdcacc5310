// Package sdtest gives tests a real systemd (systemd 252 on Debian 12) to
// drive units with systemctl, on a machine whose PID 1 need not be systemd.
//
// [Boot] boots, once per test process, an isolated systemd as PID 1 of a
// systemd-nspawn container whose root is a throw-away overlay of the
// machine's own root (see .ci/systemd/start-systemd.sh, which does the work),
// or reuses the container named by HITLESS_SYSTEMD_STATE (.ci/run boots one
// and exports it). Where that is impossible (not root, systemd-nspawn not
// installed, not Linux, ...) Boot skips the test and says why, unless
// HITLESS_REQUIRE_SYSTEMD=1 is set (CI sets it): then it fails the test.
//
//	func TestUnit(t *testing.T) {
//		sd := sdtest.Boot(t)
//		bin := filepath.Join(sd.SharePath(), "server") // same path inside the container
//		// ... go build -o bin ...
//		unit := sd.UnitName("server") + ".service"
//		sd.WriteUnit(unit, "[Service]\nType=notify\nExecStart="+bin+"\n")
//		if out, err := sd.Ctl("start", unit); err != nil {
//			t.Fatal(out, err)
//		}
//		pid := sd.MainPID(unit) // a PID in the container's PID namespace
//		hostPID, err := sd.HostPID(pid)
//		...
//	}
//
// The container shares the host's network namespace, so a service listening
// on 127.0.0.1:PORT inside is reachable from the test on the host; several
// test processes may share one container (in CI they do), so use
// [Systemd.UnitName] and free ports. Its PID namespace is its own: MainPID
// and os.Getpid() in a service are container PIDs ([Systemd.HostPID] maps
// them). Binaries must be under [Systemd.SharePath] (or anywhere in the host's
// root that existed when the container booted: the overlay shows the host's
// root as it is, but files written under SharePath appear at once).
package sdtest

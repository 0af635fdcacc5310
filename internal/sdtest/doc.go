// Package sdtest gives tests real systemds to drive units with systemctl,
// on a machine whose PID 1 need not be systemd: the machine's own (252 on
// Debian 12, flavor [Host]) and Debian 13's 257 (flavor [Trixie]).
//
// [Each] runs a test once on each of them, as subtests named after the
// version ("systemd252", "systemd257"); [Boot] gives one test the machine's
// own. Each flavor is booted once per test process as PID 1 of an isolated
// systemd-nspawn container whose root is a throw-away overlay of the
// machine's own root, or of a Debian 13 tree that
// .ci/systemd/debian-tree.sh makes once and keeps in
// /var/tmp/hitless-root-trixie (see .ci/systemd/start-systemd.sh, which
// does the work). Containers named by HITLESS_SYSTEMD_STATE and
// HITLESS_SYSTEMD_TRIXIE_STATE are reused instead (.ci/run boots both and
// exports them). Where a flavor cannot boot (not root, systemd-nspawn not
// installed, no Debian 13 tree, not Linux, ...) its test is skipped with the
// reason, unless HITLESS_REQUIRE_SYSTEMD=1 is set (CI sets it): then it
// fails, and a missing tree is made (~80 s, ~300 MB from the Debian mirror).
//
//	func TestUnit(t *testing.T) { sdtest.Each(t, testUnit) }
//
//	func testUnit(t *testing.T, sd *sdtest.Systemd) {
//		if sd.Major() >= 253 { ... } // where versions differ
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
// root that existed when the container booted, for the Host flavor: the
// overlay shows the host's root as it is, but files written under
// SharePath appear at once). In the Trixie flavor, binaries run against
// Debian 13's libraries: Go binaries linked against Debian 12's glibc run
// there (glibc is backward compatible); CGO_ENABLED=0 needs nothing.
package sdtest

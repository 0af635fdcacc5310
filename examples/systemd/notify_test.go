//go:build linux

package systemd_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/sdtest"
)

// This file pins down what systemd 252 (Debian 12) and 257 (Debian 13)
// really do with Type=notify-reload and NotifyAccess=, and that `hitless
// status` agrees with the unit's StatusText. Where the versions differ the
// test branches on sd.Major() and says what was measured, so that a systemd
// that behaves differently fails it. The write-up of these measurements is
// the "systemd versions" section of the docs.

// versions builds examples/http twice more, answering X-Version: v1 and
// v2 (the default build answers "dev"), once per test process.
var versions = sync.OnceValues(func() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var bins []string
	for _, v := range []string{"v1", "v2"} {
		out := filepath.Join(binDir, "hitless-http-"+v)
		if err := harness.Build(ctx, "./examples/http", out, false, "-X main.version="+v); err != nil {
			return nil, err
		}
		bins = append(bins, out)
	}
	return bins, nil
})

// release is a binary a test installs at the unit's ExecStart= path.
type release struct {
	name string // what it answers in X-Version
	path string // on the host
}

func releases(t *testing.T) (v1, v2 release) {
	t.Helper()
	bins, err := versions()
	if err != nil {
		t.Fatal(err)
	}
	return release{"v1", bins[0]}, release{"v2", bins[1]}
}

// put installs r as the service's binary. With slow, it installs a
// wrapper instead, which, when started as a new generation (not for the
// pre-flight -check), creates the file started returns, waits a second,
// and then runs r under the same argv[0] (the path the next upgrade
// starts): the upgrade to it lasts over a second, and once the file exists
// the binary at the path may be replaced without changing what it runs.
func (u *unit) put(r release, slow bool) {
	u.t.Helper()
	if !slow {
		u.copy(r.path, u.bin)
		return
	}
	real := u.bin + "-" + r.name
	u.copy(r.path, real)
	os.Remove(u.started())
	wrapper := fmt.Sprintf("#!/bin/bash\nif [ \"$1\" != -check ]; then touch %s; sleep 1; fi\nexec -a \"$0\" %s \"$@\"\n", u.started(), real)
	if err := replaceFile(u.bin, wrapper); err != nil {
		u.t.Fatal(err)
	}
}

func (u *unit) started() string { return u.bin + ".started" }

// waitStarted waits until the slow wrapper put installed has been started
// as a new generation (its RELOADING=1 was sent before), and systemd says
// the unit is reloading.
func (u *unit) waitStarted() {
	u.t.Helper()
	if err := waitFor(10*time.Second, func() bool { _, err := os.Stat(u.started()); return err == nil }); err != nil {
		u.t.Fatalf("the new generation did not start: %v", err)
	}
	u.waitReloading()
}

// putBroken installs a binary that passes the pre-flight check and then
// exits 3, as in TestFailedReloadKeepsTheUnitActive.
func (u *unit) putBroken() {
	u.t.Helper()
	if err := replaceFile(u.bin, "#!/bin/sh\n[ \"$1\" = -check ] && exit 0\necho 'cannot open the database' >&2\nexit 3\n"); err != nil {
		u.t.Fatal(err)
	}
}

// replaceFile replaces path with an executable holding text.
func replaceFile(path, text string) error {
	if err := os.WriteFile(path+".new", []byte(text), 0o755); err != nil {
		return err
	}
	return os.Rename(path+".new", path)
}

// reloadBound bounds every `systemctl reload` of this file, far below
// sdtest's own 2 minutes: a reload that hangs ends with exit status 124.
const reloadBound = "30"

type outcome struct {
	code      int // exit status of systemctl; 124: it hung
	took      time.Duration
	stderr    string
	ended     time.Time
	mainPID   int    // right after it returned
	status    string // StatusText, then
	activeNow string // ActiveState, then
	serving   int    // the process that answered first after it returned
	version   string // the version MainPID runs (it answered too)
}

// reload runs `timeout 30 systemctl reload UNIT` in the container and
// reports what it returned and what serves right after.
func (u *unit) reload() outcome {
	u.t.Helper()
	o := u.reloadOnly()
	o.mainPID, o.status, o.activeNow = u.mainPID(), u.prop("StatusText"), u.prop("ActiveState")
	o.serving, o.version = u.versionOf(o.mainPID)
	u.t.Logf("systemctl reload: exit %d after %v %s; answered by %d (%s), MainPID %d, %s, StatusText %q",
		o.code, o.took.Round(time.Millisecond), o.stderr, o.serving, o.version, o.mainPID, o.activeNow, o.status)
	return o
}

// reloadOnly is reload without looking at the service; safe to call
// from any goroutine.
func (u *unit) reloadOnly() outcome {
	begin := time.Now()
	_, err := u.sd.Exec("timeout", reloadBound, "systemctl", "--no-pager", "reload", u.name+".service")
	o := outcome{took: time.Since(begin), ended: time.Now(), code: exitCode(err)}
	if err != nil {
		o.stderr = err.Error()
	}
	return o
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// hup sends SIGHUP to the main process, as config management does.
func (u *unit) hup() int {
	u.t.Helper()
	pid := u.mainPID()
	if out, err := u.sd.Exec("kill", "-HUP", strconv.Itoa(pid)); err != nil {
		u.t.Fatalf("kill -HUP %d: %v %s", pid, err, out)
	}
	return pid
}

// versionOf asks the service until process pid answers (for at most 2 s)
// and returns which process answered first, and the version pid runs.
func (u *unit) versionOf(pid int) (first int, version string) {
	u.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		answered, v := u.answer()
		if first == 0 {
			first = answered
		}
		if answered == pid {
			return first, v
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("MainPID %d never answered; %d (%s) did", pid, answered, v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var servingRe = regexp.MustCompile(`^serving, generation (\d+), pid (\d+)$`)

// serving parses a StatusText that says which generation serves.
func serving(status string) (gen, pid int, ok bool) {
	m := servingRe.FindStringSubmatch(status)
	if m == nil {
		return 0, 0, false
	}
	gen, _ = strconv.Atoi(m[1])
	pid, _ = strconv.Atoi(m[2])
	return gen, pid, true
}

// settled waits until the unit is active, its StatusText says which
// generation serves, that generation is the MainPID and answers, and
// returns it.
func (u *unit) settled() (gen, pid int, version string) {
	u.t.Helper()
	var st string
	err := waitFor(20*time.Second, func() bool {
		st = u.prop("StatusText")
		var ok bool
		gen, pid, ok = serving(st)
		return ok && u.prop("ActiveState") == "active" && u.mainPID() == pid
	})
	if err != nil {
		u.t.Fatalf("not settled: StatusText %q, %s, MainPID %d: %v\n%s", st, u.prop("ActiveState"), u.mainPID(), err, u.sd.Journal(u.name+".service"))
	}
	if answered, v := u.answer(); answered != pid {
		u.t.Fatalf("StatusText says pid %d serves, pid %d (%s) answered", pid, answered, v)
	} else {
		version = v
	}
	return gen, pid, version
}

// settledAt is settled once generation want, at least, serves: an
// upgrade queued behind a draining generation begins only when that one
// has exited (the drain tells its connections to go over
// drain.DefaultSpread), and until then the generation before it serves,
// settled, under a StatusText that does not mention the queued upgrade.
func (u *unit) settledAt(want int) (gen, pid int, version string) {
	u.t.Helper()
	waitFor(20*time.Second, func() bool {
		g, _, ok := serving(u.prop("StatusText"))
		return ok && g >= want
	})
	return u.settled()
}

// waitReloading waits until the unit is reloading: the upgrade's
// RELOADING=1 has reached systemd.
func (u *unit) waitReloading() {
	u.t.Helper()
	if err := u.sd.WaitProp(u.name+".service", "ActiveState", "reloading", 10*time.Second); err != nil {
		u.t.Fatal(err)
	}
}

// editNotifyReload makes the shipped unit Type=notify-reload.
func editNotifyReload(s string) string {
	return strings.Replace(s, "Type=notify\n", "Type=notify-reload\n", 1)
}

func dropLine(s, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(line, prefix) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestNotifyReload: the shipped unit as Type=notify-reload without
// ExecReload=, so that systemd itself sends SIGHUP and waits for
// RELOADING=1 (MONOTONIC_USEC= after its signal) and READY=1.
//
// 257: every reload returns once the new generation is the MainPID and
// answers, running the binary that was on disk when reload was called,
// also when reloads and raw SIGHUPs overlap; but a failed upgrade is a
// successful reload (exit 0, "Reloaded"), and so is one refused by the
// crash-loop back-off (hitless answers it as a failed upgrade; before it
// did, the reload hung until TimeoutStartSec=, then failed as timed out).
//
// 252: the type does not exist; the unit silently becomes Type=simple:
// start does not wait for READY=1, and `systemctl reload` is refused
// (exit 3). Only a raw SIGHUP upgrades.
func TestNotifyReload(t *testing.T) { sdtest.Each(t, testNotifyReload) }

func testNotifyReload(t *testing.T, sd *sdtest.Systemd) {
	v1, v2 := releases(t)
	u := install(t, sd, "hitless-http.service", func(s string) string {
		s = dropLine(editNotifyReload(s), "ExecReload=")
		// One failure starts the back-off (10 s); a reload that hangs
		// ends after 5 s.
		s = strings.Replace(s, "-upgrade-timeout 30s", "-upgrade-timeout 5s -crash-loop-after 1", 1)
		return strings.Replace(s, "TimeoutStartSec=90s", "TimeoutStartSec=5s", 1)
	})
	unitName := u.name + ".service"
	u.mustCtl("start", unitName)
	// Start waits for READY=1, which carries this STATUS=, on 257; on
	// 252 it need not.
	if st := u.prop("StatusText"); sd.Major() >= 253 && !strings.HasPrefix(st, "serving, generation 1,") {
		t.Errorf("start returned before READY=1: StatusText %q", st)
	}
	gen, _, _ := u.settled()
	if gen != 1 {
		t.Fatalf("generation %d after start", gen)
	}
	typ, canReload := u.prop("Type"), u.prop("CanReload")
	if sd.Major() < 253 {
		testNotifyReload252(t, u, typ, canReload, v1)
		return
	}
	if typ != "notify-reload" || canReload != "yes" {
		t.Fatalf("Type=%s CanReload=%s, want notify-reload, yes", typ, canReload)
	}

	stop := sync.OnceValue(load(t, u.addr, keepAlive, newConn))
	defer stop()
	time.Sleep(200 * time.Millisecond)

	// 10 reloads, each of a new binary: measured on 257, 40-600 ms each,
	// each returning with the new generation as MainPID, running the
	// binary installed before it. systemd ends the reload on the new
	// generation's own READY=1, before the old one has closed its
	// listener: a connection made right then may still be answered by the
	// old generation (measured: in 0 to 2 of 10 reloads). With the
	// shipped unit, `hitless reload` returns only after the old generation
	// has handed over, and TestReloadAndStopUnderLoad finds the new one
	// answering every time.
	prev, stale := u.mainPID(), 0
	for i := range 10 {
		r := v1
		if i%2 == 1 {
			r = v2
		}
		u.put(r, false)
		o := u.reload()
		if o.code != 0 || o.mainPID == prev || o.version != r.name || o.activeNow != "active" {
			t.Fatalf("reload %d: exit %d, MainPID %d -> %d running %s (want %s), %s", i+1, o.code, prev, o.mainPID, o.version, r.name, o.activeNow)
		}
		if _, pid, _ := serving(o.status); pid != o.mainPID {
			t.Fatalf("reload %d: StatusText %q, MainPID %d", i+1, o.status, o.mainPID)
		}
		if o.serving != o.mainPID {
			stale++
		}
		prev = o.mainPID
	}
	t.Logf("10 reloads: the old generation answered first after %d of them", stale)

	// Two reloads at once. Measured on 257: both return together (the
	// second job is merged into the running one, which systemd then runs
	// again: a second SIGHUP), after two upgrades.
	gen0, _, _ := u.settled()
	u.put(v1, false)
	var wg sync.WaitGroup
	both := make([]outcome, 2)
	for i := range both {
		wg.Add(1)
		go func() { defer wg.Done(); both[i] = u.reloadOnly() }()
	}
	wg.Wait()
	gen1, _, ver := u.settled()
	apart := both[0].ended.Sub(both[1].ended).Abs()
	t.Logf("two reloads at once: exit %d after %v and exit %d after %v, %v apart; generation %d -> %d, running %s",
		both[0].code, both[0].took.Round(time.Millisecond), both[1].code, both[1].took.Round(time.Millisecond), apart.Round(time.Millisecond), gen0, gen1, ver)
	if both[0].code != 0 || both[1].code != 0 || apart > 300*time.Millisecond || gen1-gen0 < 1 || gen1-gen0 > 2 || ver != v1.name {
		t.Fatalf("two reloads at once: %+v, %v apart, generation %d -> %d, running %s", both, apart, gen0, gen1, ver)
	}

	// A raw SIGHUP while a systemd reload runs: the reload returns with
	// its own upgrade (the binary installed before it), and the SIGHUP is
	// carried out after it, by the new generation (upgrades of the same
	// burst: at most two).
	u.put(v2, true)
	pending := make(chan outcome, 1)
	go func() { pending <- u.reloadOnly() }()
	u.waitStarted()
	u.put(v1, true) // slow too: v2 serves on for a second after the reload
	u.hup()
	o := <-pending
	main := u.mainPID()
	_, ver = u.versionOf(main)
	t.Logf("SIGHUP during a reload: reload exit %d after %v, then MainPID %d runs %s", o.code, o.took.Round(time.Millisecond), main, ver)
	if o.code != 0 || ver != v2.name {
		t.Fatalf("SIGHUP during a reload: reload exit %d, then MainPID %d runs %s, want v2", o.code, main, ver)
	}
	gen2, _, ver := u.settledAt(gen1 + 2)
	if gen2 != gen1+2 || ver != v1.name {
		t.Fatalf("after the SIGHUP's upgrade: generation %d (want %d) running %s (want v1)", gen2, gen1+2, ver)
	}

	// A systemd reload while a raw SIGHUP's upgrade runs (systemd saw its
	// RELOADING=1): systemd waits until that upgrade is done, then sends
	// its own SIGHUP, and returns once the binary installed before the
	// reload serves.
	u.put(v1, true)
	u.hup()
	u.waitStarted()
	u.put(v2, false)
	o = u.reload()
	if o.code != 0 || o.version != v2.name {
		t.Fatalf("reload during a SIGHUP's upgrade: exit %d, MainPID %d runs %s (want v2)", o.code, o.mainPID, o.version)
	}
	if gen3, _, _ := u.settledAt(gen2 + 2); gen3 != gen2+2 {
		t.Fatalf("generation %d -> %d, want two upgrades", gen2, gen3)
	}

	// The same, racing: reload right after the SIGHUP, before systemd
	// may have read its RELOADING=1. A RELOADING=1 whose MONOTONIC_USEC=
	// is older than systemd's own SIGHUP does not end the reload: when
	// reload returns, the newest binary serves.
	for i, r := range []release{v1, v2, v1} {
		u.put(other(r, v1, v2), false)
		u.hup()
		u.put(r, false)
		if o := u.reload(); o.code != 0 || o.version != r.name {
			t.Fatalf("race %d: reload exit %d, MainPID %d runs %s (want %s)", i+1, o.code, o.mainPID, o.version, r.name)
		}
		u.settled()
	}
	time.Sleep(200 * time.Millisecond)
	noFailures(t, stop())

	// A failed upgrade. Measured on 257: reload exits 0 ("Reloaded"), in
	// ~190 ms: the old generation's READY=1 ends the reload, and systemd
	// has no way to be told it failed (PR #39745 proposes one); only
	// StatusText says so.
	main = u.mainPID()
	u.putBroken()
	o = u.reload()
	if o.code != 0 || o.activeNow != "active" || o.mainPID != main || o.serving != main ||
		!strings.HasPrefix(o.status, "upgrade failed") || !strings.Contains(o.status, "exited with status 3") {
		t.Fatalf("failed upgrade: exit %d, %s, MainPID %d (was %d), StatusText %q", o.code, o.activeNow, o.mainPID, main, o.status)
	}
	j := sd.Journal(unitName)
	if !strings.Contains(j, "cannot open the database") || strings.Contains(j, "Reload failed") {
		t.Fatalf("journal after the failed upgrade:\n%s", j)
	}

	// Another reload while upgrades are refused (the back-off after that
	// failure): hitless answers the SIGHUP as it answers a failed upgrade,
	// RELOADING=1 then READY=1 with the refusal in STATUS=, so the reload
	// ends at once, with exit 0 (as a failed upgrade's does). Measured on
	// 257 before hitless answered: the reload hung until
	// TimeoutStartSec= (5 s here, 90 s in the shipped unit), then failed
	// ("Reload operation timed out", exit 1).
	o = u.reload()
	if o.code != 0 || o.took > 2*time.Second || o.activeNow != "active" || o.mainPID != main || !strings.HasPrefix(o.status, "upgrade refused: 1 failed in a row") {
		t.Fatalf("reload during the back-off: exit %d after %v, %s, MainPID %d (was %d), StatusText %q", o.code, o.took, o.activeNow, o.mainPID, main, o.status)
	}
	if j := sd.Journal(unitName); strings.Contains(j, "Reload operation timed out") {
		t.Fatalf("the reload timed out:\n%s", j)
	}
}

func other(r, a, b release) release {
	if r == a {
		return b
	}
	return a
}

func testNotifyReload252(t *testing.T, u *unit, typ, canReload string, v1 release) {
	// Measured on 252: "Failed to parse service type, ignoring:
	// notify-reload", and the unit is Type=simple: start returns at once
	// (before READY=1), and there is no reload.
	if typ != "simple" || canReload != "no" {
		t.Fatalf("Type=%s CanReload=%s, want simple, no (the fallback)", typ, canReload)
	}
	boot, _ := u.sd.Exec("journalctl", "--no-pager", "-b", "-o", "cat")
	if !strings.Contains(boot, u.name+".service:") || !strings.Contains(boot, "Failed to parse service type, ignoring: notify-reload") {
		t.Errorf("the fallback is not in the journal")
	}
	// (Whether "Started" comes before the service's ready line in the
	// journal is a race under Type=simple: it says nothing. The Type
	// property above is the proof.)
	o := u.reload()
	if o.code != 3 || !strings.Contains(o.stderr, "Job type reload is not applicable") {
		t.Fatalf("systemctl reload: exit %d %s; want 3, not applicable", o.code, o.stderr)
	}
	// A raw SIGHUP still upgrades, and its RELOADING=1 ... READY=1 still
	// shows as reloading.
	stop := sync.OnceValue(load(t, u.addr, keepAlive, newConn))
	defer stop()
	time.Sleep(200 * time.Millisecond)
	u.put(v1, true)
	u.hup()
	u.waitStarted()
	gen, _, ver := u.settled()
	if gen != 2 || ver != v1.name {
		t.Fatalf("after SIGHUP: generation %d running %s", gen, ver)
	}
	time.Sleep(200 * time.Millisecond)
	noFailures(t, stop())
}

// TestNotifyReloadWithExecReload: Type=notify-reload plus the shipped
// ExecReload=hitless reload. Measured on 257: systemd sends SIGHUP, waits
// for the upgrade that starts (RELOADING=1 ... READY=1), and then runs
// ExecReload=, which asks for a second upgrade. That second request
// reaches the new generation (generation +2, exit 0), or, when it connects
// while the old generation still answers the control socket, the old one,
// which says "already upgraded, this generation is exiting": measured
// before control.Client.Reload passed such a request on, the reload then
// failed (exit 1) although the upgrade had succeeded (generation +1); the
// test still tells that case apart, should it come back. (Tried by hand on
// Debian forky's 262, not in CI: there ExecReload= runs first, then the
// SIGHUP; a failing ExecReload= fails the reload before any signal, so a
// broken binary fails once, and the check below, which wants two, fails.)
// A broken binary fails twice (and the reload, through
// ExecReload=). Not a unit to recommend: it doubles the upgrades, brings
// the crash-loop back-off twice as fast, and may fail a good reload. On
// 252 (Type=simple fallback) it is one upgrade per reload, and reload
// fails with the upgrade, but start does not wait for READY=1.
func TestNotifyReloadWithExecReload(t *testing.T) { sdtest.Each(t, testNotifyReloadWithExecReload) }

func testNotifyReloadWithExecReload(t *testing.T, sd *sdtest.Systemd) {
	u := install(t, sd, "hitless-http.service", func(s string) string {
		return strings.Replace(editNotifyReload(s), "-upgrade-timeout 30s", "-upgrade-timeout 5s", 1)
	})
	unitName := u.name + ".service"
	u.mustCtl("start", unitName)
	per := 2 // upgrades per reload
	if sd.Major() < 253 {
		per = 1
	}
	gen0, _, _ := u.settled()
	stop := sync.OnceValue(load(t, u.addr, keepAlive, newConn))
	defer stop()
	time.Sleep(200 * time.Millisecond)
	for i := range 3 {
		o := u.reload()
		gen, _, _ := u.settled()
		switch {
		case o.code == 0 && gen == gen0+per:
		case per == 2 && o.code == 1 && gen == gen0+1 && strings.Contains(sd.Journal(unitName), "already upgraded, this generation is exiting"):
			t.Logf("reload %d: failed although its upgrade succeeded: ExecReload= asked the exiting generation", i+1)
		default:
			t.Fatalf("reload %d: exit %d, generation %d -> %d, want +%d", i+1, o.code, gen0, gen, per)
		}
		gen0 = gen
	}
	time.Sleep(200 * time.Millisecond)
	noFailures(t, stop())
	main := u.mainPID()
	u.putBroken()
	o := u.reload()
	j := sd.Journal(unitName)
	failures := strings.Count(j, "upgrade failed; still serving")
	t.Logf("broken binary: reload exit %d, %d failed upgrade(s)", o.code, failures)
	if o.code != 1 || o.mainPID != main || o.activeNow != "active" || failures != per || !strings.Contains(j, "Reload failed") {
		t.Fatalf("broken binary: exit %d, MainPID %d (was %d), %s, %d failed upgrades (want %d)\n%s", o.code, o.mainPID, main, o.activeNow, failures, per, j)
	}
}

// TestNotifyAccess: the shipped unit with NotifyAccess=main, exec and all,
// WatchdogSec=2s: 5 reloads under load, each generation then main for
// more than the ping interval (1 s), then (main, all) reloads back to back.
//
// Measured on both: every one works for the 5 spaced reloads (0 failed
// requests, MainPID the new generation, watchdog fed, no restart): the old
// generation, the main process, hands MAINPID over itself and pings until
// then. What main and exec lose is everything the new generation says
// before it is the main process (its READY=1, STATUS=, first WATCHDOG=1,
// and FDSTORE=1, so a listener an upgrade adds is not stored); 252 logs
// "reception only permitted for main PID" for such messages, 257 drops
// them without a word. Losing that first ping can let the watchdog fire
// when upgrades come faster than the ping interval (seen once on 257).
// So all stays the recommendation; main is the least that works.
//
// Also: without ExecStop=, `systemctl stop` after an upgrade SIGKILLs the
// new main process at once on both (requests in flight fail); the unit
// ends failed/signal or inactive/success. 257's pidfd tracking did not
// fix it: ExecStop= is needed on both.
func TestNotifyAccess(t *testing.T) { sdtest.Each(t, testNotifyAccess) }

func testNotifyAccess(t *testing.T, sd *sdtest.Systemd) {
	for _, access := range []string{"main", "exec", "all"} {
		t.Run(access, func(t *testing.T) {
			u := install(t, sd, "hitless-http.service", func(s string) string {
				s = strings.Replace(s, "NotifyAccess=all", "NotifyAccess="+access, 1)
				return strings.Replace(s, "WatchdogSec=10s", "WatchdogSec=2s", 1)
			})
			unitName := u.name + ".service"
			u.mustCtl("start", unitName)
			stop := sync.OnceValue(load(t, u.addr, keepAlive, newConn))
			defer stop()
			time.Sleep(200 * time.Millisecond)
			// 5 reloads, each generation main for longer than the ping
			// interval (WatchdogSec/2).
			prev := u.mainPID()
			for i := range 5 {
				o := u.reload()
				if o.code != 0 || o.mainPID == prev || o.mainPID != o.serving {
					t.Fatalf("reload %d: exit %d, MainPID %d -> %d, answered by %d", i+1, o.code, prev, o.mainPID, o.serving)
				}
				prev = o.mainPID
				time.Sleep(1100 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			noFailures(t, stop())
			j := sd.Journal(unitName)
			refused := strings.Count(j, "reception only permitted")
			t.Logf("NotifyAccess=%s: %s, NRestarts %s, %d refused notification(s) logged", access, u.prop("ActiveState"), u.prop("NRestarts"), refused)
			if u.prop("ActiveState") != "active" || u.prop("NRestarts") != "0" || strings.Contains(j, "Watchdog timeout") {
				t.Fatalf("NotifyAccess=%s: %s, NRestarts %s\n%s", access, u.prop("ActiveState"), u.prop("NRestarts"), j)
			}
			switch {
			case access == "all" || sd.Major() >= 253:
				// 257 drops a refused message silently (measured: 0
				// lines for 5 upgrades).
				if refused != 0 {
					t.Errorf("%d refused notifications logged, want 0", refused)
				}
			default:
				// 252: measured 4 to 10 for 5 upgrades.
				if refused == 0 {
					t.Errorf("no refused notification logged")
				}
			}

			// Then reloads back to back for 2.5 s (> WatchdogSec): each
			// generation is main for less than the ping interval. Under
			// all, each one's first ping, sent as it becomes ready, counts:
			// the watchdog never fires. Under main and exec that ping counts
			// only if the old generation's hand-over reached systemd first;
			// if it did not, in every upgrade for WatchdogSec, the watchdog
			// fires (seen once on 257: "Watchdog timeout" after 4 reloads
			// in 1.6 s, SIGABRT, the 5th reload failed). Measured 0 of 4
			// bursts of 24-40 reloads: it is a race, so only logged here.
			if access == "exec" {
				return // the same as main
			}
			begin, n := time.Now(), 0
			for time.Since(begin) < 2500*time.Millisecond && u.prop("NRestarts") == "0" {
				u.reloadOnly()
				n++
			}
			time.Sleep(500 * time.Millisecond)
			fired := strings.Contains(sd.Journal(unitName), "Watchdog timeout")
			t.Logf("NotifyAccess=%s: %d reloads in %v back to back: watchdog fired: %v, NRestarts %s", access, n, time.Since(begin).Round(time.Millisecond), fired, u.prop("NRestarts"))
			if access == "all" && (fired || u.prop("NRestarts") != "0") {
				t.Fatalf("NotifyAccess=all, reloads back to back: the watchdog fired\n%s", sd.Journal(unitName))
			}
		})
	}
	t.Run("without-ExecStop", func(t *testing.T) {
		u := install(t, sd, "hitless-http.service", func(s string) string { return dropLine(s, "ExecStop=") })
		unitName := u.name + ".service"
		u.mustCtl("start", unitName)
		if o := u.reload(); o.code != 0 {
			t.Fatalf("reload: exit %d", o.code)
		}
		slow := inflight(u.addr, 3)
		time.Sleep(300 * time.Millisecond)
		begin := time.Now()
		u.mustCtl("stop", unitName)
		took := time.Since(begin)
		failed := 0
		for range 3 {
			if err := <-slow; err != nil {
				failed++
			}
		}
		state, result := u.prop("ActiveState"), u.prop("Result")
		t.Logf("stop after an upgrade, without ExecStop=: %v, %d of 3 requests in flight failed, %s/%s", took.Round(time.Millisecond), failed, state, result)
		// Measured on both: failed/signal, or inactive/success with "Unit
		// process N remains running after unit stopped" (systemd lost
		// track of the killed main process).
		want := "failed/signal|inactive/success"
		got := state + "/" + result
		if failed != 3 || took > 2*time.Second || !strings.Contains("|"+want+"|", "|"+got+"|") || !strings.Contains(sd.Journal(unitName), "with signal SIGKILL") {
			t.Fatalf("stop without ExecStop=: %v, %d of 3 in flight failed, %s (measured: SIGKILL at once, all fail, %s)", took, failed, got, want)
		}
	})
}

// hstatus is `hitless status -json`.
type hstatus struct {
	PID         int    `json:"pid"`
	Generation  int    `json:"generation"`
	State       string `json:"state"`
	LastUpgrade string `json:"last_upgrade"`
}

// status runs `hitless status`, with -json and without, in the container.
func (u *unit) status() (st hstatus, text string, err error) {
	sock := u.runtimeDir + "/control.sock"
	js, err := u.sd.Exec(u.cli, "status", "-socket", sock, "-timeout", "5s", "-json")
	if err != nil {
		return st, "", err
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		return st, "", fmt.Errorf("%v: %s", err, js)
	}
	text, err = u.sd.Exec(u.cli, "status", "-socket", sock, "-timeout", "5s")
	return st, text, err
}

// TestStatus: `hitless status` (text and -json) says what the unit's
// StatusText and MainPID say, on both versions: after start, after 1 and 3
// upgrades, after a failed upgrade and while stopping. While stopping
// (measured on both) StatusText is "stopping: draining, ..." and the
// control socket is already gone ("no service is listening"), so status
// cannot contradict it; if it ever answers then, it must say stopping.
func TestStatus(t *testing.T) { sdtest.Each(t, testStatus) }

func testStatus(t *testing.T, sd *sdtest.Systemd) {
	u := install(t, sd, "hitless-http.service", func(s string) string {
		return strings.Replace(s, "-upgrade-timeout 30s", "-upgrade-timeout 2s", 1)
	})
	unitName := u.name + ".service"
	u.mustCtl("start", unitName)
	agree := func(when string, wantGen int, failed bool) {
		t.Helper()
		main, text := u.mainPID(), u.prop("StatusText")
		st, out, err := u.status()
		if err != nil {
			t.Fatalf("%s: hitless status: %v", when, err)
		}
		first, rest, _ := strings.Cut(out, "\n")
		t.Logf("%s: MainPID %d, StatusText %q; hitless status %q, -json %+v", when, main, text, out, st)
		if st.PID != main || st.Generation != wantGen || st.State != "serving" {
			t.Fatalf("%s: hitless status -json %+v, MainPID %d, want generation %d serving", when, st, main, wantGen)
		}
		if want := fmt.Sprintf("pid %d, generation %d, %s", st.PID, st.Generation, st.State); first != want {
			t.Fatalf("%s: hitless status says %q, -json %q", when, first, want)
		}
		if !failed {
			gen, pid, ok := serving(text)
			// A new generation has made no upgrade attempt yet (what
			// follows the first line is the version, the totals and the
			// history of the service).
			if !ok || gen != st.Generation || pid != st.PID || st.LastUpgrade != "" || strings.Contains(rest, "last upgrade") {
				t.Fatalf("%s: StatusText %q, hitless status %+v %q", when, text, st, out)
			}
			return
		}
		// After a failure StatusText carries the same words as the
		// status's last_upgrade, and names no generation.
		reason, ok := strings.CutPrefix(text, "upgrade failed: ")
		if !ok || reason != st.LastUpgrade || !strings.Contains(rest, "): "+reason) {
			t.Fatalf("%s: StatusText %q, last_upgrade %q, text %q", when, text, st.LastUpgrade, out)
		}
	}
	agree("after start", 1, false)
	u.mustCtl("reload", unitName)
	agree("after 1 upgrade", 2, false)
	u.mustCtl("reload", unitName)
	u.mustCtl("reload", unitName)
	agree("after 3 upgrades", 4, false)
	u.putBroken()
	if _, err := u.ctl("reload", unitName); err == nil {
		t.Fatal("reload of a broken binary succeeded")
	}
	agree("after a failed upgrade", 4, true)

	slow := inflight(u.addr, 1)
	time.Sleep(300 * time.Millisecond)
	main := u.mainPID()
	u.mustCtl("stop", "--no-block", unitName)
	if err := sd.WaitProp(unitName, "ActiveState", "deactivating", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for range 50 {
		if u.prop("ActiveState") != "deactivating" {
			break
		}
		text := u.prop("StatusText")
		st, _, err := u.status()
		if !strings.HasPrefix(text, "stopping: draining") {
			continue // not yet told
		}
		seen++
		if err != nil && !strings.Contains(err.Error(), "no service is listening") || err == nil && (st.State != "stopping" || st.PID != main) {
			t.Fatalf("while stopping: StatusText %q, hitless status %+v, %v", text, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if seen == 0 {
		t.Errorf("never saw the unit stopping")
	}
	if err := <-slow; err != nil {
		t.Errorf("request in flight at stop: %v", err)
	}
	if err := sd.WaitProp(unitName, "ActiveState", "inactive", 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

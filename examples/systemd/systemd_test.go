//go:build linux

// Package systemd_test proves the unit files in this directory on a real
// systemd (internal/sdtest boots one in a container; the CI requires it).
package systemd_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
	"github.com/hitlessgo/hitless/internal/sdtest"
)

var binDir string // examples/http and cmd/hitless, built once

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(sdtest.M(buildFirst{m}))
}

type buildFirst struct{ m *testing.M }

func (b buildFirst) Run() int {
	var err error
	if binDir, err = os.MkdirTemp("", "hitless-systemd"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for pkg, out := range map[string]string{"./examples/http": "hitless-http", "./cmd/hitless": "hitless"} {
		if err := harness.Build(ctx, pkg, filepath.Join(binDir, out), false, ""); err != nil {
			fmt.Fprintln(os.Stderr, "build:", err)
			return 1
		}
	}
	return b.m.Run()
}

// unit is one instance of a unit file of this directory, installed in the
// real systemd with its own name, port, binaries and runtime directory.
type unit struct {
	t          *testing.T
	sd         *sdtest.Systemd
	name, addr string
	bin, cli   string // the service's binary (replaceable) and hitless
	runtimeDir string
}

func install(t *testing.T, sd *sdtest.Systemd, file string, edit func(string) string) *unit {
	t.Helper()
	u := &unit{t: t, sd: sd, name: sd.UnitName("hitless-http"), addr: harness.FreeAddrT(t)}
	share := sd.SharePath()
	u.bin, u.cli = filepath.Join(share, "hitless-http"), filepath.Join(share, "hitless")
	u.copy(filepath.Join(binDir, "hitless-http"), u.bin)
	u.copy(filepath.Join(binDir, "hitless"), u.cli)
	u.runtimeDir = "/run/" + u.name
	text := u.render(file)
	if edit != nil {
		text = edit(text)
	}
	sd.WriteUnit(u.name+".service", text)
	return u
}

// render adapts a unit file of this directory to this test's paths.
func (u *unit) render(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		u.t.Fatal(err)
	}
	base := strings.TrimSuffix(strings.TrimSuffix(file, ".service"), ".socket")
	r := strings.NewReplacer(
		"/usr/local/bin/hitless-http", u.bin,
		"/usr/local/bin/hitless", u.cli,
		"127.0.0.1:8080", u.addr,
		"/run/"+base+"/", u.runtimeDir+"/",
		"RuntimeDirectory="+base, "RuntimeDirectory="+u.name,
		base+".socket", u.name+".socket",
		base+".service", u.name+".service",
	)
	return r.Replace(string(b))
}

func (u *unit) copy(from, to string) {
	u.t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		u.t.Fatal(err)
	}
	tmp := to + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		u.t.Fatal(err)
	}
	// A running binary cannot be written in place: replace it.
	if err := os.Rename(tmp, to); err != nil {
		u.t.Fatal(err)
	}
}

func (u *unit) ctl(args ...string) (string, error) {
	out, err := u.sd.Ctl(args...)
	u.t.Logf("systemctl %s: %v %s", strings.Join(args, " "), err, strings.TrimSpace(out))
	return out, err
}

func (u *unit) mustCtl(args ...string) {
	u.t.Helper()
	if _, err := u.ctl(args...); err != nil {
		u.t.Fatalf("systemctl %s: %v\n%s", strings.Join(args, " "), err, u.sd.Journal(u.name+".service"))
	}
}

func (u *unit) prop(p string) string { return u.sd.Show(u.name+".service", p) }

func (u *unit) mainPID() int { return u.sd.MainPID(u.name + ".service") }

// ask asks the service at addr, on a connection of its own, which
// process (X-Pid) and version (X-Version) answered.
func ask(addr string) (pid int, version string, err error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	return pid, resp.Header.Get("X-Version"), nil
}

// answer asks the service which process and version answered.
func (u *unit) answer() (pid int, version string) {
	u.t.Helper()
	pid, version, err := ask(u.addr)
	if err != nil {
		u.t.Fatal(err)
	}
	return pid, version
}

// inflight sends n requests that take 2 s each and returns their outcomes.
func inflight(addr string, n int) <-chan error {
	errs := make(chan error, n)
	for range n {
		go func() {
			c := &http.Client{Timeout: 30 * time.Second}
			resp, err := c.Get("http://" + addr + "/?sleep=2s")
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	return errs
}

// servingPID asks the service which process answered.
func (u *unit) servingPID() int {
	u.t.Helper()
	pid, _ := u.answer()
	return pid
}

// load runs traffic of the given kinds until stop is called, which
// returns the results.
func load(t *testing.T, addr string, kinds ...loadgen.Config) (stop func() []loadgen.Result) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	var wg sync.WaitGroup
	results := make([]loadgen.Result, len(kinds))
	for i, cfg := range kinds {
		cfg.Network, cfg.Addr = "tcp", addr
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := loadgen.Run(ctx, cfg)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	return func() []loadgen.Result {
		cancel()
		wg.Wait()
		for _, r := range results {
			t.Log(r.String())
		}
		return results
	}
}

var (
	keepAlive = loadgen.Config{Kind: loadgen.KeepAlive, Workers: 4, Pace: time.Millisecond}
	newConn   = loadgen.Config{Kind: loadgen.NewConn, Workers: 2, Pace: 2 * time.Millisecond}
	slow      = loadgen.Config{Kind: loadgen.Slow, Workers: 4, Sleep: time.Second}
)

func noFailures(t *testing.T, rs []loadgen.Result) {
	t.Helper()
	for _, r := range rs {
		if r.Requests == 0 {
			t.Errorf("%s: no traffic", r.Kind)
		}
		if r.Failed() != 0 {
			t.Errorf("%s: %d requests failed: %v", r.Kind, r.Failed(), r.Errors)
		}
	}
}

func TestReloadAndStopUnderLoad(t *testing.T) { sdtest.Each(t, testReloadAndStopUnderLoad) }

func testReloadAndStopUnderLoad(t *testing.T, sd *sdtest.Systemd) {
	u := install(t, sd, "hitless-http.service", nil)
	u.mustCtl("start", u.name+".service")
	stop := load(t, u.addr, keepAlive, newConn, slow)
	time.Sleep(300 * time.Millisecond)
	prev := u.mainPID()
	for i := range 10 {
		begin := time.Now()
		u.mustCtl("reload", u.name+".service")
		main, serving := u.mainPID(), u.servingPID()
		t.Logf("reload %d: %v, MainPID %d -> %d", i+1, time.Since(begin).Round(time.Millisecond), prev, main)
		if main == prev || main != serving {
			t.Fatalf("reload %d: MainPID %d (was %d), answering pid %d: MainPID is not the new generation", i+1, main, prev, serving)
		}
		if st := u.prop("ActiveState"); st != "active" {
			t.Fatalf("reload %d: unit %s", i+1, st)
		}
		prev = main
	}
	time.Sleep(200 * time.Millisecond)
	noFailures(t, stop())

	// Stop after those upgrades, with slow requests in flight: they
	// finish, and the unit ends inactive, not failed (systemd 252 would
	// SIGKILL the new main process without ExecStop=).
	slow := inflight(u.addr, 3)
	time.Sleep(300 * time.Millisecond)
	u.mustCtl("stop", u.name+".service")
	for range 3 {
		if err := <-slow; err != nil {
			t.Errorf("request in flight at stop: %v", err)
		}
	}
	if st, res := u.prop("ActiveState"), u.prop("Result"); st != "inactive" || res != "success" {
		t.Fatalf("after stop: %s, result %s\n%s", st, res, u.sd.Journal(u.name+".service"))
	}
}

func TestFailedReloadKeepsTheUnitActive(t *testing.T) {
	sdtest.Each(t, testFailedReloadKeepsTheUnitActive)
}

func testFailedReloadKeepsTheUnitActive(t *testing.T, sd *sdtest.Systemd) {
	u := install(t, sd, "hitless-http.service", func(s string) string {
		return strings.Replace(s, "-upgrade-timeout 30s", "-upgrade-timeout 2s", 1)
	})
	u.mustCtl("start", u.name+".service")
	main := u.mainPID()
	stop := load(t, u.addr, keepAlive, newConn)
	time.Sleep(200 * time.Millisecond)
	u.putBroken()
	out, err := u.ctl("reload", u.name+".service")
	if err == nil {
		t.Fatalf("systemctl reload succeeded with a binary that exits 3: %s", out)
	}
	time.Sleep(200 * time.Millisecond)
	noFailures(t, stop())
	if st := u.prop("ActiveState"); st != "active" {
		t.Fatalf("unit %s after a failed reload", st)
	}
	if got := u.mainPID(); got != main {
		t.Fatalf("MainPID %d, want the old generation %d", got, main)
	}
	if s := u.prop("StatusText"); !strings.Contains(s, "upgrade failed") || !strings.Contains(s, "exited with status 3") {
		t.Fatalf("StatusText %q does not say why", s)
	}
	if j := u.sd.Journal(u.name + ".service"); !strings.Contains(j, "cannot open the database") {
		t.Errorf("the new binary's output is not in the journal:\n%s", j)
	}
}

// TestRestartAndCrashLoseNoConnection: with the listening socket in
// systemd's fd store, `systemctl restart` fails nothing, and a SIGKILL of the
// main process refuses no connection: what arrives while no process runs
// waits in the kernel for the next one.
func TestRestartAndCrashLoseNoConnection(t *testing.T) {
	sdtest.Each(t, testRestartAndCrashLoseNoConnection)
}

func testRestartAndCrashLoseNoConnection(t *testing.T, sd *sdtest.Systemd) {
	u := install(t, sd, "hitless-http.service", nil)
	u.mustCtl("start", u.name+".service")
	u.mustCtl("reload", u.name+".service") // the stored socket outlives generations too

	stop := load(t, u.addr, keepAlive, newConn, slow)
	time.Sleep(300 * time.Millisecond)
	before := u.mainPID()
	u.mustCtl("restart", u.name+".service")
	if after := u.mainPID(); after == before || u.prop("ActiveState") != "active" {
		t.Fatalf("restart: MainPID %d -> %d, %s", before, after, u.prop("ActiveState"))
	}
	time.Sleep(300 * time.Millisecond)
	noFailures(t, stop())

	// A crash: only new connections are counted, and none may be refused;
	// requests on connections the killed process had accepted die with it.
	stop = load(t, u.addr, newConn)
	time.Sleep(300 * time.Millisecond)
	killed := u.mainPID()
	if out, err := u.sd.Exec("kill", "-9", strconv.Itoa(killed)); err != nil {
		t.Fatalf("kill: %v %s", err, out)
	}
	if err := waitFor(15*time.Second, func() bool {
		pid := u.mainPID()
		return pid != 0 && pid != killed && u.prop("ActiveState") == "active"
	}); err != nil {
		t.Fatalf("not restarted after the crash: %v\n%s", err, u.sd.Journal(u.name+".service"))
	}
	time.Sleep(300 * time.Millisecond)
	rs := stop()
	if r := rs[0]; r.Failures[loadgen.Refused] != 0 || r.OK == 0 {
		t.Fatalf("across the crash: %s", r.String())
	}
	if n := u.prop("NRestarts"); n != "1" {
		t.Errorf("NRestarts = %s, want 1", n)
	}
}

// TestWatchdogAcrossUpgrades: with WatchdogSec= small, many upgrades in a
// row never let the watchdog fire: each generation pings while it is the
// main process.
func TestWatchdogAcrossUpgrades(t *testing.T) { sdtest.Each(t, testWatchdogAcrossUpgrades) }

func testWatchdogAcrossUpgrades(t *testing.T, sd *sdtest.Systemd) {
	u := install(t, sd, "hitless-http.service", func(s string) string {
		return strings.Replace(s, "WatchdogSec=10s", "WatchdogSec=1s", 1)
	})
	u.mustCtl("start", u.name+".service")
	first := u.mainPID()
	for range 15 {
		u.mustCtl("reload", u.name+".service")
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // more than WatchdogSec on the last generation
	if st, n := u.prop("ActiveState"), u.prop("NRestarts"); st != "active" || n != "0" {
		t.Fatalf("after 15 upgrades: %s, NRestarts %s\n%s", st, n, u.sd.Journal(u.name+".service"))
	}
	if j := u.sd.Journal(u.name + ".service"); strings.Contains(j, "Watchdog timeout") {
		t.Fatalf("the watchdog fired:\n%s", j)
	}
	if u.mainPID() == first {
		t.Fatal("no upgrade happened")
	}
}

// TestSocketActivatedUnit: the service takes its socket from systemd by
// name, upgrades and restarts with zero failures.
func TestSocketActivatedUnit(t *testing.T) { sdtest.Each(t, testSocketActivatedUnit) }

func testSocketActivatedUnit(t *testing.T, sd *sdtest.Systemd) {
	u := install(t, sd, "hitless-http-activated.service", nil)
	u.sd.WriteUnit(u.name+".socket", u.render("hitless-http-activated.socket"))
	u.mustCtl("start", u.name+".socket")
	// The first connection starts the service.
	stop := load(t, u.addr, keepAlive, newConn)
	if err := waitFor(15*time.Second, func() bool { return u.prop("ActiveState") == "active" }); err != nil {
		t.Fatalf("service not activated: %v", err)
	}
	for range 3 {
		u.mustCtl("reload", u.name+".service")
	}
	u.mustCtl("restart", u.name+".service")
	u.mustCtl("reload", u.name+".service")
	time.Sleep(300 * time.Millisecond)
	noFailures(t, stop())
	if j := u.sd.Journal(u.name + ".service"); strings.Contains(j, "address already in use") {
		t.Fatalf("the service bound its own socket instead of taking systemd's:\n%s", j)
	}
	u.mustCtl("stop", u.name+".service", u.name+".socket")
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not within %v", d)
}

//go:build linux

package sdtest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildNotifyd builds testdata/notifyd into dir.
func buildNotifyd(t *testing.T, dir string) string {
	t.Helper()
	gobin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "notifyd")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", bin, "./testdata/notifyd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/notifyd: %v\n%s", err, out)
	}
	return bin
}

// get fetches url from the host, without keep-alive (no connection, and
// no goroutine, outlives the call).
func get(url string) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestNotifyServiceLifecycle drives a real Type=notify unit through
// systemd: start (ready via NOTIFY_SOCKET), HTTP from the host over
// loopback, PID mapping, journal, repeated restarts, stop.
func TestNotifyServiceLifecycle(t *testing.T) { Each(t, testNotifyServiceLifecycle) }

func testNotifyServiceLifecycle(t *testing.T, sd *Systemd) {
	t0 := time.Now()
	bin := buildNotifyd(t, sd.SharePath())
	t.Logf("boot + build: %v", time.Since(t0))
	unit := sd.UnitName("sdtest-notifyd") + ".service"
	sd.WriteUnit(unit, "[Unit]\nDescription=sdtest notifyd\n\n[Service]\nType=notify\nExecStart="+bin+"\nTimeoutStartSec=20\nTimeoutStopSec=20\n")

	if out, err := sd.Ctl("start", unit); err != nil {
		t.Fatalf("systemctl start: %v %s\n%s", err, out, sd.Journal(unit))
	}
	if got := sd.Show(unit, "ActiveState"); got != "active" {
		t.Fatalf("after start, ActiveState=%q, want active", got)
	}
	if got := sd.Show(unit, "SubState"); got != "running" {
		t.Errorf("after start, SubState=%q, want running", got)
	}
	if got := sd.Show(unit, "StartLimitIntervalUSec"); got != "0" {
		t.Errorf("StartLimitIntervalUSec=%q, want 0 (added by WriteUnit)", got)
	}

	// The service told systemd its address with STATUS=; reach it from the host.
	status := sd.Show(unit, "StatusText")
	addr, ok := strings.CutPrefix(status, "listening on ")
	if !ok || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("StatusText=%q, want \"listening on 127.0.0.1:PORT\"", status)
	}
	body, err := get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET from the host: %v", err)
	}

	// PIDs: the service sees its container PID, which is systemd's MainPID;
	// HostPID maps it to the host process running our binary.
	pid := sd.MainPID(unit)
	if want := "notifyd pid=" + strconv.Itoa(pid) + "\n"; body != want {
		t.Errorf("service answered %q, want %q (MainPID %d)", body, want, pid)
	}
	hostPID, err := sd.HostPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(hostPID) + "/exe"); err != nil || exe != bin {
		t.Errorf("host pid %d (container pid %d) runs %q (%v), want %s", hostPID, pid, exe, err, bin)
	}
	if hostPID == pid {
		t.Logf("host and container PIDs are both %d (possible, but unlikely)", pid)
	}
	if _, err := sd.HostPID(1 << 22); err == nil {
		t.Error("HostPID of a PID that does not exist in the container: no error")
	}

	t0 = time.Now()
	// Without StartLimitIntervalSec=0, the 6th start within 10 s would be
	// refused ("start request repeated too quickly").
	for i := range 7 {
		if out, err := sd.Ctl("restart", unit); err != nil {
			t.Fatalf("restart %d: %v %s", i+1, err, out)
		}
	}
	t.Logf("7 restarts: %v", time.Since(t0))
	newPID := sd.MainPID(unit)
	if newPID == pid || newPID == 0 {
		t.Errorf("MainPID after restarts = %d, was %d", newPID, pid)
	}

	if j := sd.Journal(unit); !strings.Contains(j, "ready, listening on "+addr) && !strings.Contains(j, "ready, listening on 127.0.0.1:") {
		t.Errorf("journal of %s lacks the service's output:\n%s", unit, j)
	}

	if out, err := sd.Ctl("stop", unit); err != nil {
		t.Fatalf("systemctl stop: %v %s", err, out)
	}
	if got := sd.Show(unit, "ActiveState"); got != "inactive" {
		t.Errorf("after stop, ActiveState=%q, want inactive", got)
	}
	if got := sd.Show(unit, "Result"); got != "success" {
		t.Errorf("after stop, Result=%q, want success", got)
	}
	if _, err := get("http://" + addr + "/"); err == nil {
		t.Error("the first process's address still answers after stop")
	}
	if err := syscall.Kill(hostPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("first process (host pid %d) still exists after stop: kill 0: %v", hostPID, err)
	}
}

// TestCtlErrorsAndExec checks failure reporting and running a command in
// the container's namespaces.
func TestCtlErrorsAndExec(t *testing.T) { Each(t, testCtlErrorsAndExec) }

func testCtlErrorsAndExec(t *testing.T, sd *Systemd) {
	_, err := sd.Ctl("start", sd.UnitName("sdtest-absent")+".service")
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("starting a missing unit: err=%v, want one saying it is not found", err)
	}
	out, err := sd.Exec("cat", "/proc/1/comm")
	if err != nil || strings.TrimSpace(out) != "systemd" {
		t.Errorf("PID 1 inside is %q (%v), want systemd", out, err)
	}
	host, _ := os.Hostname()
	if out, err := sd.Exec("hostname"); err != nil || strings.TrimSpace(out) == host {
		t.Errorf("hostname inside = %q (%v); want the container's own, not the host's %q", out, err, host)
	}
	if st, err := sd.Ctl("is-system-running"); strings.TrimSpace(st) != "running" {
		t.Logf("is-system-running: %q %v", st, err)
	}
}

// TestReuseNeedsRunningContainer: a state directory without a running
// container is refused with a reason, not used.
func TestReuseNeedsRunningContainer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	t.Setenv(EnvState, dir)
	if c, reason := findOrBoot(Host, false); c != nil || !strings.Contains(reason, "no container runs there") {
		t.Errorf("findOrBoot with an empty state dir = %v, %q", c, reason)
	}
	if err := os.WriteFile(filepath.Join(dir, "leader.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, reason := findOrBoot(Host, false); c != nil || !strings.Contains(reason, "not running") {
		t.Errorf("findOrBoot with a leader.pid that is not systemd = %v, %q", c, reason)
	}
}

// TestFailedUnitJournalResetFailed: a unit whose process fails ends
// failed, its output is in the journal, and ResetFailed clears it.
func TestFailedUnitJournalResetFailed(t *testing.T) { Each(t, testFailedUnitJournalResetFailed) }

func testFailedUnitJournalResetFailed(t *testing.T, sd *Systemd) {
	unit := sd.UnitName("sdtest-fail") + ".service"
	sd.WriteUnit(unit, "[Service]\nExecStart=/bin/sh -c 'echo boom-$$; exit 3'\n")
	if out, err := sd.Ctl("start", unit); err != nil {
		t.Fatalf("systemctl start: %v %s", err, out)
	}
	if err := sd.WaitProp(unit, "ActiveState", "failed", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := sd.Show(unit, "Result"); got != "exit-code" {
		t.Errorf("Result=%q, want exit-code", got)
	}
	if j := sd.Journal(unit); !strings.Contains(j, "boom-") || !strings.Contains(j, "status=3") {
		t.Errorf("journal lacks the output or the exit status:\n%s", j)
	}
	sd.ResetFailed(unit)
	if got := sd.Show(unit, "ActiveState"); got != "inactive" {
		t.Errorf("after reset-failed, ActiveState=%q, want inactive", got)
	}
	if err := sd.WaitProp(unit, "ActiveState", "active", 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), `"inactive"`) {
		t.Errorf("WaitProp for a state that does not come: %v", err)
	}
}

// TestMissingTreeSkipsWithTheCommand: without a Debian tree, and without
// a real systemd being required, the Trixie flavor is not booted (nothing
// is downloaded behind a developer's back); the reason names the command
// that makes the tree.
func TestMissingTreeSkipsWithTheCommand(t *testing.T) {
	dir, reason := tree("/src/.ci/systemd/start-systemd.sh", "nosuchsuite", false)
	if dir != "" || !strings.Contains(reason, "bash /src/.ci/systemd/debian-tree.sh nosuchsuite") || !strings.Contains(reason, treeDir("nosuchsuite")) {
		t.Errorf("tree for a suite without a tree = %q, %q; want no dir and a reason naming the command and the directory", dir, reason)
	}
}

// TestFlavorsLeftOutSkip: HITLESS_SYSTEMD_FLAVORS=host leaves the Trixie
// subtest out, by name, without booting it.
func TestFlavorsLeftOutSkip(t *testing.T) {
	t.Setenv(EnvFlavors, "host")
	ran := map[string]bool{}
	t.Run("each", func(t *testing.T) {
		Each(t, func(t *testing.T, sd *Systemd) { ran[sd.Flavor().Name] = true })
	})
	if ran[Trixie.Name] {
		t.Error("the trixie flavor ran although " + EnvFlavors + "=host")
	}
}

// TestReportNamesEachSubtest: with HITLESS_SYSTEMD_REPORT set, every
// subtest of Each leaves a line naming it, its systemd and its outcome.
func TestReportNamesEachSubtest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report")
	t.Setenv(EnvReport, path)
	t.Setenv(EnvFlavors, "host")
	var version string
	t.Run("each", func(t *testing.T) {
		Each(t, func(t *testing.T, sd *Systemd) { version = sd.Version() })
	})
	if version == "" {
		t.Skip("no systemd ran here")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	line := string(b)
	if strings.Count(line, "\n") != 1 || !strings.HasPrefix(line, "ok ") || !strings.Contains(line, "TestReportNamesEachSubtest/each/systemd") || !strings.Contains(line, version) {
		t.Errorf("report %q: want one ok line naming the subtest and %q", line, version)
	}
}

//go:build linux

package sdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Bounds on every wait.
const (
	// cmdTimeout bounds one command run in the container (systemctl,
	// journalctl, ...). It is above the 60 s TimeoutStopSec of the unit
	// the README recommends, so that a bounded `systemctl stop` of such a
	// unit can finish.
	cmdTimeout = 2 * time.Minute
	// bootTimeout bounds start-systemd.sh start (boot is ~0.3 s).
	bootTimeout = 90 * time.Second
	// cleanupStopTimeout bounds stopping a test's unit at cleanup, before
	// it is killed.
	cleanupStopTimeout = 30 * time.Second
)

// Systemd is a real systemd, seen from one test. Its methods are safe for
// concurrent use; methods without an error result fail the test (t.Fatal)
// on error, so call them from the test's goroutine.
type Systemd struct {
	t testing.TB
	c *container

	shareOnce sync.Once
	share     string

	mu    sync.Mutex
	units map[string]bool // written by WriteUnit, removed at cleanup
}

// container is one running systemd-nspawn container, shared by all tests
// of the process.
type container struct {
	flavor  Flavor
	state   string // start-systemd.sh's SDCI_STATE
	leader  int    // host PID of the container's PID 1
	version string // first line of systemctl --version: "systemd 252 (252.39-1~deb12u1)"
	major   int    // 252
	owned   bool   // booted by this process (and stopped when it exits)
	script  string // start-systemd.sh, if owned
	name    string // SDCI_NAME, if owned
}

var (
	bootMu     sync.Mutex
	booted     = map[string]*container{} // by flavor name
	bootFailed = map[string]string{}     // why booting failed; not retried in this process
	over       bool                      // the tests are over: boot nothing
	nameSeq    atomic.Int64
)

// Boot returns the machine's own systemd for t (flavor [Host]); see
// [BootFlavor].
func Boot(t testing.TB) *Systemd {
	t.Helper()
	return BootFlavor(t, Host)
}

// BootFlavor returns a real systemd of flavor f for t: the container named
// by the flavor's environment variable (HITLESS_SYSTEMD_STATE,
// HITLESS_SYSTEMD_TRIXIE_STATE) if that is set, else one this test
// process boots on first use (about 0.3 s) and stops when it exits. When
// neither is possible it skips t with the reason, or fails t if
// HITLESS_REQUIRE_SYSTEMD=1.
func BootFlavor(t testing.TB, f Flavor) *Systemd {
	t.Helper()
	require := required(os.Getenv)
	c, reason := bootOnce(f, require)
	if c == nil {
		giveUp(t, require, reason)
		return nil // not reached: giveUp ends the test
	}
	if !c.alive() {
		giveUp(t, require, fmt.Sprintf("the container of %s (PID 1 = host pid %d) is no longer running", c.state, c.leader))
		return nil
	}
	return &Systemd{t: t, c: c}
}

// Each runs test once per flavor of systemd ([Flavors]: the machine's own,
// then Debian 13's), each as a subtest named after the version it runs on
// ("systemd252", "systemd257"; "systemd-trixie" when that flavor cannot
// boot here, and the subtest is skipped or, with HITLESS_REQUIRE_SYSTEMD=1,
// fails; or it is left out by HITLESS_SYSTEMD_FLAVORS). Each subtest logs
// the version in full first. The subtests run in parallel with each other
// (t.Parallel), after the calling test's function has returned: do not
// call t.Setenv in them, and do not expect them to have run when Each
// returns (wrap Each in a t.Run for that).
func Each(t *testing.T, test func(t *testing.T, sd *Systemd)) {
	t.Helper()
	require := required(os.Getenv)
	for _, f := range Flavors {
		ok, why := selected(os.Getenv(EnvFlavors), f)
		name := "systemd-" + f.Name
		if ok {
			// On failure, BootFlavor gives the reason in the subtest.
			if c, _ := bootOnce(f, require); c != nil {
				name = "systemd" + strconv.Itoa(c.major)
			}
		}
		t.Run(name, func(t *testing.T) {
			if !ok {
				t.Skip("sdtest: skipped: " + why)
			}
			// The flavors' containers are separate, and a test's units,
			// ports and files are its own: the two run side by side,
			// which halves the wall time of the slow real-systemd tests.
			t.Parallel()
			sd := BootFlavor(t, f)
			t.Logf("on %s (%s flavor, container %s)", sd.c.version, f.Name, sd.c.state)
			begin := time.Now()
			t.Cleanup(func() {
				outcome := "ok"
				switch {
				case t.Failed():
					outcome = "FAIL"
				case t.Skipped():
					outcome = "skipped"
				}
				report(t, reportLine(t.Name(), sd.c.version, outcome, time.Since(begin)))
			})
			test(t, sd)
		})
	}
}

// stopOwned stops the containers this process booted, if any; Boot
// skips (or fails) from then on.
func stopOwned() error {
	bootMu.Lock()
	cs := booted
	booted, over = map[string]*container{}, true
	bootMu.Unlock()
	var errs []error
	for _, c := range cs {
		if !c.owned {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
		cmd := exec.CommandContext(ctx, "/bin/bash", c.script, "stop")
		cmd.Env = append(os.Environ(), "SDCI_STATE="+c.state, "SDCI_NAME="+c.name)
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("sdtest: stopping the container %s: %v\n%s", c.name, err, out))
			continue
		}
		// The watcher, which runs (a no-op) stop once this process has
		// exited, would remove these too, a moment after go test returns.
		os.Remove(c.state + ".stop.log")
		os.Remove(c.state + ".watcher.pid")
	}
	return errors.Join(errs...)
}

func bootOnce(f Flavor, require bool) (*container, string) {
	bootMu.Lock()
	defer bootMu.Unlock()
	if c := booted[f.Name]; c != nil {
		return c, ""
	}
	if over {
		return nil, "the tests are over"
	}
	if r := bootFailed[f.Name]; r != "" {
		return nil, r
	}
	c, reason := findOrBoot(f, require)
	if c == nil {
		bootFailed[f.Name] = reason
		return nil, reason
	}
	if reason := c.readVersion(); reason != "" {
		bootFailed[f.Name] = reason
		return nil, reason
	}
	booted[f.Name] = c
	return c, ""
}

// readVersion asks the container's systemd its version.
func (c *container) readVersion() string {
	out, err := c.nsenter(false, "systemctl", "--version")
	if err != nil {
		return "systemctl --version in the container of " + c.state + ": " + err.Error()
	}
	c.version, _, _ = strings.Cut(out, "\n")
	f := strings.Fields(c.version)
	if len(f) < 2 || f[0] != "systemd" {
		return fmt.Sprintf("systemctl --version in the container of %s says %q", c.state, c.version)
	}
	c.major, err = strconv.Atoi(f[1])
	if err != nil {
		return fmt.Sprintf("systemctl --version in the container of %s says %q", c.state, c.version)
	}
	return ""
}

func findOrBoot(f Flavor, require bool) (*container, string) {
	p := probe{goos: runtime.GOOS, euid: os.Geteuid(), script: findScript()}
	for _, prog := range []string{"systemd-nspawn", "nsenter", "unshare", "setsid"} {
		if _, err := exec.LookPath(prog); err != nil {
			p.missing = append(p.missing, prog)
		}
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil && f.suite == "" {
		p.missing = append(p.missing, "/lib/systemd/systemd")
	}
	if state := os.Getenv(f.envState); state != "" {
		// Reusing a running container needs only root and nsenter.
		if p.euid != 0 {
			return nil, f.envState + " is set, but entering the container needs root"
		}
		c := &container{flavor: f, state: state}
		b, err := os.ReadFile(filepath.Join(state, "leader.pid"))
		if err != nil {
			return nil, fmt.Sprintf("%s=%s, but no container runs there: %v", f.envState, state, err)
		}
		c.leader, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || !c.alive() {
			return nil, fmt.Sprintf("%s=%s, but its container is not running (leader.pid %q)", f.envState, state, strings.TrimSpace(string(b)))
		}
		return c, ""
	}
	if r := unavailable(p); r != "" {
		return nil, r
	}
	lower := "/"
	if f.suite != "" {
		var reason string
		if lower, reason = tree(p.script, f.suite, require); reason != "" {
			return nil, reason
		}
	}
	return bootOwn(p.script, f, lower)
}

// treeTimeout bounds making a Debian tree (~40 s).
const treeTimeout = 10 * time.Minute

// tree returns the Debian tree of suite, made by debian-tree.sh: reused
// when it exists; made now only when a real systemd is required (it
// downloads ~300 MB), else the reason why not.
func tree(script, suite string, require bool) (string, string) {
	dir := treeDir(suite)
	maker := filepath.Join(filepath.Dir(script), "debian-tree.sh")
	if _, err := os.Stat(filepath.Join(dir, ".hitless-debian-tree")); err == nil {
		return dir, ""
	}
	if !require {
		return "", fmt.Sprintf("no Debian %s tree at %s: `bash %s %s` makes it (~40 s, ~300 MB, once)", suite, dir, maker, suite)
	}
	ctx, cancel := context.WithTimeout(context.Background(), treeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/bash", maker, suite, dir)
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Sprintf("%s %s: %v\n%s", maker, suite, err, out)
	}
	return dir, ""
}

// findScript looks for .ci/systemd/start-systemd.sh in the working
// directory (a package directory, under go test) and its parents.
func findScript() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		s := filepath.Join(dir, ".ci", "systemd", "start-systemd.sh")
		if _, err := os.Stat(s); err == nil {
			return s
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// ownPrefix starts the names of the containers test processes boot:
// hitless-sdtest-<flavor>-<pid>.
const ownPrefix = "hitless-sdtest-"

// bootOwn boots a container of flavor f for this process over the root
// lower, named after the flavor and the process's PID, and starts the
// watcher that stops it when the process exits, however it exits (even
// SIGKILL or a go test timeout).
func bootOwn(script string, f Flavor, lower string) (*container, string) {
	name := ownPrefix + f.Name + "-" + strconv.Itoa(os.Getpid())
	state := filepath.Join("/var/tmp", name)
	env := append(os.Environ(), "SDCI_STATE="+state, "SDCI_NAME="+name, "SDCI_NO_INSTALL=1", "SDCI_LOWER="+lower)

	cleanStale()

	// The watcher: waits for EOF on its stdin (all write ends closed: this
	// process is gone), then stops the container. setsid: a ^C to go test's
	// process group must not kill it before it has done its job. Its
	// output goes to a file outside the state directory (which stop
	// deletes); stop's own errors are rare and kept there.
	// The write end is a raw close-on-exec descriptor that is never closed
	// (an *os.File could be closed by its finalizer) nor inherited.
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, "pipe: " + err.Error()
	}
	r := os.NewFile(uintptr(p[0]), "watcher-stdin")
	logf, err := os.OpenFile(state+".stop.log", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		r.Close()
		syscall.Close(p[1])
		return nil, err.Error()
	}
	watcher := exec.Command("/bin/sh", "-c", `cat >/dev/null; /bin/bash "$0" stop && rm -f "$SDCI_STATE.stop.log" "$SDCI_STATE.watcher.pid"`, script)
	watcher.Env = env
	watcher.Stdin = r
	watcher.Stdout = logf
	watcher.Stderr = logf
	watcher.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = watcher.Start()
	r.Close()
	logf.Close()
	if err != nil {
		syscall.Close(p[1])
		return nil, "starting the watcher: " + err.Error()
	}
	// Not waited for: it outlives this process. It is recorded so that a
	// later process can tell a stale container from one being stopped.
	if err := os.WriteFile(state+".watcher.pid", []byte(strconv.Itoa(watcher.Process.Pid)), 0o644); err != nil {
		return nil, err.Error()
	}
	_ = watcher.Process.Release()

	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/bash", script, "start")
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Sprintf("%s start: %v\n%s", script, err, out.String())
	}
	b, err := os.ReadFile(filepath.Join(state, "leader.pid"))
	if err != nil {
		return nil, err.Error()
	}
	c := &container{flavor: f, state: state, owned: true, script: script, name: name}
	if c.leader, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil || !c.alive() {
		return nil, fmt.Sprintf("container booted but its leader.pid %q is not a running systemd\n%s", b, out.String())
	}
	return c, ""
}

// cleanStale stops containers of earlier test processes whose owner and
// watcher are both gone (the machine rebooted, or someone killed them all).
func cleanStale() {
	dirs, _ := filepath.Glob("/var/tmp/" + ownPrefix + "*[0-9]")
	for _, dir := range dirs {
		name := filepath.Base(dir)
		owner, err := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
		if err != nil || owner == os.Getpid() || pidExists(owner) {
			continue
		}
		if b, err := os.ReadFile(dir + ".watcher.pid"); err == nil {
			if w, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pidExists(w) {
				continue // being stopped right now
			}
		}
		script := findScript()
		if script == "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "/bin/bash", script, "stop")
		cmd.Env = append(os.Environ(), "SDCI_STATE="+dir, "SDCI_NAME="+name)
		if cmd.Run() == nil {
			os.Remove(dir + ".watcher.pid")
			os.Remove(dir + ".stop.log")
		}
		cancel()
	}
}

// pidExists reports whether a process (zombies included) has this PID.
func pidExists(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// alive reports whether the container's PID 1 is a running systemd whose
// private bus socket exists.
func (c *container) alive() bool {
	if c.leader <= 0 {
		return false
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(c.leader) + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
		return false
	}
	fi, err := os.Stat("/proc/" + strconv.Itoa(c.leader) + "/root/run/systemd/private")
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// nsenter runs args in the container's namespaces (all of them with all,
// else mount, PID, UTS and IPC: what systemctl needs), bounded by cmdTimeout.
// It returns stdout; the error carries stderr.
func (c *container) nsenter(all bool, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	ns := []string{"--mount", "--pid", "--uts", "--ipc"}
	if all {
		ns = []string{"--all"}
	}
	argv := append([]string{"--target", strconv.Itoa(c.leader)}, ns...)
	argv = append(append(argv, "--"), args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	// A clean environment: the test's (GOFLAGS, NOTIFY_SOCKET, SYSTEMD_*,
	// ...) must not leak into the container's tools.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER="}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", cmdTimeout, err)
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Ctl runs systemctl ARGS against the container's systemd and returns its
// standard output; on failure (non-zero exit, timeout after 2 minutes)
// the error carries the exit status and standard error.
func (s *Systemd) Ctl(args ...string) (string, error) {
	return s.c.nsenter(false, append([]string{"systemctl", "--no-pager"}, args...)...)
}

// Exec runs a command inside the container (all its namespaces), for
// example Exec("journalctl", "--no-pager", "-u", unit) or
// Exec("kill", "-HUP", pid) with a container PID. Like Ctl, it returns
// standard output and is bounded by 2 minutes.
func (s *Systemd) Exec(args ...string) (string, error) {
	return s.c.nsenter(true, args...)
}

// Version is the first line of the container's systemctl --version, like
// "systemd 257 (257.13-1~deb13u1)".
func (s *Systemd) Version() string { return s.c.version }

// Major is the container's systemd version number, like 257.
func (s *Systemd) Major() int { return s.c.major }

// Flavor is the flavor of the container's systemd.
func (s *Systemd) Flavor() Flavor { return s.c.flavor }

// StateDir is the container's state directory (start-systemd.sh's
// SDCI_STATE).
func (s *Systemd) StateDir() string { return s.c.state }

// LeaderPID is the host PID of the container's systemd (PID 1 inside).
func (s *Systemd) LeaderPID() int { return s.c.leader }

// UnitName returns base with a suffix unique to this test process and
// call, so that tests sharing a container (in CI, every package's tests)
// do not collide: UnitName("app") + ".service".
func (s *Systemd) UnitName(base string) string {
	return fmt.Sprintf("%s-%d-%d", base, os.Getpid(), nameSeq.Add(1))
}

// WriteUnit writes a unit file (name like "app.service", "app.socket")
// into the container's /etc/systemd/system, with StartLimitIntervalSec=0
// added (see NoStartLimit), and runs daemon-reload. At the end of the
// test the unit is stopped (killed if it does not stop within 30 s), its
// file removed, systemd reloaded and the unit's failed state reset; if
// the test failed, its journal is logged.
func (s *Systemd) WriteUnit(name, content string) {
	s.t.Helper()
	if name == "" || strings.ContainsAny(name, "/\x00") || name[0] == '.' {
		s.t.Fatalf("sdtest: bad unit name %q", name)
	}
	path := filepath.Join(s.c.state, "units", name)
	tmp := path + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, []byte(NoStartLimit(content)), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		s.t.Fatal(err)
	}
	s.mu.Lock()
	first := !s.units[name]
	if first {
		if s.units == nil {
			s.units = map[string]bool{}
		}
		s.units[name] = true
	}
	s.mu.Unlock()
	if first {
		s.t.Cleanup(func() { s.removeUnit(name, path) })
	}
	s.DaemonReload()
}

func (s *Systemd) removeUnit(name, path string) {
	if s.t.Failed() {
		s.t.Logf("sdtest: journal of %s:\n%s", name, s.Journal(name))
	}
	if !s.c.alive() {
		os.Remove(path)
		return
	}
	if out, err := s.Ctl("stop", "--no-block", name); err != nil {
		s.t.Logf("sdtest: cleanup: systemctl stop %s: %v %s", name, err, out)
	}
	if err := s.WaitProp(name, "ActiveState", "inactive|failed", cleanupStopTimeout); err != nil {
		s.t.Logf("sdtest: cleanup: %v; killing it", err)
		s.Ctl("kill", "--signal=SIGKILL", name)
		if err := s.WaitProp(name, "ActiveState", "inactive|failed", 10*time.Second); err != nil {
			s.t.Errorf("sdtest: cleanup: %v", err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.t.Errorf("sdtest: cleanup: %v", err)
	}
	if out, err := s.Ctl("daemon-reload"); err != nil {
		s.t.Errorf("sdtest: cleanup: daemon-reload: %v %s", err, out)
	}
	s.Ctl("reset-failed", name) // fails harmlessly if the unit is gone
}

// DaemonReload runs systemctl daemon-reload.
func (s *Systemd) DaemonReload() {
	s.t.Helper()
	if out, err := s.Ctl("daemon-reload"); err != nil {
		s.t.Fatalf("sdtest: %v %s", err, out)
	}
}

// SharePath returns a directory for this test's binaries and files that
// exists at the same path on the host and inside the container, so that
// ExecStart= paths work unchanged. It is removed at the end of the test
// (after the units of WriteUnit are stopped).
func (s *Systemd) SharePath() string {
	s.t.Helper()
	s.shareOnce.Do(func() {
		dir, err := os.MkdirTemp(filepath.Join(s.c.state, "share"), fmt.Sprintf("test-%d-", os.Getpid()))
		if err != nil {
			s.t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			s.t.Fatal(err)
		}
		s.share = dir
		s.t.Cleanup(func() { os.RemoveAll(dir) })
	})
	return s.share
}

// Show returns one property of a unit (systemctl show -p PROP --value).
func (s *Systemd) Show(unit, prop string) string {
	s.t.Helper()
	out, err := s.Ctl("show", "-p", prop, "--value", unit)
	if err != nil {
		s.t.Fatalf("sdtest: %v", err)
	}
	return strings.TrimSuffix(out, "\n")
}

// MainPID returns the unit's main PID, a PID of the container's PID
// namespace (0 if it has none).
func (s *Systemd) MainPID(unit string) int {
	s.t.Helper()
	v := s.Show(unit, "MainPID")
	pid, err := strconv.Atoi(v)
	if err != nil {
		s.t.Fatalf("sdtest: MainPID of %s: %q", unit, v)
	}
	return pid
}

// HostPID maps a PID of the container's PID namespace to the host's PID of
// the same process (whose /proc/<pid> a test can read, or signal).
func (s *Systemd) HostPID(pid int) (int, error) {
	return hostPID(s.c.leader, pid)
}

// hostPID finds the process in the PID namespace of leader whose PID there
// is pid: the last field of NSpid: in /proc/<hostpid>/status.
func hostPID(leader, pid int) (int, error) {
	if pid == 1 {
		return leader, nil
	}
	ns, err := os.Readlink("/proc/" + strconv.Itoa(leader) + "/ns/pid")
	if err != nil {
		return 0, fmt.Errorf("sdtest: container's PID namespace: %w", err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := strconv.Itoa(pid)
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err != nil || l != ns {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "NSpid:" && f[len(f)-1] == want {
				return strconv.Atoi(f[1])
			}
		}
	}
	return 0, fmt.Errorf("sdtest: no process with PID %d in the container", pid)
}

// Journal returns the unit's journal (journalctl -u UNIT), after asking
// journald to write out what it has received. On error it returns the
// error's text, so that it can go straight into a test log.
func (s *Systemd) Journal(unit string) string {
	s.Exec("journalctl", "--sync")
	out, err := s.Exec("journalctl", "--no-pager", "--no-hostname", "-o", "short-precise", "-u", unit)
	if err != nil {
		return out + err.Error()
	}
	return out
}

// ResetFailed runs systemctl reset-failed for the given units (all units
// when none is given).
func (s *Systemd) ResetFailed(units ...string) {
	s.t.Helper()
	if out, err := s.Ctl(append([]string{"reset-failed"}, units...)...); err != nil {
		s.t.Fatalf("sdtest: %v %s", err, out)
	}
}

// WaitProp waits until a unit's property has one of the values in want
// ("|"-separated, e.g. "inactive|failed"), polling every 20 ms for at most
// timeout. The error says what the property was at the end.
func (s *Systemd) WaitProp(unit, prop, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		out, err := s.Ctl("show", "-p", prop, "--value", unit)
		last = strings.TrimSpace(out)
		if err == nil {
			for _, w := range strings.Split(want, "|") {
				if last == w {
					return nil
				}
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sdtest: %s %s is %q, not %q after %v", unit, prop, last, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

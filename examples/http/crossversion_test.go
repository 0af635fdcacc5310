//go:build unix

package main

// Upgrades between releases: the binary a generation starts may have been
// built with another release of hitless than its own, and what passes
// between the two (side channel, socket names, stderr, the control
// socket's wire format) is versioned. These tests build the previous
// release from git next to this tree and upgrade each into the other under
// load, and check that a binary speaking a handoff version this one cannot
// work with is refused cleanly.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

// defaultPreviousReleases are the releases a generation of this tree must
// upgrade from and roll back to: the last release, v0.2.0 at f82306f
// (handoff version 1: the side channel, without files and state), and
// 372a6c3, the last commit before handoff version 1 (no side channel,
// listeners under tableflip key ("hitless", name), the generation in
// HITLESS_GENERATION, the real stderr as "hitless.stderr").
// HITLESS_PREVIOUS_RELEASE names one other commit to test against instead.
//
// They are named by commit, not by tag: CI's clone of main carries no tags.
var defaultPreviousReleases = []string{"f82306f", "372a6c3"}

func previousReleases() []string {
	if c := os.Getenv("HITLESS_PREVIOUS_RELEASE"); c != "" {
		return []string{c}
	}
	return defaultPreviousReleases
}

// crossUpgradeTimeout is the -upgrade-timeout the servers get: short, so
// that a new generation that cannot take over fails the test quickly, and
// far above what a race-enabled start takes.
const crossUpgradeTimeout = "10s"

// crossReloadTimeout is what hitless reload waits for the outcome: the
// upgrade timeout, the pre-flight check and a generous margin.
const crossReloadTimeout = "30s"

// TestUpgradeAcrossReleases upgrades each previous release into this one and
// this one into the previous release (a rollback), each time under
// keep-alive and new-connection load, continues the chain with a second
// upgrade, and drives the control socket with this tree's cmd/hitless
// against whichever release serves.
//
// Without git or the previous release's commit (a shallow clone) it skips,
// unless HITLESS_REQUIRE_CROSSVERSION=1 (CI), which makes it fail.
func TestUpgradeAcrossReleases(t *testing.T) {
	for _, commit := range previousReleases() {
		t.Run(commit, func(t *testing.T) { upgradeAcrossReleases(t, commit) })
	}
}

func upgradeAcrossReleases(t *testing.T, commit string) {
	prevSrc := previousReleaseTree(t, commit)
	dir := t.TempDir()
	bins := map[string]string{
		"old": filepath.Join(dir, "http-old"),
		"new": filepath.Join(dir, "http-new"),
	}
	clis := map[string]string{
		"old": filepath.Join(dir, "hitless-old"),
		"new": filepath.Join(dir, "hitless"),
	}
	begin := time.Now()
	crossBuild(t,
		func(ctx context.Context) error {
			return buildIn(ctx, prevSrc, "./examples/http", bins["old"], "-X main.version=old")
		},
		func(ctx context.Context) error {
			return harness.Build(ctx, "./examples/http", bins["new"], true, "-X main.version=new")
		},
		func(ctx context.Context) error { return harness.Build(ctx, "./cmd/hitless", clis["new"], false, "") },
		func(ctx context.Context) error { return buildIn(ctx, prevSrc, "./cmd/hitless", clis["old"], "") },
	)
	t.Logf("built the previous release, this one and cmd/hitless in %v", since(begin))

	for _, d := range []struct{ name, from, to string }{
		{"old_to_new", "old", "new"},
		{"new_to_old_rollback", "new", "old"},
	} {
		t.Run(d.name, func(t *testing.T) {
			crossUpgrade(t, clis, d.from, d.to, bins)
		})
	}
}

// crossUpgrade runs one direction: from serves, to is installed, and the
// server upgrades to it by SIGHUP, then once through `hitless reload` of
// the *from* release (the command an operator still has installed: the
// control socket's wire must work across releases both ways), and once
// more by SIGHUP. Both releases' `hitless status` are asked throughout.
func crossUpgrade(t *testing.T, clis map[string]string, from, to string, bins map[string]string) {
	dir := t.TempDir()
	s := startInstalled(t, dir, bins[from], "-upgrade-timeout", crossUpgradeTimeout, "-drain-timeout", "10s")
	direction := from + " → " + to
	t.Logf("%s: generation 1 (%s, pid %d) serving on %s", direction, from, s.PID(), s.addr)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	load := startCrossLoad(t, ctx, s.addr)
	defer load.stop() // on a t.Fatal; idempotent
	time.Sleep(300 * time.Millisecond)

	gen, served := 1, []int{s.PID()}
	// settle lets the load reach the generation now serving before the
	// next step.
	settle := func() { time.Sleep(300 * time.Millisecond) }
	// The control socket, against the release that serves before the
	// upgrade.
	checkStatuses := func(when, serving string) {
		for _, rel := range []string{"new", "old"} {
			checkStatus(t, when+" (hitless of the "+rel+" release)", clis[rel], s, serving, gen)
		}
	}
	checkStatuses(direction+", before the upgrade", from)

	// The cross-version upgrade, by SIGHUP.
	install(t, bins[to], s.path)
	u := crossSIGHUP(t, ctx, direction, s)
	gen, served = gen+1, append(served, u.New)
	checkServes(t, direction+", after the upgrade", s, to, u.New)
	if g, ok := loggedGeneration(s.log, u.New); !ok {
		t.Logf("%s: NOTE: the log has no ready line for pid %d", direction, u.New)
	} else if g != gen {
		t.Logf("%s: NOTE: pid %d logged itself ready as generation %d; it is generation %d", direction, u.New, g, gen)
	}
	settle()

	// The control socket, against the release that took over.
	checkStatuses(direction+", after the upgrade", to)
	if crossReload(t, ctx, direction+", "+to+" → "+to+" through hitless reload of the "+from+" release", clis[from], s, to) {
		gen, served = gen+1, append(served, s.PID())
		settle()
	}

	// The chain goes on: to upgrades into itself.
	u = crossSIGHUP(t, ctx, to+" → "+to+" (after "+direction+")", s)
	gen, served = gen+1, append(served, u.New)
	checkServes(t, direction+", after the second upgrade", s, to, u.New)
	settle()
	checkStatuses(direction+", at the end", to)

	res := load.stop()
	for _, r := range res {
		t.Logf("%s: %s", direction, r.String())
		if r.Failed() != 0 {
			t.Errorf("%s: %s: %d of %d requests failed: %v", direction, r.Kind, r.Failed(), r.Requests, r.Errors)
		}
		// The traffic really spanned the releases: every generation
		// answered some of it.
		for _, pid := range served {
			if r.PIDs[pid] == 0 {
				t.Errorf("%s: %s: no response from generation pid %d (generations %v answered)", direction, r.Kind, pid, r.PIDs)
			}
		}
	}
	stopCross(t, direction, s)
}

// TestIncompatibleHandoffFailsCleanly installs a binary that speaks handoff
// version 99 and needs at least 99 from its peer, asks for a reload, and
// checks that it fails with the reason while the old generation serves on
// untouched; then a normal binary takes over.
func TestIncompatibleHandoffFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	normal, v99, cli := filepath.Join(dir, "http-normal"), filepath.Join(dir, "http-v99"), filepath.Join(dir, "hitless")
	begin := time.Now()
	crossBuild(t,
		func(ctx context.Context) error {
			return harness.Build(ctx, "./examples/http", normal, true, "-X main.version=normal")
		},
		func(ctx context.Context) error {
			return harness.Build(ctx, "./examples/http", v99, true,
				"-X main.version=v99 -X github.com/hitlessgo/hitless/internal/handoff.versions=99/99")
		},
		func(ctx context.Context) error { return harness.Build(ctx, "./cmd/hitless", cli, false, "") },
	)
	t.Logf("built the normal binary, the 99/99 one and cmd/hitless in %v", since(begin))

	s := startInstalled(t, t.TempDir(), normal, "-upgrade-timeout", crossUpgradeTimeout)
	pid := s.PID()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	load := startCrossLoad(t, ctx, s.addr)
	defer load.stop()
	time.Sleep(300 * time.Millisecond)

	install(t, v99, s.path)
	r := runHitless(t, cli, "reload", "-socket", s.control, "-timeout", crossReloadTimeout)
	t.Logf("hitless reload of the 99/99 binary: exit status %d after %v: %s", r.code, r.took, r.out)
	if r.hung() {
		load.stop()
		quitForStacks(t, s, pid)
		t.Fatalf("hitless reload of the 99/99 binary got no outcome within %s (-upgrade-timeout is %s): %s",
			crossReloadTimeout, crossUpgradeTimeout, r.out)
	}
	if r.code != 1 {
		t.Errorf("hitless reload of the 99/99 binary: exit status %d, want 1; output: %s", r.code, r.out)
	}
	if !strings.Contains(r.out, "incompatible handoff version") {
		t.Errorf("hitless reload of the 99/99 binary does not say %q: %s", "incompatible handoff version", r.out)
	}
	if now := s.PID(); now != pid {
		t.Errorf("PID file names %d after the failed reload, want the old generation %d", now, pid)
	}
	checkServes(t, "after the failed reload", s, "normal", pid)
	// The failed new generation is gone: the pid the error names, and
	// anything else in the server's process group besides the server.
	if m := regexp.MustCompile(`pid (\d+)\)`).FindStringSubmatch(r.out); m != nil {
		child, _ := strconv.Atoi(m[1])
		if child == pid {
			t.Errorf("the error names the serving generation's pid %d as the failed one", pid)
		} else if err := waitGone(child, 5*time.Second); err != nil {
			t.Errorf("the failed new generation: %v", err)
		}
	} else {
		t.Errorf("the error names no pid for the failed new generation: %s", r.out)
	}
	if others, err := groupMembers(pid); err != nil {
		t.Logf("cannot list the server's process group: %v", err)
	} else if len(others) > 0 {
		t.Errorf("after the failed reload, processes besides the server (%d) in its group: %s", pid, strings.Join(others, "; "))
	}
	st := runHitless(t, cli, "status", "-socket", s.control)
	t.Logf("hitless status after the failed reload: exit status %d: %s", st.code, st.out)
	if st.code != 0 || !strings.Contains(st.out, fmt.Sprintf("pid %d,", pid)) {
		t.Errorf("hitless status after the failed reload: exit status %d, output %s; want 0 and pid %d", st.code, st.out, pid)
	}

	// A normal binary takes over.
	install(t, normal, s.path)
	r = runHitless(t, cli, "reload", "-socket", s.control, "-timeout", crossReloadTimeout)
	t.Logf("hitless reload of the normal binary: exit status %d after %v: %s", r.code, r.took, r.out)
	if r.code != 0 {
		load.stop()
		if r.hung() {
			quitForStacks(t, s, pid)
		}
		t.Fatalf("hitless reload of a normal binary after the failed one: exit status %d: %s\nserver log (last lines):\n%s", r.code, r.out, logTail(s.log, 40))
	}
	newPID := s.PID()
	if newPID == pid {
		t.Errorf("hitless reload succeeded but the PID file still names %d", pid)
	} else if st, err := s.WaitExit(ctx, pid); err != nil && !errors.Is(err, harness.ErrNotReaped) {
		t.Errorf("the old generation after the reload: %v", err)
	} else if err == nil && (!st.Exited() || st.ExitStatus() != 0) {
		t.Errorf("the old generation ended with %v, want exit status 0", st)
	}
	checkServes(t, "after the normal reload", s, "normal", newPID)

	for _, r := range load.stop() {
		t.Log(r.String())
		if r.Failed() != 0 {
			t.Errorf("%s: %d of %d requests failed: %v", r.Kind, r.Failed(), r.Requests, r.Errors)
		}
	}
	stopCross(t, "incompatible", s)
}

// previousReleaseTree checks out the release commit into a temporary git
// worktree, removed at cleanup, and returns the directory there that
// corresponds to this module's root.
func previousReleaseTree(t *testing.T, commit string) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("HITLESS_REQUIRE_CROSSVERSION") == "1" {
			t.Fatalf("%s (HITLESS_REQUIRE_CROSSVERSION=1)", msg)
		}
		t.Skipf("%s; set HITLESS_REQUIRE_CROSSVERSION=1 to fail instead of skipping", msg)
	}
	if _, err := exec.LookPath("git"); err != nil {
		unavailable("cannot test against the previous release %s: no git: %v", commit, err)
	}
	modRoot, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	top, err := git(modRoot, "rev-parse", "--show-toplevel")
	if err != nil {
		unavailable("cannot test against the previous release %s: %s is not in a git checkout: %v", commit, modRoot, err)
	}
	prefix, err := git(modRoot, "rev-parse", "--show-prefix")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := git(top, "rev-parse", "--verify", "--quiet", commit+"^{commit}"); err != nil {
		shallow, _ := git(top, "rev-parse", "--is-shallow-repository")
		hint := ""
		if shallow == "true" {
			hint = " (this is a shallow clone: git fetch --unshallow)"
		}
		unavailable("cannot test against the previous release: commit %s is not in this clone%s", commit, hint)
	}
	wt := filepath.Join(t.TempDir(), "previous-release")
	begin := time.Now()
	if _, err := git(top, "worktree", "add", "--detach", wt, commit); err != nil {
		t.Fatalf("checking out the previous release %s: %v", commit, err)
	}
	t.Cleanup(func() {
		if _, err := git(top, "worktree", "remove", "--force", wt); err != nil {
			t.Errorf("removing the worktree of the previous release: %v", err)
		}
	})
	head, _ := git(wt, "log", "-1", "--format=%h %s")
	t.Logf("previous release: %s, checked out in %v", head, since(begin))
	return filepath.Join(wt, prefix)
}

// git runs git in dir and returns its trimmed standard output.
func git(dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// buildIn is harness.Build for a module root other than this one: go build
// -race -ldflags ldflags -o out pkg, in root. GOWORK=off keeps a workspace
// of this tree from leaking into the other's build.
func buildIn(ctx context.Context, root, pkg, out, ldflags string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build %s in %s: %w", pkg, root, err)
	}
	args := []string{"build", "-race", "-o", out, "-ldflags", ldflags, pkg}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %v in %s: %w\n%s", args, root, err, b)
	}
	return nil
}

// crossBuild runs the builds concurrently, bounded by 5 minutes, and fails
// t with every error.
func crossBuild(t *testing.T, builds ...func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		wg.Go(func() { errs[i] = b(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// crossServer is a server started from a binary at path, the file it
// upgrades to.
type crossServer struct {
	*harness.Server
	addr, log, control, path string
}

// startInstalled installs bin as dir/http, starts it with a PID file and a
// control socket in dir and args, and waits until it is ready.
func startInstalled(t *testing.T, dir, bin string, args ...string) *crossServer {
	t.Helper()
	s := &crossServer{
		addr:    harness.FreeAddrT(t),
		control: filepath.Join(dir, "control.sock"),
		path:    filepath.Join(dir, "http"),
	}
	install(t, bin, s.path)
	pidFile := filepath.Join(dir, "http.pid")
	begin := time.Now()
	s.Server, s.log = harness.StartT(t, harness.Config{
		Binary:  s.path,
		Args:    append([]string{"-addr", s.addr, "-pidfile", pidFile, "-control", s.control}, args...),
		PIDFile: pidFile,
	})
	t.Logf("started %s (pid %d) in %v", filepath.Base(bin), s.PID(), since(begin))
	return s
}

// install puts a copy of from at to the way an operator should: written
// next to it, then renamed over it, so that the running binary is never
// written in place and the path always names a complete file.
func install(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := to + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
}

// crossSIGHUP upgrades s by SIGHUP and waits for the old generation to
// exit; on failure it ends the test, saying which direction failed and
// quoting the server's log.
func crossSIGHUP(t *testing.T, ctx context.Context, direction string, s *crossServer) harness.Upgrade {
	t.Helper()
	uctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	u, err := s.Upgrade(uctx)
	if err != nil {
		if u.Old != 0 && errors.Is(err, context.DeadlineExceeded) {
			quitForStacks(t, s, u.Old)
		}
		t.Fatalf("upgrade %s by SIGHUP failed: %v\nserver log (the old generation's, last lines):\n%s", direction, err, logTail(s.log, 40))
	}
	t.Logf("upgrade %s by SIGHUP: %d -> %d ready after %v, old exited after %v", direction, u.Old, u.New,
		u.Ready.Sub(u.Signalled).Round(time.Millisecond), u.OldExited.Sub(u.Signalled).Round(time.Millisecond))
	if u.OldReaped && (!u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0) {
		t.Errorf("upgrade %s: the old generation %d ended with %v, want exit status 0\nserver log (last lines):\n%s",
			direction, u.Old, u.OldStatus, logTail(s.log, 40))
	}
	return u
}

// crossReload upgrades s through `hitless reload` and reports whether it
// did. A failure is an error of t, not the end of the test: the chain is
// continued by SIGHUP.
func crossReload(t *testing.T, ctx context.Context, step, cli string, s *crossServer, version string) bool {
	t.Helper()
	old := s.PID()
	r := runHitless(t, cli, "reload", "-socket", s.control, "-timeout", crossReloadTimeout)
	if r.hung() {
		quitForStacks(t, s, old)
		t.Fatalf("%s: this tree's hitless reload against the serving release (%s) got no outcome within %s: %s",
			step, version, crossReloadTimeout, r.out)
	}
	if r.code != 0 {
		t.Errorf("%s: this tree's hitless reload against the serving release (%s): exit status %d after %v: %s",
			step, version, r.code, r.took, r.out)
		if s.PID() != old {
			t.Errorf("%s: the reload failed, yet the PID file changed from %d to %d", step, old, s.PID())
		}
		return false
	}
	t.Logf("%s: %v: %s", step, r.took, r.out)
	now := s.PID()
	if now == old {
		t.Errorf("%s: hitless reload said ok, but the PID file still names %d", step, old)
		return false
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if st, err := s.WaitExit(wctx, old); err != nil && !errors.Is(err, harness.ErrNotReaped) {
		t.Errorf("%s: the old generation %d: %v", step, old, err)
	} else if err == nil && (!st.Exited() || st.ExitStatus() != 0) {
		t.Errorf("%s: the old generation %d ended with %v, want exit status 0", step, old, st)
	}
	checkServes(t, step, s, version, now)
	return true
}

var statusLine = regexp.MustCompile(`pid (\d+), generation (\d+), (\S+)`)

// checkStatus asks the serving release for its status with this tree's
// cmd/hitless. It checks the pid, and the generation if this release
// serves (the previous one cannot learn it from a newer parent, so its
// count is only logged).
func checkStatus(t *testing.T, step, cli string, s *crossServer, version string, gen int) {
	t.Helper()
	r := runHitless(t, cli, "status", "-socket", s.control)
	if r.code != 0 {
		t.Errorf("%s: this tree's hitless status against the serving release (%s): exit status %d after %v: %s",
			step, version, r.code, r.took, r.out)
		return
	}
	m := statusLine.FindStringSubmatch(r.out)
	if m == nil {
		t.Errorf("%s: hitless status against %s: unexpected output: %s", step, version, r.out)
		return
	}
	t.Logf("%s: hitless status against %s in %v: %s", step, version, r.took, r.out)
	if pid := s.PID(); m[1] != strconv.Itoa(pid) {
		t.Errorf("%s: hitless status says pid %s, the PID file %d", step, m[1], pid)
	}
	if got := m[2]; got != strconv.Itoa(gen) {
		if version == "old" {
			t.Logf("%s: NOTE: the previous release reports generation %s, it is generation %d", step, got, gen)
		} else {
			t.Errorf("%s: hitless status says generation %s, want %d", step, got, gen)
		}
	}
	if m[3] != "serving" {
		t.Errorf("%s: hitless status says state %q, want serving", step, m[3])
	}
}

// checkServes checks, on a new connection, that version answers from pid,
// and that pid writes to the service's stderr again, not to the pipe its
// predecessor read while it started.
func checkServes(t *testing.T, step string, s *crossServer, version string, pid int) {
	t.Helper()
	if fd2, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/2", pid)); err == nil && fd2 != s.log {
		t.Errorf("%s: pid %d (%s) has %s as its stderr, want the service's, %s", step, pid, version, fd2, s.log)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + s.addr + "/")
	if err != nil {
		t.Errorf("%s: GET /: %v", step, err)
		return
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	gotV, gotPID := resp.Header.Get("X-Version"), resp.Header.Get("X-Pid")
	if resp.StatusCode != 200 || gotV != version || gotPID != strconv.Itoa(pid) {
		t.Errorf("%s: answered %d by version %q, pid %s; want 200 by version %q, pid %d", step, resp.StatusCode, gotV, gotPID, version, pid)
		return
	}
	t.Logf("%s: version %s answers (pid %d)", step, version, pid)
}

// stopCross stops the serving generation with SIGTERM and wants exit 0.
func stopCross(t *testing.T, what string, s *crossServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	st, err := s.Stop(ctx)
	if err != nil || !st.Exited() || st.ExitStatus() != 0 {
		t.Errorf("%s: stop: %v, %v; want exit status 0\nserver log (last lines):\n%s", what, st, err, logTail(s.log, 40))
		return
	}
	t.Logf("%s: stopped in %v", what, since(begin))
}

// crossLoad is keep-alive and new-connection traffic, bounded in time (by
// the ctx it was started with) and in count.
type crossLoad struct {
	cancel context.CancelFunc
	done   chan []loadgen.Result
	once   sync.Once
	res    []loadgen.Result
}

func startCrossLoad(t *testing.T, ctx context.Context, addr string) *crossLoad {
	t.Helper()
	lctx, cancel := context.WithCancel(ctx)
	l := &crossLoad{cancel: cancel, done: make(chan []loadgen.Result, 1)}
	cfgs := []loadgen.Config{
		{Kind: loadgen.KeepAlive, Workers: 4, Pace: time.Millisecond},
		{Kind: loadgen.NewConn, Workers: 2, Pace: time.Millisecond},
	}
	go func() {
		res := make([]loadgen.Result, len(cfgs))
		var wg sync.WaitGroup
		for i, cfg := range cfgs {
			cfg.Network, cfg.Addr, cfg.MaxRequests = "tcp", addr, 1_000_000
			wg.Go(func() {
				r, err := loadgen.Run(lctx, cfg)
				if err != nil {
					t.Error(err)
				}
				res[i] = r
			})
		}
		wg.Wait()
		l.done <- res
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the load, waits for the requests in flight and returns the
// results; idempotent.
func (l *crossLoad) stop() []loadgen.Result {
	l.once.Do(func() {
		l.cancel()
		l.res = <-l.done
	})
	return l.res
}

// hitlessResult is what one run of cmd/hitless came to.
type hitlessResult struct {
	code int // -1: it did not run, or did not exit in time
	out  string
	took time.Duration
}

// hung says whether hitless gave up waiting for an outcome.
func (r hitlessResult) hung() bool {
	return r.code == -1 || strings.Contains(r.out, "no outcome within")
}

// quitForStacks sends SIGQUIT to pid, a generation that seems stuck, so
// that the Go runtime writes every goroutine's stack to the server's log
// (printed when the test fails), and waits a little for it to exit.
func quitForStacks(t *testing.T, s *crossServer, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		t.Logf("SIGQUIT to pid %d for its goroutine stacks: %v", pid, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.WaitExit(ctx, pid)
	t.Errorf("sent SIGQUIT to the stuck pid %d: its goroutine stacks are in the server log", pid)
}

func runHitless(t *testing.T, cli string, args ...string) hitlessResult {
	t.Helper()
	return runCLI(90*time.Second, cli, args...)
}

// runCLI runs cmd/hitless, bounded by limit on top of its own -timeout.
func runCLI(limit time.Duration, cli string, args ...string) hitlessResult {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	cmd.WaitDelay = time.Second
	begin := time.Now()
	out, err := cmd.CombinedOutput()
	r := hitlessResult{out: strings.TrimSpace(string(out)), took: since(begin)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		r.code = -1
		r.out += " [" + err.Error() + "]"
	}
	return r
}

// waitGone waits until pid no longer exists.
func waitGone(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			state := "alive"
			if b, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); rerr == nil {
				state = strings.TrimSpace(string(b))
			}
			return fmt.Errorf("pid %d still exists %v later: %s", pid, timeout, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// groupMembers lists the processes in process group pgid other than pgid
// itself, zombies included, from /proc (Linux).
func groupMembers(pgid int) ([]string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var others []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pgid {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) {
			others = append(others, fmt.Sprintf("pid %d state %s: %s", pid, f[0], strings.TrimSpace(s[:i+1])))
		}
	}
	return others, nil
}

// loggedGeneration finds the generation pid announced in its "ready" log
// line (slog text: msg=ready pid=P generation=N), which every release
// writes.
func loggedGeneration(path string, pid int) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	m := regexp.MustCompile(`msg=ready pid=` + strconv.Itoa(pid) + ` generation=(\d+)`).FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	g, err := strconv.Atoi(string(m[1]))
	return g, err == nil
}

// logTail returns the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

//go:build unix

package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/loadgen"
	"go.uber.org/goleak"
)

// binDir holds binaries built once per test run.
var binDir string

type testMain struct{ m *testing.M }

// Run wraps m.Run with the setup and teardown goleak.VerifyTestMain leaves
// no room for (it calls os.Exit itself).
func (tm testMain) Run() int {
	dir, err := os.MkdirTemp("", "harness-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	return tm.m.Run()
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testMain{m})
}

var (
	baselineOnce sync.Once
	baselineBin  string
	baselineErr  error
)

// baselineBinary builds internal/baseline once for all tests.
func baselineBinary(t testing.TB) string {
	t.Helper()
	baselineOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		baselineBin = filepath.Join(binDir, "baseline")
		baselineErr = Build(ctx, "./internal/baseline", baselineBin, false, "")
	})
	if baselineErr != nil {
		t.Fatal(baselineErr)
	}
	return baselineBin
}

// logFile creates the servers' log in t's temp dir and prints it if t
// fails.
func logFile(t testing.TB) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(f.Name()); err == nil {
				t.Logf("server log:\n%s", b)
			}
		}
		f.Close()
	})
	return f
}

// startBaseline starts the baseline server on a free port; Close runs at
// cleanup.
func startBaseline(t *testing.T) (*Server, string) {
	t.Helper()
	return startBinary(t, baselineBinary(t))
}

// startScript runs a /bin/sh script as the server; $0 in the script is
// the pid file.
func startScript(t *testing.T, script string, readyTimeout time.Duration) (*Server, error) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, Config{
		Binary:       "/bin/sh",
		Args:         []string{"-c", script, pidFile},
		PIDFile:      pidFile,
		Log:          logFile(t),
		ReadyTimeout: readyTimeout,
	})
	if err == nil {
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	return s, err
}

// writePID is the shell fragment that announces readiness like the real
// servers: write, then rename.
const writePID = `echo $$ > "$0.tmp" && mv "$0.tmp" "$0"; `

// expectPID checks with a short load run that every response comes from
// pid.
func expectPID(t *testing.T, addr string, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := loadgen.Run(ctx, loadgen.Config{Kind: loadgen.KeepAlive, Addr: addr, Workers: 2, MaxRequests: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed() != 0 || res.PIDs[pid] != 20 {
		t.Errorf("want 20 responses from %d: %v %v %q", pid, res, res.PIDs, res.Errors)
	}
}

// assertGone checks that pid no longer exists, not even as a zombie.
func assertGone(t *testing.T, s *Server, pid int) {
	t.Helper()
	if gone, _, _ := s.exitStatus(pid); !gone {
		t.Errorf("pid %d still alive", pid)
	}
	if runtime.GOOS == "linux" {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("pid %d still in /proc (zombie?)", pid)
		}
	}
}

func wantExit0(t *testing.T, what string, st syscall.WaitStatus) {
	t.Helper()
	if !st.Exited() || st.ExitStatus() != 0 {
		t.Errorf("%s: %s, want exit status 0", what, describe(st, true))
	}
}

func TestBaselineUpgradesAndStop(t *testing.T) {
	s, addr := startBaseline(t)
	pids := []int{s.PID()}
	expectPID(t, addr, pids[0])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 3 {
		u, err := s.Upgrade(ctx)
		if err != nil {
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		t.Logf("upgrade %d: %d -> %d, ready after %v, old exited %v later", i+1, u.Old, u.New,
			u.Ready.Sub(u.Signalled), u.OldExited.Sub(u.Ready))
		if u.Old != pids[len(pids)-1] || u.New == u.Old || s.PID() != u.New {
			t.Errorf("upgrade %d: %+v, pid file says %d", i+1, u, s.PID())
		}
		// On Linux every old generation is our child by the time it exits
		// (the first one directly, the others by reparenting).
		if runtime.GOOS == "linux" && !u.OldReaped {
			t.Errorf("upgrade %d: old generation %d not reaped by the harness", i+1, u.Old)
		}
		if u.OldReaped {
			wantExit0(t, fmt.Sprintf("upgrade %d: old generation", i+1), u.OldStatus)
		}
		assertGone(t, s, u.Old)
		pids = append(pids, u.New)
		expectPID(t, addr, u.New)
	}
	st, err := s.Stop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantExit0(t, "stop", st)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		assertGone(t, s, pid)
	}
	if err := syscall.Kill(-s.first, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists: %v", s.first, err)
	}
}

func TestCloseKillsEveryGeneration(t *testing.T) {
	s, _ := startBaseline(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := s.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Start a third generation and close while it may still be starting:
	// Close must find it even if the pid file never named it.
	if err := s.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	assertGone(t, s, u.Old)
	assertGone(t, s, u.New)
	if err := syscall.Kill(-s.first, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists: %v", s.first, err)
	}
}

func TestStartFailsWhenServerExits(t *testing.T) {
	start := time.Now()
	_, err := startScript(t, "exit 3", 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Start = %v, want an error with exit status 3", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Start took %v to notice the exit", d)
	}
}

func TestStartReadyTimeout(t *testing.T) {
	start := time.Now()
	_, err := startScript(t, "exec sleep 30", 200*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "is missing") {
		t.Fatalf("Start = %v, want a deadline error saying the pid file is missing", err)
	}
	// The process that hung was alive: it was asked for its stacks (a
	// sleep just dies of SIGQUIT) and the error says what it was doing.
	if !strings.Contains(err.Error(), "was alive, state S") || !strings.Contains(err.Error(), "sent SIGQUIT") {
		t.Errorf("Start = %v, want it to say the process was alive, sleeping, and got SIGQUIT", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Start took %v: the stuck process did not end at SIGQUIT", d)
	}
}

func TestUpgradeWaitsForNewGeneration(t *testing.T) {
	// Ignores SIGHUP (the ignored disposition survives exec), so no new
	// generation ever comes.
	s, err := startScript(t, `trap "" HUP; `+writePID+`exec sleep 30`, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = s.Upgrade(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for a new generation") {
		t.Fatalf("Upgrade = %v, want a deadline error naming the stage", err)
	}
}

func TestUpgradeOldDiesWithoutSuccessor(t *testing.T) {
	s, err := startScript(t, writePID+`exec sleep 30`, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = s.Upgrade(ctx)
	if err == nil || !strings.Contains(err.Error(), "killed by hangup") {
		t.Fatalf("Upgrade = %v, want an error saying the old generation died of SIGHUP", err)
	}
}

func TestWaitExitTimeout(t *testing.T) {
	s, err := startScript(t, writePID+`exec sleep 30`, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.WaitExit(ctx, s.PID()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitExit = %v, want deadline exceeded", err)
	}
	st, err := s.Stop(context.Background())
	if err != nil || !st.Signaled() || st.Signal() != syscall.SIGTERM {
		t.Fatalf("Stop = %s, %v; want killed by SIGTERM", describe(st, true), err)
	}
}

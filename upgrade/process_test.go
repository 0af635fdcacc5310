//go:build unix

package upgrade

// Process-level tests: the test binary re-executes itself as a server that
// uses this package (see serverMain), and each test drives real generations
// of it through upgrades under load.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

// Environment of the re-executed server.
const (
	envRole     = "HITLESS_TEST_ROLE"      // "server"
	envMode     = "HITLESS_TEST_MODE_FILE" // file whose content says how the next generation behaves
	envResults  = "HITLESS_TEST_RESULTS"   // file that gets one JSON line per Upgrade call
	envNetwork  = "HITLESS_TEST_NETWORK"
	envAddr     = "HITLESS_TEST_ADDR"
	envPIDFile  = "HITLESS_TEST_PIDFILE"
	envUpgradeT = "HITLESS_TEST_UPGRADE_TIMEOUT"
	envCrashLp  = "HITLESS_TEST_CRASHLOOP" // CrashLoopAfter; unset means disabled
	envControl  = "HITLESS_TEST_CONTROL"   // control socket path
	envProbatn  = "HITLESS_TEST_PROBATION"
	envFDStore  = "HITLESS_TEST_FDSTORE"
	envPreflt   = "HITLESS_TEST_PREFLIGHT" // a Preflight that takes this long, unless stopped
	envSignals  = "HITLESS_TEST_SIGNALS"   // "library": signals go to Upgrader.HandleSignals
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "server":
		os.Exit(serverMain())
	case "probe":
		os.Exit(probeMain())
	case "lifecycle":
		os.Exit(lifecycleMain())
	case "victim":
		os.Exit(victimMain())
	case "pidreplacer":
		os.Exit(pidReplacerMain())
	}
	goleak.VerifyTestMain(m)
}

// upgradeResult is what the server records about each Upgrade call.
type upgradeResult struct {
	PID        int    `json:"pid"`
	Err        string `json:"err"`
	Failed     bool   `json:"child_failed"`
	Reason     string `json:"reason"`
	ChildPID   int    `json:"child_pid"`
	ExitStatus int    `json:"exit_status"`
	Signal     int    `json:"signal"`
}

// serverMain is one generation of the test server. The mode file decides
// how it behaves before it is ready: ok, crash, exit, hang, slow, secret,
// announce-slow=<duration> or die-after-1s.
func serverMain() int {
	mode := "ok"
	if b, err := os.ReadFile(os.Getenv(envMode)); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		mode = strings.TrimSpace(string(b))
	}
	timeout, _ := time.ParseDuration(os.Getenv(envUpgradeT))
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	probation, _ := time.ParseDuration(os.Getenv(envProbatn))
	crashLoop := -1
	if n, err := strconv.Atoi(os.Getenv(envCrashLp)); err == nil {
		crashLoop = n
	}
	var preflight func(context.Context, string) error
	if d, err := time.ParseDuration(os.Getenv(envPreflt)); err == nil {
		// A slow pre-flight check (a -check run of the new binary).
		preflight = func(ctx context.Context, binary string) error {
			log.Info("test preflight: started", "binary", binary, "for", d)
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				log.Info("test preflight: ended early", "err", ctx.Err())
				return ctx.Err()
			}
		}
	}
	upg, err := New(Options{
		PIDFile: os.Getenv(envPIDFile), UpgradeTimeout: timeout, DrainTimeout: 10 * time.Second, Logger: log,
		CrashLoop: CrashLoop{After: crashLoop, Backoff: time.Second}, ControlSocket: os.Getenv(envControl),
		Probation: Probation{For: probation},
		FDStore:   os.Getenv(envFDStore) == "1",
		Preflight: preflight,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer upg.Stop()
	ln, err := upg.Listen(context.Background(), "http", os.Getenv(envNetwork), os.Getenv(envAddr))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if d, ok := strings.CutPrefix(mode, "announce-slow="); ok {
		// A slow start that says when it is under way.
		dur, _ := time.ParseDuration(d)
		fmt.Fprintln(os.Stderr, "test server: up, ready in", dur)
		time.Sleep(dur)
	}
	switch mode {
	case "secret":
		// A new generation that fails and says why with a secret in it,
		// as a program that cannot reach its database would.
		fmt.Fprintln(os.Stderr, "config error: cannot connect to postgres://app:hunter2@db/app")
		return 1
	case "crash":
		// A real crash: a nil dereference, with the runtime told to die by
		// the signal rather than exit 2.
		debug.SetTraceback("crash")
		var p *int
		return *p
	case "exit":
		fmt.Fprintln(os.Stderr, "test server: bad configuration")
		return 3
	case "hang":
		time.Sleep(time.Hour) // killed by the parent at UpgradeTimeout
	case "slow":
		time.Sleep(2 * time.Second) // a slow start: the attempt is in progress meanwhile
	case "die-after-1s":
		// Comes up, serves, and gives up a second later.
		time.AfterFunc(time.Second, func() {
			fmt.Fprintln(os.Stderr, "test server: lost the database, giving up")
			os.Exit(4)
		})
	}

	srv := &drain.HTTP{Server: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", strconv.Itoa(os.Getpid()))
		if name := r.URL.Query().Get("env"); name != "" {
			// What a process the application spawns would inherit.
			w.Header().Set("X-Env", fmt.Sprintf("%q", os.Getenv(name)))
		}
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			time.Sleep(d)
		}
		if r.URL.Query().Get("spawn") != "" {
			// A process the application starts: what did it inherit?
			writeSpawned(w)
			return
		}
		io.WriteString(w, "ok\n")
	})}}
	go srv.Serve(ln)

	sigs := make(chan os.Signal, 4)
	var handling sync.WaitGroup
	if os.Getenv(envSignals) == "library" {
		// SIGHUPs that arrive during an upgrade are queued and passed on
		// to the new generation; no results are recorded.
		defer upg.HandleSignals()()
	} else {
		signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
		handling.Add(1)
		go func() {
			defer handling.Done()
			for sig := range sigs {
				if sig == syscall.SIGTERM {
					upg.Stop()
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err := upg.Upgrade(ctx)
				cancel()
				recordResult(err)
				if err == nil {
					return // this generation is exiting
				}
			}
		}()
	}
	defer signal.Stop(sigs)
	err = upg.Run(context.Background(), srv)
	signal.Stop(sigs)
	if upg.Status().State == control.StateDraining {
		handling.Wait() // its result is recorded before the process exits
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func recordResult(err error) {
	r := upgradeResult{PID: os.Getpid()}
	if err != nil {
		r.Err = err.Error()
		r.Failed = errors.Is(err, ErrChildFailed)
	}
	var ce *ChildError
	if errors.As(err, &ce) {
		r.Reason, r.ChildPID, r.ExitStatus, r.Signal = ce.Reason.String(), ce.PID, ce.ExitStatus, int(ce.Signal)
	}
	b, _ := json.Marshal(r)
	f, ferr := os.OpenFile(os.Getenv(envResults), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if ferr != nil {
		fmt.Fprintln(os.Stderr, ferr)
		return
	}
	defer f.Close()
	f.Write(append(b, '\n'))
}

// testServer is a running generation chain of the re-executed test binary.
type testServer struct {
	*harness.Server
	t                 *testing.T
	dir, bin          string
	modeFile, results string
	network, addr     string
	log               string
	seen              int
}

func startTestServer(t *testing.T, network string, env ...string) *testServer {
	t.Helper()
	dir := t.TempDir()
	ts := &testServer{
		t: t, dir: dir, bin: filepath.Join(dir, "server"),
		modeFile: filepath.Join(dir, "mode"), results: filepath.Join(dir, "results"),
		network: network,
	}
	ts.installBinary()
	if network == "unix" {
		ts.addr = filepath.Join(dir, "http.sock")
	} else {
		ts.addr = harness.FreeAddrT(t)
	}
	pidFile := filepath.Join(dir, "server.pid")
	s, log := harness.StartT(t, harness.Config{
		Binary:  ts.bin,
		Args:    []string{"-test.run=^$"},
		PIDFile: pidFile,
		Env: append([]string{
			envRole + "=server", envMode + "=" + ts.modeFile, envResults + "=" + ts.results,
			envNetwork + "=" + network, envAddr + "=" + ts.addr, envPIDFile + "=" + pidFile,
			envUpgradeT + "=1s"}, env...),
	})
	ts.log = log
	ts.Server = s
	return ts
}

// installBinary puts a copy of the test binary where the server execs its
// next generation from.
func (ts *testServer) installBinary() {
	ts.t.Helper()
	self, err := os.Executable()
	if err != nil {
		ts.t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		ts.t.Fatal(err)
	}
	tmp := ts.bin + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		ts.t.Fatal(err)
	}
	if err := os.Rename(tmp, ts.bin); err != nil {
		ts.t.Fatal(err)
	}
}

func (ts *testServer) setMode(mode string) {
	ts.t.Helper()
	if err := os.WriteFile(ts.modeFile, []byte(mode), 0o600); err != nil {
		ts.t.Fatal(err)
	}
}

// nextResult waits for the next line the server writes to the results file.
func (ts *testServer) nextResult() upgradeResult {
	ts.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if f, err := os.Open(ts.results); err == nil {
			var lines []string
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
			f.Close()
			if len(lines) > ts.seen {
				var r upgradeResult
				if err := json.Unmarshal([]byte(lines[ts.seen]), &r); err != nil {
					ts.t.Fatal(err)
				}
				ts.seen++
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.t.Fatal("no upgrade result within 20s")
	return upgradeResult{}
}

// startLoad runs keep-alive and new-connection traffic until the returned
// function is called, which returns the merged result.
func startLoad(t *testing.T, network, addr string) func() []loadgen.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	kinds := []loadgen.Config{
		{Kind: loadgen.KeepAlive, Network: network, Addr: addr, Workers: 4, Pace: time.Millisecond},
		{Kind: loadgen.NewConn, Network: network, Addr: addr, Workers: 2, Pace: 2 * time.Millisecond},
	}
	out := make(chan loadgen.Result, len(kinds))
	for _, cfg := range kinds {
		go func() {
			r, err := loadgen.Run(ctx, cfg)
			if err != nil {
				t.Error(err)
			}
			out <- r
		}()
	}
	return func() []loadgen.Result {
		cancel()
		var rs []loadgen.Result
		for range kinds {
			rs = append(rs, <-out)
		}
		return rs
	}
}

func checkNoFailures(t *testing.T, rs []loadgen.Result) {
	t.Helper()
	for _, r := range rs {
		t.Log(r.String())
		if r.Requests == 0 {
			t.Errorf("%s: no requests were sent", r.Kind)
		}
		if r.Failed() != 0 {
			t.Errorf("%s: %d failed requests: %v", r.Kind, r.Failed(), r.Errors)
		}
	}
}

func TestFailedUpgradeLeavesOldGenerationServing(t *testing.T) {
	ts := startTestServer(t, "tcp")
	first := ts.PID()
	stopLoad := startLoad(t, "tcp", ts.addr)

	for _, tc := range []struct {
		mode, reason string
		check        func(r upgradeResult) error
	}{
		{"crash", control.ReasonCrashed.String(), func(r upgradeResult) error {
			if r.Signal != int(syscall.SIGABRT) {
				return fmt.Errorf("signal %d, want SIGABRT", r.Signal)
			}
			if !strings.Contains(r.Err, "its last output: panic: runtime error: invalid memory address") {
				return fmt.Errorf("error %q lacks the child's panic message", r.Err)
			}
			return nil
		}},
		{"exit", control.ReasonExited.String(), func(r upgradeResult) error {
			if r.ExitStatus != 3 {
				return fmt.Errorf("exit status %d, want 3", r.ExitStatus)
			}
			if !strings.Contains(r.Err, "its last output: test server: bad configuration") {
				return fmt.Errorf("error %q lacks what the child wrote to stderr", r.Err)
			}
			return nil
		}},
		{"hang", control.ReasonTimedOut.String(), func(upgradeResult) error { return nil }},
		{"missing", control.ReasonStartFailed.String(), func(r upgradeResult) error {
			if !strings.Contains(r.Err, "no such file") {
				return fmt.Errorf("error %q does not say the binary is missing", r.Err)
			}
			return nil
		}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			if tc.mode == "missing" {
				os.Remove(ts.bin)
				defer ts.installBinary()
			} else {
				ts.setMode(tc.mode)
			}
			if err := ts.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			r := ts.nextResult()
			t.Logf("Upgrade returned: %s", r.Err)
			if !r.Failed || r.Reason != tc.reason {
				t.Fatalf("Upgrade result %+v, want a ChildError with reason %q", r, tc.reason)
			}
			if err := tc.check(r); err != nil {
				t.Fatal(err)
			}
			if r.PID != first || ts.PID() != first {
				t.Fatalf("serving pid changed from %d to %d", first, ts.PID())
			}
			if tc.mode != "missing" && (r.ChildPID == 0 || processAlive(r.ChildPID)) {
				t.Fatalf("failed child %d still alive (or unknown)", r.ChildPID)
			}
		})
	}

	// A good binary still upgrades afterwards.
	ts.setMode("ok")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	up, err := ts.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := ts.nextResult(); r.Err != "" {
		t.Fatalf("good upgrade returned %q", r.Err)
	}
	time.Sleep(200 * time.Millisecond) // traffic on the new generation
	rs := stopLoad()
	checkNoFailures(t, rs)
	for _, r := range rs {
		for pid := range r.PIDs {
			if pid != first && pid != up.New {
				t.Errorf("%s: a response came from pid %d, which never became ready", r.Kind, pid)
			}
		}
		if r.PIDs[up.New] == 0 {
			t.Errorf("%s: no response from the new generation %d", r.Kind, up.New)
		}
	}
	status, err := ts.Stop(ctx)
	if err != nil || status.ExitStatus() != 0 {
		t.Fatalf("stop: status %v, err %v; want exit 0", status, err)
	}
}

func TestUnixSocketHandedOverAndRemovedAtStop(t *testing.T) {
	ts := startTestServer(t, "unix")
	stopLoad := startLoad(t, "unix", ts.addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 3 {
		if _, err := ts.Upgrade(ctx); err != nil {
			t.Fatal(err)
		}
		if r := ts.nextResult(); r.Err != "" {
			t.Fatalf("upgrade returned %q", r.Err)
		}
		if fi, err := os.Lstat(ts.addr); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("socket file after an upgrade: %v", err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	checkNoFailures(t, stopLoad())
	last := ts.PID()
	status, err := ts.Stop(ctx)
	if err != nil || status.ExitStatus() != 0 {
		t.Fatalf("stop: status %v, err %v; want exit 0", status, err)
	}
	if _, err := os.Lstat(ts.addr); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left after stop: %v", err)
	}
	// The last generation logged after its predecessors had exited: its
	// stderr is the service's, not a pipe to a dead parent.
	log, _ := os.ReadFile(ts.log)
	if want := fmt.Sprintf("msg=\"stopping; draining\" pid=%d", last); !strings.Contains(string(log), want) {
		t.Fatalf("log lacks %q from the last generation:\n%s", want, log)
	}
	if _, err := os.Lstat(filepath.Join(ts.dir, "server.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("PID file left after stop: %v", err)
	}
}

func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// state is the field after the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestUpgradeWhilePreviousGenerationDrainsWaits(t *testing.T) {
	ts := startTestServer(t, "tcp")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := ts.PID()

	// A slow request keeps the first generation draining after it hands over.
	slow := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + ts.addr + "/?sleep=2s")
		if err == nil {
			if resp.Header.Get("X-Pid") != strconv.Itoa(first) {
				err = fmt.Errorf("slow request served by %s, want %d", resp.Header.Get("X-Pid"), first)
			}
			resp.Body.Close()
		}
		slow <- err
	}()
	time.Sleep(200 * time.Millisecond)
	// Wait only for the new generation; the first one is still draining.
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	second, err := ts.WaitPIDChange(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if err := errorOf(ts.nextResult()); err != nil {
		t.Fatal(err)
	}
	if !processAlive(first) {
		t.Fatal("first generation exited before its slow request finished")
	}
	begin := time.Now()
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r := ts.nextResult()
	if r.Err != "" {
		t.Fatalf("upgrade requested while the previous generation drained failed: %s", r.Err)
	}
	if processAlive(first) {
		t.Fatal("second upgrade finished while the first generation still lived: three generations at once")
	}
	if err := <-slow; err != nil {
		t.Fatalf("slow request: %v", err)
	}
	if waited := time.Since(begin); waited < time.Second {
		t.Fatalf("second upgrade took %v; it should have waited for the first generation's 2s request", waited)
	}
	third, err := ts.WaitPIDChange(ctx, second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("generations %d -> %d -> %d", first, second, third)
}

func TestLibraryEnvironmentDoesNotLeak(t *testing.T) {
	ts := startTestServer(t, "tcp")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := ts.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if err := errorOf(ts.nextResult()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + ts.addr + "/?env=" + "TABLEFLIP_HAS_PARENT_7DIU3")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Env"); got != `""` {
		t.Fatalf("the upgraded generation's environment has %s=%s; processes it spawns would think they were handed sockets", "TABLEFLIP_HAS_PARENT_7DIU3", got)
	}
}

func errorOf(r upgradeResult) error {
	if r.Err != "" {
		return errors.New(r.Err)
	}
	return nil
}

func TestProbationRollsBack(t *testing.T) {
	ts := startTestServer(t, "tcp", envProbatn+"=3s")
	first := ts.PID()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A new generation that dies 1 s after it is ready, within its 3 s
	// probation: the upgrade is reported failed, the first generation never
	// stopped serving.
	ts.setMode("die-after-1s")
	begin := time.Now()
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r := ts.nextResult()
	t.Logf("after %v: %s", time.Since(begin).Round(time.Millisecond), r.Err)
	if !r.Failed || r.Reason != control.ReasonExited.String() || r.ExitStatus != 4 || !strings.Contains(r.Err, "lost the database") {
		t.Fatalf("upgrade result %+v; want the new generation's exit 4 and its last words", r)
	}
	if ts.PID() != first {
		t.Fatalf("PID file names %d, want the first generation %d", ts.PID(), first)
	}
	// From the rollback on, not a request fails.
	stopLoad := startLoad(t, "tcp", ts.addr)
	time.Sleep(500 * time.Millisecond)
	rs := stopLoad()
	checkNoFailures(t, rs)
	for _, res := range rs {
		for pid := range res.PIDs {
			if pid != first {
				t.Errorf("%s: response from %d after the rollback", res.Kind, pid)
			}
		}
	}

	// A good new generation passes its probation and takes over.
	ts.setMode("ok")
	begin = time.Now()
	up, err := ts.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := ts.nextResult(); r.Err != "" {
		t.Fatalf("good upgrade: %s", r.Err)
	}
	if took := up.Ready.Sub(begin); took < 3*time.Second {
		t.Fatalf("took over after %v, before its 3 s probation ended", took)
	}
}

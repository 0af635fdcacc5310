//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

// The tests build this command and examples/http, run the example with a
// control socket, and drive it with the command as an operator would.

var binDir, cli, server string

func TestMain(m *testing.M) {
	var err error
	binDir, err = os.MkdirTemp("", "hitless-cli")
	if err == nil {
		// World-traversable, for the test that runs the command as another user.
		err = os.Chmod(binDir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cli, server = filepath.Join(binDir, "hitless"), filepath.Join(binDir, "http")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	if err = harness.Build(ctx, "./cmd/hitless", cli, false, ""); err == nil {
		err = harness.Build(ctx, "./examples/http", server, true, "")
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.RemoveAll(binDir)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.RemoveAll(binDir)
	os.Exit(code)
}

type service struct {
	*harness.Server
	t                      *testing.T
	dir, bin, addr, socket string
	log                    string
}

// startService runs a private copy of the example (so tests can replace
// its binary) with a control socket.
func startService(t *testing.T, args ...string) *service {
	t.Helper()
	dir, err := os.MkdirTemp(binDir, "svc")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &service{t: t, dir: dir, bin: filepath.Join(dir, "http"), socket: filepath.Join(dir, "control.sock")}
	s.install(server)
	s.addr = harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "http.pid")
	hs, log := harness.StartT(t, harness.Config{
		Binary:  s.bin,
		Args:    append([]string{"-addr", s.addr, "-pidfile", pidFile, "-control", s.socket}, args...),
		PIDFile: pidFile,
	})
	s.log = log
	s.Server = hs
	return s
}

// install puts a new binary in place atomically, as a deploy would.
func (s *service) install(from string) {
	s.t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		s.t.Fatal(err)
	}
	s.installBytes(b)
}

func (s *service) installBytes(b []byte) {
	s.t.Helper()
	tmp := s.bin + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, s.bin); err != nil {
		s.t.Fatal(err)
	}
}

// hitless runs the command and returns its exit code and output.
func (s *service) hitless(args ...string) (int, string) {
	s.t.Helper()
	return runCLI(s.t, nil, append(args[:1:1], append([]string{"-socket", s.socket}, args[1:]...)...)...)
}

func runCLI(t *testing.T, cred *syscall.Credential, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running hitless %v: %v", args, err)
	}
	t.Logf("hitless %s -> %d: %s", strings.Join(args, " "), code, strings.TrimSpace(string(out)))
	return code, string(out)
}

// load runs keep-alive and new-connection traffic until stopped.
func load(t *testing.T, addr string) (stop func() []loadgen.Result) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	kinds := []loadgen.Config{
		{Kind: loadgen.KeepAlive, Network: "tcp", Addr: addr, Workers: 4, Pace: time.Millisecond},
		{Kind: loadgen.NewConn, Network: "tcp", Addr: addr, Workers: 2, Pace: 2 * time.Millisecond},
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
			r := <-out
			t.Log(r.String())
			if r.Failed() != 0 {
				t.Errorf("%s: %d requests failed: %v", r.Kind, r.Failed(), r.Errors)
			}
			if r.Requests == 0 {
				t.Errorf("%s: no traffic", r.Kind)
			}
			rs = append(rs, r)
		}
		return rs
	}
}

func script(body string) []byte {
	// Every bad binary passes the pre-flight check (-check) unless it is
	// the one that fails it.
	return []byte("#!/bin/sh\n[ \"$1\" = -check ] && exit 0\n" + body + "\n")
}

func TestReloadTellsTheTruth(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "certificate")
	if err := os.WriteFile(gate, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// -preflight: one binary below fails only the example's -check.
	s := startService(t, "-upgrade-timeout", "1s", "-crash-loop-after", "-1", "-require-file", gate, "-preflight")
	stopLoad := load(t, s.addr)

	if code, out := s.hitless("status"); code != 0 || !strings.Contains(out, "generation 1, serving") {
		t.Fatalf("status: %d %q", code, out)
	}
	if code, out := s.hitless("reload"); code != 0 || !strings.Contains(out, "generation 2") {
		t.Fatalf("good reload: %d %q", code, out)
	}
	serving := s.PID()

	for _, tc := range []struct {
		name   string
		binary []byte // nil: remove the binary
		want   string
	}{
		{"crashes", script("kill -SEGV $$"), "crashed before it was ready: killed by signal SIGSEGV"},
		// A program that dies before it reaches hitless (here a script):
		// its stderr passes through the old generation only from
		// upgrade.New on, so the error says where its words went.
		{"exits", script("echo 'line one' >&2; echo 'bad config: port 70000' >&2; exit 3"), "exited with status 3 before it was ready: it ended before it reached hitless (upgrade.New), so what it wrote is only in the service's log"},
		{"hangs", script("exec sleep 60"), "was not ready within 1s and was killed"},
		{"fails its check", []byte("#!/bin/sh\necho 'config invalid: no such port' >&2\nexit 1\n"), "pre-flight check of the new binary failed"},
		{"is missing", nil, "no such file or directory"},
		{"is not executable", []byte("not a program"), "not executable"},
		// The new generation says why over the side channel, and its
		// stderr carries its own words too.
		{"fails its readiness gate", nil, "exited with status 1 before it was ready: upgrade: readiness check failed: stat " + gate + ": no such file or directory; its last output: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.name == "fails its readiness gate":
				s.install(server)
				os.Remove(gate)
				defer os.WriteFile(gate, []byte("x"), 0o600)
			case tc.binary == nil:
				os.Remove(s.bin)
			case tc.name == "is not executable":
				s.installBytes(tc.binary)
				os.Chmod(s.bin, 0o644)
			default:
				s.installBytes(tc.binary)
			}
			code, out := s.hitless("reload", "-timeout", "30s")
			if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "still serving") {
				t.Fatalf("reload exited %d saying %q; want 1 and %q", code, out, tc.want)
			}
			if pid := s.PID(); pid != serving {
				t.Fatalf("serving pid changed %d -> %d", serving, pid)
			}
		})
	}
	s.install(server)
	if code, out := s.hitless("reload"); code != 0 || !strings.Contains(out, "generation 3") {
		t.Fatalf("reload after the fix: %d %q", code, out)
	}
	time.Sleep(100 * time.Millisecond)
	stopLoad()
	checkHistory(t, s)

	if code, out := s.hitless("stop", "-timeout", "30s"); code != 0 {
		t.Fatalf("stop: %d %q", code, out)
	}
	if _, err := os.Stat(s.socket); !os.IsNotExist(err) {
		t.Fatalf("control socket left after stop: %v", err)
	}
	if code, out := s.hitless("status", "-timeout", "2s"); code != 1 || !strings.Contains(out, "no service is listening") {
		t.Fatalf("status after stop: %d %q", code, out)
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	s := startService(t, "-crash-loop-after", "2")
	s.installBytes(script("exit 1"))
	for range 2 {
		if code, _ := s.hitless("reload"); code != 1 {
			t.Fatal("a broken binary reloaded")
		}
	}
	code, out := s.hitless("reload")
	if code != 1 || !strings.Contains(out, "refused: 2 upgrades failed in a row") {
		t.Fatalf("third reload: %d %q; want a back-off refusal", code, out)
	}
	if code, out := s.hitless("status"); code != 0 || !strings.Contains(out, "backing off after 2 failed upgrades") {
		t.Fatalf("status: %d %q", code, out)
	}
}

func get(addr, path string) (string, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	_, err = bufio.NewReader(resp.Body).ReadString('\n')
	return resp.Header.Get("X-Pid"), err
}

func TestReloadWaitsForTheDrainingGenerationOrHurriesIt(t *testing.T) {
	s := startService(t)
	slow := func() <-chan error {
		done := make(chan error, 1)
		go func() { _, err := get(s.addr, "/?sleep=10s"); done <- err }()
		time.Sleep(300 * time.Millisecond)
		return done
	}

	// Generation 1 hands over with a 10 s request in flight, then drains it.
	slow1 := slow()
	if code, _ := s.hitless("reload"); code != 0 {
		t.Fatal("first reload failed")
	}
	begin := time.Now()
	if code, out := s.hitless("reload"); code != 0 || !strings.Contains(out, "generation 3") {
		t.Fatalf("reload while the previous generation drains: %d %q", code, out)
	}
	if waited := time.Since(begin); waited < 7*time.Second {
		t.Errorf("reload took %v; it should have waited for the 10 s request", waited)
	}
	if err := <-slow1; err != nil {
		t.Errorf("the draining generation's request failed: %v", err)
	}

	// Generation 3 hands over with a 10 s request; with -hurry the next
	// reload does not wait for it, and the cut is reported.
	slow3 := slow()
	if code, _ := s.hitless("reload"); code != 0 {
		t.Fatal("reload failed")
	}
	begin = time.Now()
	if code, out := s.hitless("reload", "-hurry"); code != 0 || !strings.Contains(out, "generation 5") {
		t.Fatalf("hurried reload: %d %q", code, out)
	}
	if waited := time.Since(begin); waited > 4*time.Second {
		t.Errorf("hurried reload took %v", waited)
	}
	if err := <-slow3; err == nil {
		t.Error("the hurried generation's 10 s request was not cut")
	}
	log, _ := os.ReadFile(s.log)
	if !strings.Contains(string(log), "cutting the drain short") || !strings.Contains(string(log), "1 connection(s) cut at the deadline") {
		t.Errorf("the cut is not reported in the log:\n%s", log)
	}
}

func TestControlSocketRefusesOtherUsersAndBadInput(t *testing.T) {
	s := startService(t)
	if os.Geteuid() != 0 {
		t.Log("not root: cannot run a client as another user; checking bad input only")
	} else {
		// Even with a careless file mode, the peer's credentials decide.
		if err := os.Chmod(s.socket, 0o666); err != nil {
			t.Fatal(err)
		}
		code, out := runCLI(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "status", "-socket", s.socket)
		if code != 1 || !strings.Contains(out, "peer runs as uid 65534") {
			t.Fatalf("another user's status: %d %q; want a refusal", code, out)
		}
		code, _ = runCLI(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "reload", "-socket", s.socket)
		if code != 1 {
			t.Fatal("another user could reload")
		}
		if got := s.PID(); got == 0 {
			t.Fatal("service gone")
		}
	}
	for _, tc := range []struct{ name, in, want string }{
		{"garbage", "hello\n", "malformed"},
		{"unknown verb", `{"verb":"rm -rf"}` + "\n", "unknown verb"},
		{"unknown field", `{"verb":"status","sudo":true}` + "\n", "unknown field"},
		{"oversized", strings.Repeat("a", 10000) + "\n", "longer than 4096 bytes"},
		{"no newline", `{"verb":"status"}`, "reading the request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", s.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(15 * time.Second))
			c.Write([]byte(tc.in))
			if tc.name == "no newline" {
				c.(*net.UnixConn).CloseWrite()
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			if !strings.Contains(line, tc.want) || !strings.Contains(line, `"ok":false`) {
				t.Fatalf("answer %q; want a refusal saying %q", line, tc.want)
			}
		})
	}
	// Nothing changed, and the socket still works.
	if code, out := s.hitless("status"); code != 0 || !strings.Contains(out, "generation 1, serving") {
		t.Fatalf("status after bad input: %d %q", code, out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"explode"}, {"reload"}, {"status", "-socket", "x", "extra"}} {
		if code, _ := runCLI(t, nil, args...); code != 2 {
			t.Errorf("hitless %v exited %d, want 2", args, code)
		}
	}
}

// checkHistory checks what status says of the upgrades
// TestReloadTellsTheTruth made: two that succeeded around seven that
// failed, handed over from generation to generation.
func checkHistory(t *testing.T, s *service) {
	t.Helper()
	code, out := s.hitless("status", "-json")
	if code != 0 {
		t.Fatalf("status -json: %d %q", code, out)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -json printed %q: %v", out, err)
	}
	want := map[string]int64{"crashed": 1, "exited": 2, "timed-out": 1, "check-failed": 1, "start-failed": 2}
	if st.Totals.Upgrades != 2 || st.Totals.Failures != 7 || !maps.Equal(st.Totals.FailuresByReason, want) {
		t.Errorf("totals %+v; want 2 upgrades and failures %v", st.Totals, want)
	}
	if n := len(st.History); n != 9 || st.History[0].Outcome != control.OutcomeOK || st.History[8].Outcome != control.OutcomeOK ||
		st.History[8].To.PID != st.PID || st.History[1].Reason != "crashed" {
		t.Errorf("history of %d entries: %+v", n, st.History)
	}
	code, out = s.hitless("status")
	for _, want := range []string{"history (oldest first):", "OUTCOME", "failed: crashed", "failed: timed-out",
		"since the service started: 2 upgrades, 7 failed (check-failed 1, crashed 1, exited 2, start-failed 2, timed-out 1)"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status: %d %q lacks %q", code, out, want)
		}
	}
}

func TestStatusSchema(t *testing.T) {
	code, out := runCLI(t, nil, "status", "-schema")
	var schema map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &schema) != nil || schema["$schema"] == nil {
		t.Fatalf("status -schema: %d %q", code, out)
	}
}

func TestStatusPrintsHistory(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	st := control.Status{Version: "v2", Totals: control.Totals{Upgrades: 1, Failures: 1, FailuresByReason: map[string]int64{"exited": 1}, DrainEnded: 4, DrainCut: 1},
		History: []control.Upgrade{
			{Kind: control.KindUpgrade, Started: at, Finished: at.Add(1200 * time.Millisecond), Took: 1200 * time.Millisecond,
				From: control.Process{PID: 10, Version: "v1"}, To: control.Process{PID: 11, Version: "v2"}, Outcome: control.OutcomeOK,
				DrainedAt: at.Add(3 * time.Second), DrainTook: 1800 * time.Millisecond, DrainEnded: 4, DrainCut: 1},
			{Kind: control.KindUpgrade, Started: at.Add(time.Minute), Finished: at.Add(time.Minute + time.Second), Took: time.Second,
				From: control.Process{PID: 11, Version: "v2"}, To: control.Process{PID: 12}, Outcome: control.OutcomeFailed, Reason: "exited"},
			{Kind: control.KindUpgrade, Started: at.Add(2 * time.Minute), From: control.Process{PID: 11, Version: "v2"}, Outcome: control.OutcomeInProgress},
		}}
	var b strings.Builder
	printHistory(&b, st)
	want := `version v2
since the service started: 1 upgrades, 1 failed (exited 1), 0 taken back; drains: 4 connections ended, 1 cut
history (oldest first):
  WHEN                  FROM → TO      OUTCOME         TOOK  DRAIN  ENDED/CUT
  2026-12-01T10:00:00Z  10 v1 → 11 v2  ok              1.2s  1.8s   4/1
  2026-12-01T10:01:00Z  11 v2 → 12     failed: exited  1s    -      -
  2026-12-01T10:02:00Z  11 v2 → ?      in progress     -     -      -
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

//go:build linux

package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

// TestRollbackAfterTheFileWasReplaced: v1 serves; v2 is moved over v1's
// file and reloaded; `hitless status` names v1 as what a rollback would
// start; `hitless rollback` starts v1 again (from the file v1 ran, kept
// open, not from the path, which holds v2) and v1 answers, with no
// request failed under keep-alive and new-connection load throughout.
// A second rollback fails with a clear message: nothing older is kept.
func TestRollbackAfterTheFileWasReplaced(t *testing.T) {
	dir := t.TempDir()
	v1, v2 := filepath.Join(dir, "v1"), filepath.Join(dir, "v2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, b := range []struct{ out, version string }{{v1, "v1"}, {v2, "v2"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = harness.Build(ctx, "./examples/http", b.out, false, "-X main.version="+b.version)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	cli := faultCLI(t)
	bin := filepath.Join(dir, "http")
	install(t, v1, bin)
	sock := filepath.Join(dir, "control.sock")
	s := startBinary(t, bin, "-control", sock, "-preflight=false")
	client := control.Client{Socket: sock}

	stop := faultLoad(t, s.addr,
		loadgen.Config{Kind: loadgen.KeepAlive, Workers: 3, Pace: time.Millisecond, Timeout: 5 * time.Second},
		loadgen.Config{Kind: loadgen.NewConn, Workers: 2, Pace: time.Millisecond, Timeout: 5 * time.Second})
	time.Sleep(200 * time.Millisecond)
	if r := faultRun(cli, "rollback", "-socket", sock, "-timeout", "10s"); r.code == 0 || !strings.Contains(r.out, "nothing to roll back to") {
		t.Errorf("rollback of the first generation: %v; want a failure saying there is nothing to roll back to", r)
	}
	first := s.PID()
	install(t, v2, bin) // the deploy: v1's path now holds v2
	if err := client.Reload(ctx); err != nil {
		stop()
		t.Fatalf("reload to v2: %v", err)
	}
	if pid, version := answerFrom(t, s.addr, "v2"); version != "v2" || pid == first {
		t.Fatalf("after the reload: pid %d, version %q; want v2 from a new generation", pid, version)
	}
	if r := faultRun(cli, "status", "-socket", sock); r.code != 0 || !strings.Contains(r.out, `rollback to "v1"`) {
		t.Errorf("hitless status: %v; want it to name v1 as the rollback's target", r)
	}
	time.Sleep(200 * time.Millisecond)
	second := s.PID()
	if r := faultRun(cli, "rollback", "-socket", sock, "-timeout", "20s"); r.code != 0 {
		stop()
		t.Fatalf("hitless rollback: %v", r)
	}
	third := s.PID()
	if third == second {
		stop()
		t.Fatalf("after the rollback the PID file still names %d", second)
	}
	if pid, version := answerFrom(t, s.addr, "v1"); version != "v1" || pid != third {
		t.Errorf("after the rollback: pid %d, version %q; want v1 from pid %d", pid, version, third)
	}
	if b, err := os.ReadFile(bin); err != nil || !strings.Contains(string(b), "v2") {
		t.Errorf("the file at the binary's path should still hold v2: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if r := faultRun(cli, "rollback", "-socket", sock, "-timeout", "10s"); r.code == 0 || !strings.Contains(r.out, "nothing to roll back to") ||
		!strings.Contains(r.out, "started by a rollback") {
		t.Errorf("a second rollback: %v; want a failure saying that nothing older is kept", r)
	}
	total := loadgen.Merge(stop()...)
	t.Logf("load: %d requests, %d failed %v", total.Requests, total.Failed(), total.Failures)
	if total.Failed() != 0 || total.Requests == 0 {
		t.Errorf("%d of %d requests failed: %v", total.Failed(), total.Requests, total.Errors)
	}
	// And the rolled-back generation upgrades as any other: to v2 on disk.
	if err := client.Reload(ctx); err != nil {
		t.Fatalf("reload after the rollback: %v", err)
	}
	if _, version := answerFrom(t, s.addr, "v2"); version != "v2" {
		t.Errorf("after the reload that followed the rollback: version %q, want v2", version)
	}
}

// answerFrom returns the pid and version that answered GET /, asking
// again for up to 2 s until want answers: right after a hand-over the old
// generation may still accept a connection or two before its drain closes
// its listener (both serve the same socket, by design).
func answerFrom(t *testing.T, addr, want string) (int, string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		code, pid, version, err := getPIDVersion(addr)
		if err != nil || code != 200 {
			t.Fatalf("GET /: %d %v", code, err)
		}
		if version == want || time.Now().After(deadline) {
			return pid, version
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// getPIDVersion sends GET / on a new connection and returns the status,
// the X-Pid and the X-Version of the process that answered.
func getPIDVersion(addr string) (code, pid int, version string, err error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	return resp.StatusCode, pid, resp.Header.Get("X-Version"), nil
}

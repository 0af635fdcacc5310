//go:build unix

package main

// TestCountersContinueAcrossUpgrades builds this program (with -race),
// upgrades it 20 times under keep-alive and new-connection load and
// scrapes /metrics after each upgrade: no counter ever goes back, and
// hitless_upgrades_total ends at 20. Then a new generation fails its
// readiness gate: the failure counter goes up with the reason, and the
// old generation serves on. Last, a new generation is killed after it
// took over, while the old one drains a long request: the old one takes
// the service back, hitless_takebacks_total is 1, hitless_generation is
// the old one's again, no counter went back, and a further upgrade counts
// on from there.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

var serverBin string

func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./metrics", true, &serverBin)) }

// scrape fetches /metrics on a new connection (a kept-alive one may still
// lead to the generation that drains) and returns the hitless_ samples by
// name and labels.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s: %s", resp.Status, b)
	}
	samples := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "hitless_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return samples
}

// checkCounters fails t if a counter of prev is missing from now or lower.
func checkCounters(t *testing.T, when string, prev, now map[string]float64) {
	t.Helper()
	for name, v := range prev {
		if !strings.Contains(name, "_total") {
			continue
		}
		if w, ok := now[name]; !ok || w < v {
			t.Errorf("%s: %s went from %v to %v (present: %v)", when, name, v, w, ok)
		}
	}
}

func TestCountersContinueAcrossUpgrades(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "ready")
	if err := os.WriteFile(gate, []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, maddr := harness.FreeAddrT(t), harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "metrics.pid")
	s, _ := harness.StartT(t, harness.Config{
		Binary: serverBin,
		Args: []string{"-addr", addr, "-metrics-addr", maddr, "-pidfile", pidFile, "-require-file", gate,
			"-upgrade-timeout", "10s", "-drain-timeout", "10s", "-version", "v-test"},
		PIDFile: pidFile,
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lctx, stopLoad := context.WithCancel(ctx)
	kinds := []loadgen.Config{
		{Kind: loadgen.KeepAlive, Addr: addr, Workers: 2, Pace: 2 * time.Millisecond},
		{Kind: loadgen.NewConn, Addr: addr, Workers: 1, Pace: 5 * time.Millisecond},
	}
	results := make(chan loadgen.Result, len(kinds))
	for _, cfg := range kinds {
		go func() {
			r, err := loadgen.Run(lctx, cfg)
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	finishLoad := sync.OnceFunc(func() {
		stopLoad()
		for range kinds {
			r := <-results
			t.Log(r.String())
			if r.Requests == 0 || r.Failed() != 0 {
				t.Errorf("%s: %d requests, %d failed: %v", r.Kind, r.Requests, r.Failed(), r.Errors)
			}
		}
	})
	defer finishLoad()

	prev := scrape(t, maddr)
	if prev["hitless_upgrades_total"] != 0 || prev["hitless_generation"] != 1 || prev[`hitless_state{state="serving"}`] != 1 ||
		prev[`hitless_build_info{version="v-test"}`] != 1 {
		t.Fatalf("first generation's metrics: %v", prev)
	}
	const upgrades = 20
	for i := 1; i <= upgrades; i++ {
		if _, err := s.Upgrade(ctx); err != nil {
			t.Fatalf("upgrade %d: %v", i, err)
		}
		now := scrape(t, maddr)
		checkCounters(t, fmt.Sprintf("after upgrade %d", i), prev, now)
		if now["hitless_upgrades_total"] != float64(i) || now["hitless_generation"] != float64(i+1) {
			t.Fatalf("after upgrade %d: upgrades_total %v, generation %v", i, now["hitless_upgrades_total"], now["hitless_generation"])
		}
		prev = now
	}
	if prev[`hitless_drain_connections_total{outcome="ended"}`] == 0 || prev[`hitless_drain_connections_total{outcome="cut"}`] != 0 {
		t.Errorf("after %d upgrades under load: drains %v ended, %v cut; want some ended, none cut", upgrades,
			prev[`hitless_drain_connections_total{outcome="ended"}`], prev[`hitless_drain_connections_total{outcome="cut"}`])
	}
	if prev["hitless_last_upgrade_duration_seconds"] <= 0 {
		t.Errorf("last upgrade took %v s", prev["hitless_last_upgrade_duration_seconds"])
	}

	// A new generation that fails its readiness gate.
	serving := s.PID()
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	if err := s.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	failed := `hitless_upgrade_failures_total{reason="exited"}`
	deadline := time.Now().Add(15 * time.Second)
	for {
		now := scrape(t, maddr)
		checkCounters(t, "after the failed upgrade", prev, now)
		prev = now
		if now[failed] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 15s: %v", failed, now)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var others float64
	for name, v := range prev {
		if strings.HasPrefix(name, "hitless_upgrade_failures_total") && name != failed {
			others += v
		}
	}
	if others != 0 || prev["hitless_upgrades_total"] != upgrades || s.PID() != serving {
		t.Errorf("after the failed upgrade: other failures %v, upgrades %v, serving pid %d (was %d)",
			others, prev["hitless_upgrades_total"], s.PID(), serving)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("the service after the failed upgrade: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Pid") != strconv.Itoa(serving) {
		t.Errorf("the service after the failed upgrade: %s from %s", resp.Status, resp.Header.Get("X-Pid"))
	}
	// The load stops here: requests on the connections of the generation
	// killed below may fail, and examples/http counts those.
	finishLoad()

	// A new generation that dies after it took over, while this one
	// drains a long request: this one takes the service back.
	if err := os.WriteFile(gate, []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	generation := prev["hitless_generation"]
	long := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + addr + "/?sleep=3s")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		long <- err
	}()
	time.Sleep(200 * time.Millisecond) // the long request is in
	if err := s.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	next, err := s.WaitPIDChange(wctx, serving)
	wcancel()
	if err != nil {
		t.Fatalf("no new generation after SIGHUP: %v", err)
	}
	taken := scrape(t, maddr) // from the new generation
	checkCounters(t, "after the upgrade that is taken back", prev, taken)
	prev = taken
	if err := syscall.Kill(next, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := waitUntil(5*time.Second, func() bool { return s.PID() == serving }); err != nil {
		t.Fatalf("after the kill of %d the PID file names %d, not %d: %v", next, s.PID(), serving, err)
	}
	now := scrape(t, maddr)
	checkCounters(t, "after the take-back", prev, now)
	if now["hitless_takebacks_total"] != 1 || now["hitless_generation"] != generation || now[`hitless_state{state="serving"}`] != 1 {
		t.Errorf("after the take-back: takebacks_total %v, generation %v (want 1, %v), serving %v",
			now["hitless_takebacks_total"], now["hitless_generation"], generation, now[`hitless_state{state="serving"}`])
	}
	if err := <-long; err != nil {
		t.Errorf("the long request the old generation drained: %v", err)
	}
	prev = now
	// And it can be upgraded again; the counters go on.
	if _, err := s.Upgrade(ctx); err != nil {
		t.Fatalf("an upgrade after the take-back: %v", err)
	}
	now = scrape(t, maddr)
	checkCounters(t, "after the upgrade that followed the take-back", prev, now)
	if now["hitless_upgrades_total"] != prev["hitless_upgrades_total"]+1 || now["hitless_takebacks_total"] != 1 {
		t.Errorf("after the upgrade that followed the take-back: upgrades_total %v (was %v), takebacks_total %v",
			now["hitless_upgrades_total"], prev["hitless_upgrades_total"], now["hitless_takebacks_total"])
	}
}

// waitUntil polls ok every 10 ms for at most d.
func waitUntil(d time.Duration, ok func() bool) error {
	for deadline := time.Now().Add(d); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
	}
	return nil
}

//go:build unix

package main

// TestDnsperfThroughUpgrades drives the server with dnsperf (DNS-OARC's
// load tool, which nobody here wrote) over UDP at 3000 queries a second
// from 4 sockets, back to back runs of a few seconds, through 20
// upgrades, and asserts on dnsperf's own counts: in every run, every
// query sent completed (none lost, none interrupted) with the response
// code its line of the data file must get. Each answer takes 10 ms
// (-delay), so about 30 queries are in the old generation's handlers when
// it drains: a server that closed its socket then instead of draining
// (-naive, the mutation) loses them. Without dnsperf the test skips,
// unless HITLESS_REQUIRE_OUTSIDE=1.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/outside"
)

const (
	dnsperfUpgrades = 20
	dnsperfRunFor   = 4 * time.Second
	// dnsperfPause is the pause after each upgrade: 20 upgrades then take
	// about 10 s, in 3 or 4 runs.
	dnsperfPause = 300 * time.Millisecond
)

// dnsperfQueries is the data file, and the response code each line gets.
var dnsperfQueries = []struct {
	line  string
	rcode string
}{
	{"www.example.test A", "NOERROR"},
	{"www.example.test AAAA", "NOERROR"},
	{"mail.example.test A", "NOERROR"},
	{"example.test MX", "NOERROR"},
	{"txt.example.test TXT", "NOERROR"},
	{"www.example.test MX", "NOERROR"}, // NODATA
	{"nope.example.test A", "NXDOMAIN"},
	{"www.example.com A", "REFUSED"},
}

// wantRcodes returns the response codes of the first n queries of a run:
// dnsperf's one sending thread reads the data file in order, again and
// again.
func wantRcodes(n int64) map[string]int64 {
	want := map[string]int64{}
	k := int64(len(dnsperfQueries))
	for i, q := range dnsperfQueries {
		if c := n/k + min(1, max(0, n%k-int64(i))); c > 0 {
			want[q.rcode] += c
		}
	}
	return want
}

func TestDnsperfThroughUpgrades(t *testing.T) {
	outside.Require(t, outside.Dnsperf)
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "dns.pid")
	args := []string{"-addr", addr, "-pidfile", pidFile, "-delay", "10ms"}
	if *naiveFlag {
		args = append(args, "-naive")
	}
	s, logFile := harness.StartT(t, harness.Config{Binary: serverBin, Args: args, PIDFile: pidFile})
	var lines []string
	for _, q := range dnsperfQueries {
		lines = append(lines, q.line)
	}
	data := filepath.Join(dir, "queries")
	if err := os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// -t 5 (dnsperf's default): a query unanswered for 5 s is lost, long
	// enough that a busy machine does not make one so.
	cfg := outside.DnsperfConfig{Server: addr, DataFile: data, Clients: 4, MaxQPS: 3000, Duration: dnsperfRunFor, Timeout: 5 * time.Second}
	if args, err := cfg.Args(); err == nil {
		t.Logf("dnsperf %s, back to back, through %d upgrades", strings.Join(args, " "), dnsperfUpgrades)
	}
	stop := make(chan struct{})
	type result struct {
		runs []outside.Timed[outside.DnsperfResult]
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runs, err := outside.Repeat(ctx, stop, func(ctx context.Context) (outside.DnsperfResult, error) { return outside.RunDnsperf(ctx, cfg) })
		done <- result{runs, err}
	}()
	time.Sleep(500 * time.Millisecond) // the first run is under way
	prev := s.PID()
	var ups []harness.Upgrade
	for i := range dnsperfUpgrades {
		u, err := s.Upgrade(ctx)
		if err != nil {
			close(stop)
			<-done
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		checkGeneration(t, i+1, prev, u, addr)
		prev = u.New
		ups = append(ups, u)
		time.Sleep(dnsperfPause)
	}
	close(stop)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}

	var sent, completed, lost, interrupted, unexpected int64
	var latencySum, runTime time.Duration
	var maxLatency time.Duration
	for i, run := range res.runs {
		r := run.Result
		t.Logf("run %d: %v", i+1, r)
		sent += r.Sent
		completed += r.Completed
		lost += r.Lost
		interrupted += r.Interrupted
		unexpected += int64(r.Unexpected())
		latencySum += r.Latency.Avg * time.Duration(r.Completed)
		runTime += r.RunTime
		maxLatency = max(maxLatency, r.Latency.Max)
		if r.Lost != 0 || r.Interrupted != 0 || r.Completed != r.Sent || r.Sent == 0 {
			t.Errorf("run %d: dnsperf sent %d queries: %d completed, %d lost, %d interrupted", i+1, r.Sent, r.Completed, r.Lost, r.Interrupted)
		}
		want := wantRcodes(r.Sent)
		if fmt.Sprint(r.Rcodes) != fmt.Sprint(want) {
			t.Errorf("run %d: response codes %v, want %v", i+1, r.Rcodes, want)
		}
		if len(r.Warnings) != 0 {
			t.Errorf("run %d: dnsperf warned: %q", i+1, r.Warnings)
		}
	}
	for i, u := range ups {
		crossed := false
		for _, r := range res.runs {
			crossed = crossed || !u.Signalled.Before(r.Start) && !u.Signalled.After(r.End)
		}
		if !crossed {
			t.Errorf("upgrade %d: SIGHUP fell between dnsperf's runs", i+1)
		}
	}
	avg := time.Duration(0)
	if completed > 0 {
		avg = latencySum / time.Duration(completed)
	}
	t.Logf("dnsperf, %d runs, %d upgrades: %d queries sent, %d completed, %d lost, %d interrupted, %d late answers; %.0f qps; latency avg %v, max %v",
		len(res.runs), len(ups), sent, completed, lost, interrupted, unexpected, float64(completed)/runTime.Seconds(), avg, maxLatency)
	if sent < 20000 {
		t.Errorf("only %d queries sent", sent)
	}
	var old []int
	for _, u := range ups {
		old = append(old, u.Old)
	}
	checkDrainReports(t, logFile, old)
}

// checkGeneration checks that upgrade n replaced the generation prev with
// a new one that answers, over UDP, and that the old one exited 0.
func checkGeneration(t *testing.T, n, prev int, u harness.Upgrade, addr string) {
	t.Helper()
	if u.Old != prev || u.New == u.Old || u.New <= 0 {
		t.Errorf("upgrade %d: %d -> %d after generation %d; want a new pid each time", n, u.Old, u.New, prev)
	}
	if u.OldReaped && (!u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0) {
		t.Errorf("upgrade %d: old generation %d ended with wait status %#x, want exit status 0", n, u.Old, uint32(u.OldStatus))
	}
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(question("pid.example.test.", dns.TypeTXT), addr)
	if err != nil {
		t.Errorf("after upgrade %d: pid.example.test. TXT: %v", n, err)
		return
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.TXT).Txt[0] != strconv.Itoa(u.New) {
		t.Errorf("after upgrade %d: pid.example.test. TXT answered %v, want the new generation's pid %d", n, r.Answer, u.New)
	}
}

//go:build unix

package main

// The ghz tests point ghz (github.com/bojand/ghz), the gRPC load tool most
// people reach for, at this program while it upgrades 20 times, and check
// what ghz reports. ghz is built from the module proxy with its own,
// older, grpc-go: it is a client we did not write and whose gRPC we did not
// choose, which is the point.
//
// Two things about ghz shape the tests (docs/grpc.md has the evidence):
//
//   - With -z, ghz by default closes its connections when the time is up
//     and counts the RPCs still in flight as failed ("use of closed network
//     connection", "transport is closing", "the client connection is
//     closing"), upgrade or not. We use -n instead: ghz makes exactly n
//     calls and waits for all of them.
//   - ghz counts calls from its stats handler's End events, which gRPC
//     emits per attempt. An RPC that gRPC retried transparently, because
//     its first attempt was refused unprocessed by a GOAWAY, shows up as an
//     error ("the connection is draining", "transport is closing") although
//     the RPC succeeded. Those two messages are counted apart; every other
//     error must be zero, and each generation's "rpcs served" log line must
//     add up to exactly the calls ghz made — which proves that no RPC was
//     lost, retried ones included.
//
// ghz is installed once per version into os.UserCacheDir()/hitless-test;
// later runs reuse the binary. Without the module proxy the tests skip,
// unless HITLESS_REQUIRE_OUTSIDE=1.

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hitlessgo/hitless/internal/harness"
)

const ghzUpgrades = 20

// ghzVersions are the ghz releases the tests run: the newest, built with
// grpc-go 1.56, and v0.93.0, built with grpc-go 1.34, which is what "go
// install github.com/bojand/ghz/cmd/ghz@latest" installs: the module proxy
// lists no later version of github.com/bojand/ghz (they are fetched only
// when asked for by name).
var ghzVersions = []string{"v0.120.0", "v0.93.0"}

// attemptErrors are the errors a transparently retried attempt ends with:
// a stream refused by a GOAWAY (grpc-go's errStreamDrain) or begun on a
// transport that was closing after one (ErrConnClosing).
var attemptErrors = []string{
	"rpc error: code = Unavailable desc = the connection is draining",
	"rpc error: code = Unavailable desc = transport is closing",
}

func TestGhzUnaryThroughUpgrades(t *testing.T) {
	for _, v := range ghzVersions {
		t.Run(v, func(t *testing.T) {
			ghzThroughUpgrades(t, v, ghzCall{method: "Echo", data: `"hitless"`, served: "echo"})
		})
	}
}

func TestGhzStreamingThroughUpgrades(t *testing.T) {
	for _, v := range ghzVersions {
		t.Run(v, func(t *testing.T) {
			ghzThroughUpgrades(t, v, ghzCall{method: "Count", data: `5`, served: "count"})
		})
	}
}

// ghzCall is what ghz calls: a method of hitless.example.Echo, its request
// as JSON (a wrapper message's JSON is the bare value), and the key of the
// server's "rpcs served" log line that counts it.
type ghzCall struct {
	method, data, served string
}

// ghzReport is the part of ghz's JSON report (-O json) we read. Durations
// are in nanoseconds.
type ghzReport struct {
	Count      int64            `json:"count"`
	Rps        float64          `json:"rps"`
	Slowest    time.Duration    `json:"slowest"`
	Errors     map[string]int64 `json:"errorDistribution"`
	Statuses   map[string]int64 `json:"statusCodeDistribution"`
	Latencies  []ghzLatency     `json:"latencyDistribution"`
	EndReason  string           `json:"endReason"`
	made       int64            // -n: the calls ghz made
	latencyP99 time.Duration
}

type ghzLatency struct {
	Percentage int           `json:"percentage"`
	Latency    time.Duration `json:"latency"`
}

func ghzThroughUpgrades(t *testing.T, version string, call ghzCall) {
	bin := ghzBinary(t, version)
	grpcVersion := ghzGRPCVersion(t, bin)
	proto, err := filepath.Abs("echo.proto")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "grpc.pid")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, logPath := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile}, PIDFile: pidFile})

	// ghz runs back to back until the upgrades are done, each run sized
	// to last about a second and a half: every run opens 8 new
	// connections, so connections are also made while generations drain.
	args := func(n int64) []string {
		return []string{"--insecure", "--proto", proto, "--call", "hitless.example.Echo." + call.method,
			"-d", call.data, "-c", "32", "--connections", "8", "-n", strconv.FormatInt(n, 10),
			"--timeout", "10s", "-O", "json", addr}
	}
	upgraded := make(chan struct{})
	type result struct {
		runs []ghzReport
		err  error
	}
	load := make(chan result, 1)
	go func() {
		var runs []ghzReport
		n := int64(500)
		for {
			r, err := runGhz(ctx, bin, args(n)...)
			if err != nil {
				load <- result{runs, err}
				return
			}
			r.made = n
			runs = append(runs, r)
			if r.Rps > 0 {
				n = min(max(int64(r.Rps*1.5), 100), 200_000)
			}
			select {
			case <-upgraded:
				load <- result{runs, nil}
				return
			default:
			}
		}
	}()

	time.Sleep(500 * time.Millisecond)
	var upgradeErr error
	var checks int64 // Echo RPCs of our own, one per upgrade
	for i := range ghzUpgrades {
		u, err := s.Upgrade(ctx)
		if err == nil {
			checks++
			err = servedBy(ctx, addr, u.New)
		}
		if err != nil {
			upgradeErr = fmt.Errorf("upgrade %d: %w", i+1, err)
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	close(upgraded)
	var res result
	select {
	case res = <-load:
	case <-ctx.Done():
		t.Fatalf("ghz did not finish: %v", ctx.Err())
	}
	if upgradeErr != nil {
		t.Fatal(upgradeErr)
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	stctx, stcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stcancel()
	if code, err := s.Stop(stctx); err != nil || code.ExitStatus() != 0 {
		t.Errorf("stop: %v, %v; want exit status 0", code, err)
	}

	var total ghzReport
	total.Errors, total.Statuses = map[string]int64{}, map[string]int64{}
	for _, r := range res.runs {
		total.made += r.made
		total.Count += r.Count
		total.Slowest = max(total.Slowest, r.Slowest)
		total.latencyP99 = max(total.latencyP99, r.latencyP99)
		for k, v := range r.Errors {
			total.Errors[k] += v
		}
		for k, v := range r.Statuses {
			total.Statuses[k] += v
		}
	}
	var retried, failed int64
	for msg, n := range total.Errors {
		if slices.Contains(attemptErrors, msg) {
			retried += n
		} else {
			failed += n
			t.Errorf("ghz: %d × %s", n, msg)
		}
	}
	gens, served, wrapped := servedCounts(t, logPath, call.served)
	if call.method == "Echo" {
		served -= checks
	}
	t.Logf("ghz %s (grpc-go %s), %s: %d runs, %d calls made, %d counted: %v; slowest %v, worst run p99 %v",
		version, grpcVersion, call.method, len(res.runs), total.made, total.Count, total.Statuses,
		total.Slowest.Round(time.Millisecond), total.latencyP99.Round(time.Millisecond))
	t.Logf("server: %d generations answered %d %s RPCs from ghz", gens, served, call.method)
	if call.method == "Count" {
		t.Logf("server: %d streams ended early and cleanly (status OK, trailer hitless-ended: going-away) at a drain", wrapped)
	}
	if gens != ghzUpgrades+1 {
		t.Errorf("%d generations logged what they served, want %d", gens, ghzUpgrades+1)
	}
	if served != total.made {
		t.Errorf("ghz made %d calls, the generations answered %d: %d RPCs lost", total.made, served, total.made-served)
	}
	if failed == 0 && served == total.made && retried > 0 {
		t.Logf("ghz reports %d failures (%v), all of them attempts that gRPC retried transparently: every call was answered",
			retried, total.Errors)
		t.Log(attemptExplanation(grpcVersion, total.made, total.Count, retried))
	}
}

// attemptExplanation says why ghz counted retried attempts as failed
// calls, for the grpc-go version ghz was built with.
func attemptExplanation(grpcVersion string, made, counted, retried int64) string {
	if versionLess(grpcVersion, "v1.41.0") {
		return fmt.Sprintf("grpc-go %s reports a transparent retry to stats handlers as nothing but its first attempt's End, "+
			"with that attempt's error (grpc-go 1.41.0, grpc/grpc-go#4749, gave every attempt its own Begin and End); "+
			"ghz counts each End as a call: %d counted for %d made", grpcVersion, counted, made)
	}
	return fmt.Sprintf("grpc-go %s reports every attempt to stats handlers, flagging retries with "+
		"Begin.IsTransparentRetryAttempt; ghz counts each End as a call: %d counted for %d made, %d of them refused attempts",
		grpcVersion, counted, made, retried)
}

// versionLess compares two "vMAJOR.MINOR.PATCH" versions.
func versionLess(a, b string) bool {
	parse := func(v string) []int {
		var out []int
		for f := range strings.SplitSeq(strings.TrimPrefix(v, "v"), ".") {
			n, _ := strconv.Atoi(strings.SplitN(f, "-", 2)[0])
			out = append(out, n)
		}
		return out
	}
	return slices.Compare(parse(a), parse(b)) < 0
}

// servedBy checks, on a connection of its own, that generation pid answers.
func servedBy(ctx context.Context, addr string, pid int) error {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(rctx, "/hitless.example.Echo/Echo", wrapperspb.String("who"), out); err != nil {
		return fmt.Errorf("new generation %d: %w", pid, err)
	}
	if want := strconv.Itoa(pid) + ": who"; out.GetValue() != want {
		return fmt.Errorf("answered %q, want %q from the new generation", out.GetValue(), want)
	}
	return nil
}

var servedLine = regexp.MustCompile(`msg="rpcs served" .*echo=(\d+) count=(\d+) count_wrapped_up=(\d+)`)

// servedCounts adds up the "rpcs served" lines every generation logged as
// it exited: how many generations, how many RPCs of kind ("echo" or
// "count"), and how many Count streams ended early at a drain.
func servedCounts(t *testing.T, logPath, kind string) (gens int, served, wrapped int64) {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range servedLine.FindAllStringSubmatch(string(b), -1) {
		gens++
		i := 1
		if kind == "count" {
			i = 2
		}
		n, _ := strconv.ParseInt(m[i], 10, 64)
		w, _ := strconv.ParseInt(m[3], 10, 64)
		served += n
		wrapped += w
	}
	return gens, served, wrapped
}

// runGhz runs ghz and parses its JSON report.
func runGhz(ctx context.Context, bin string, args ...string) (ghzReport, error) {
	var r ghzReport
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(rctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil {
		return r, fmt.Errorf("ghz %s: %v (report: %v)\n%s", strings.Join(args, " "), err, jerr, stderr.Bytes())
	}
	if r.EndReason != "normal" {
		return r, fmt.Errorf("ghz ended with %q, not after its calls: %v\n%s", r.EndReason, err, stderr.Bytes())
	}
	for _, l := range r.Latencies {
		if l.Percentage == 99 {
			r.latencyP99 = l.Latency
		}
	}
	return r, nil
}

// ghzGRPCVersion returns the grpc-go version bin was built with.
func ghzGRPCVersion(t *testing.T, bin string) string {
	t.Helper()
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range info.Deps {
		if d.Path == "google.golang.org/grpc" {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	t.Fatalf("%s: not built with google.golang.org/grpc", bin)
	return ""
}

// ghzBinary returns the path of ghz at version, installing it with "go
// install" into the user's cache directory the first time. Installing
// takes a module download and a build (about a minute on 2 cores);
// afterwards the cached binary is used as is.
func ghzBinary(t *testing.T, version string) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "hitless-test", "ghz@"+version)
	bin := filepath.Join(dir, "ghz")
	if info, err := buildinfo.ReadFile(bin); err == nil && info.Main.Path == "github.com/bojand/ghz" && info.Main.Version == version {
		return bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Install into a directory of our own and rename into place, so that
	// another test process never runs a half-written binary.
	tmp, err := os.MkdirTemp(dir, "install-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", "github.com/bojand/ghz/cmd/ghz@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("go install github.com/bojand/ghz/cmd/ghz@%s: %v\n%s", version, err, out)
		if unreachable(out) && os.Getenv("HITLESS_REQUIRE_OUTSIDE") != "1" {
			t.Skipf("the module proxy is out of reach (set HITLESS_REQUIRE_OUTSIDE=1 to fail instead): %s", msg)
		}
		t.Fatal(msg)
	}
	if err := os.Rename(filepath.Join(tmp, "ghz"), bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("installed ghz %s in %v into %s", version, time.Since(start).Round(100*time.Millisecond), dir)
	return bin
}

// unreachable says whether go's output is that of a module download that
// could not reach the proxy (or was not allowed to).
func unreachable(out []byte) bool {
	for _, s := range []string{"dial tcp", "lookup ", "no such host", "connection refused", "i/o timeout",
		"network is unreachable", "proxyconnect", "TLS handshake timeout", "GOPROXY=off", "GOFLAGS=-mod=vendor"} {
		if bytes.Contains(out, []byte(s)) {
			return true
		}
	}
	return false
}

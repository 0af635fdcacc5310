//go:build unix

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/loadgen"
)

var (
	exampleOnce sync.Once
	exampleBin  string
	exampleErr  error
)

// exampleBinary builds examples/http (the hitless server) once.
func exampleBinary(t testing.TB) string {
	t.Helper()
	exampleOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		exampleBin = filepath.Join(binDir, "http")
		exampleErr = Build(ctx, "./examples/http", exampleBin, false, "")
	})
	if exampleErr != nil {
		t.Fatal(exampleErr)
	}
	return exampleBin
}

func startBinary(t *testing.T, bin string) (*Server, string) {
	t.Helper()
	addr, err := FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, Config{
		Binary:  bin,
		Args:    []string{"-addr", addr, "-pidfile", pidFile},
		PIDFile: pidFile,
		Log:     logFile(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, addr
}

// TestCompareWithTableflipBaseline runs the same load and the same 10
// upgrades against the textbook tableflip server (internal/baseline:
// tableflip + http.Server.Shutdown, as tableflip's README shows) and against
// hitless (examples/http), one after the other in the same run, and prints
// both. It fails if hitless loses a single request. It takes about two
// minutes, so it runs only when asked:
//
//	HITLESS_COMPARE=1 go test -run TestCompareWithTableflipBaseline -v -count=1 ./internal/harness/
func TestCompareWithTableflipBaseline(t *testing.T) {
	if os.Getenv("HITLESS_COMPARE") != "1" {
		t.Skip("comparison on demand; set HITLESS_COMPARE=1 to run")
	}
	const upgrades = 10
	servers := []struct{ name, bin string }{
		{"tableflip-readme", baselineBinary(t)},
		{"hitless", exampleBinary(t)},
	}
	var table []string
	for _, tc := range []struct {
		name string
		cfg  loadgen.Config
	}{
		{"keepalive", loadgen.Config{Kind: loadgen.KeepAlive, Workers: 8}},
		{"newconn", loadgen.Config{Kind: loadgen.NewConn, Workers: 4}},
		{"slow", loadgen.Config{Kind: loadgen.Slow, Workers: 8, Sleep: time.Second}},
		{"stream", loadgen.Config{Kind: loadgen.Stream, Workers: 4, StreamDur: 1500 * time.Millisecond}},
		// About 1000 requests/s, the rate DESIGN.md's figures were taken at.
		{"keepalive-1000rps", loadgen.Config{Kind: loadgen.KeepAlive, Workers: 8, Pace: 8 * time.Millisecond}},
		// With ReuseCheck, as a client that notices a FIN on an idle
		// connection before reusing it (browsers, net/http) would see it.
		{"keepalive+reusecheck", loadgen.Config{Kind: loadgen.KeepAlive, Workers: 8, ReuseCheck: true}},
		{"stream+reusecheck", loadgen.Config{Kind: loadgen.Stream, Workers: 4, StreamDur: 1500 * time.Millisecond, ReuseCheck: true}},
	} {
		for _, srv := range servers {
			t.Run(tc.name+"/"+srv.name, func(t *testing.T) {
				res, oldGone := measure(t, srv.bin, tc.cfg, upgrades)
				line := fmt.Sprintf("%-28s %-17s failed %5d of %7d  old gone after (median) %6s   %s",
					tc.name, srv.name, res.Failed(), res.Requests, oldGone.Round(time.Millisecond), failures(res))
				t.Log(line)
				table = append(table, line)
				if srv.name == "hitless" && res.Failed() != 0 {
					t.Errorf("hitless lost %d requests: %v", res.Failed(), res.Errors)
				}
			})
		}
	}
	t.Logf("%d upgrades per row:\n%s", upgrades, strings.Join(table, "\n"))
}

func measure(t *testing.T, bin string, cfg loadgen.Config, upgrades int) (loadgen.Result, time.Duration) {
	s, addr := startBinary(t, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg.Addr = addr
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	done := make(chan loadgen.Result, 1)
	go func() {
		res, err := loadgen.Run(loadCtx, cfg)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	time.Sleep(500 * time.Millisecond) // steady state first
	var gone []time.Duration
	for i := range upgrades {
		u, err := s.Upgrade(ctx)
		if err != nil {
			stopLoad()
			<-done
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		gone = append(gone, u.OldExited.Sub(u.Signalled))
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	res := <-done
	st, err := s.Stop(ctx)
	if err != nil {
		t.Error(err)
	} else {
		wantExit0(t, "stop", st)
	}
	for _, e := range res.Errors {
		t.Log("  ", e)
	}
	return res, median(gone)
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func failures(r loadgen.Result) string {
	var parts []string
	for _, c := range loadgen.Classes {
		if n := r.Failures[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c, n))
		}
	}
	return strings.Join(parts, ", ")
}

// BenchmarkHandshake measures one upgrade of an idle server, from SIGHUP to
// the new generation ready (ready-ms) and to the old one gone (gone-ms),
// for the tableflip README server and for hitless with its pre-flight check
// off (so that both exec the same way), side by side:
//
//	go test -run '^$' -bench Handshake -benchtime 50x ./internal/harness/
//
// The difference is what the library adds to an upgrade. With
// HITLESS_HANDSHAKE_PREVIOUS naming an examples/http binary built from
// another release, that one runs alongside ("hitless-previous").
func BenchmarkHandshake(b *testing.B) {
	servers := []struct{ name, bin string }{
		{"tableflip-readme", baselineBinary(b)},
		{"hitless", exampleBinary(b)},
	}
	if prev := os.Getenv("HITLESS_HANDSHAKE_PREVIOUS"); prev != "" {
		servers = append(servers, struct{ name, bin string }{"hitless-previous", prev})
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			addr, err := FreeTCPAddr()
			if err != nil {
				b.Fatal(err)
			}
			pidFile := filepath.Join(b.TempDir(), "pid")
			args := []string{"-addr", addr, "-pidfile", pidFile}
			if strings.HasPrefix(s.name, "hitless") {
				args = append(args, "-preflight=false")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			srv, err := Start(ctx, Config{Binary: s.bin, Args: args, PIDFile: pidFile, Log: logFile(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			var ready, gone time.Duration
			b.ResetTimer()
			for range b.N {
				u, err := srv.Upgrade(ctx)
				if err != nil {
					b.Fatal(err)
				}
				ready += u.Ready.Sub(u.Signalled)
				gone += u.OldExited.Sub(u.Signalled)
			}
			b.ReportMetric(float64(ready.Microseconds())/1000/float64(b.N), "ready-ms")
			b.ReportMetric(float64(gone.Microseconds())/1000/float64(b.N), "gone-ms")
		})
	}
}

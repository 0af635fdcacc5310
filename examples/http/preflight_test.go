//go:build unix

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
)

// TestPreflightIsOptIn: by default an upgrade starts the new binary once,
// for real; with -preflight it first runs it with -check. The binary is a
// wrapper that writes down how it was run, then runs the server under the
// wrapper's own name, so that the next upgrade goes through it again.
func TestPreflightIsOptIn(t *testing.T) {
	bash, err := exec.LookPath("bash") // exec -a: POSIX sh cannot set argv[0]
	if err != nil {
		t.Skip("no bash:", err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string // how the binary was run, in order
	}{
		{"default", nil, []string{"serve", "serve"}},
		{"-preflight", []string{"-preflight"}, []string{"serve", "check", "serve"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			real, calls, bin := filepath.Join(dir, "http-real"), filepath.Join(dir, "calls"), filepath.Join(dir, "http")
			copyFile(t, binary, real)
			wrapper := fmt.Sprintf("#!%s\ncase \" $* \" in *\" -check \"*) echo check >>%q ;; *) echo serve >>%q ;; esac\nexec -a \"$0\" %q \"$@\"\n",
				bash, calls, calls, real)
			if err := os.WriteFile(bin, []byte(wrapper), 0o755); err != nil {
				t.Fatal(err)
			}
			s := startBinary(t, bin, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := s.Upgrade(ctx); err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			b, err := os.ReadFile(calls)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Fields(string(b)); !slices.Equal(got, tc.want) {
				t.Fatalf("the binary was run as %v, want %v", got, tc.want)
			}
		})
	}
}

// BenchmarkPreflight measures what -preflight costs, on a binary built
// without -race: from SIGHUP to the new generation ready (ready-ms) and to
// the old one gone (gone-ms) for an idle server with and without it, and
// the wall time and CPU time (cpu-ms, user and system) of one -check run,
// the work it adds as the upgrade begins:
//
//	go test -run '^$' -bench Preflight -benchtime 30x ./examples/http/
func BenchmarkPreflight(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := filepath.Join(b.TempDir(), "http")
	if err := harness.Build(ctx, "./examples/http", bin, false, ""); err != nil {
		b.Fatal(err)
	}
	for _, args := range [][]string{{"-preflight=false"}, {"-preflight"}} {
		b.Run(args[0], func(b *testing.B) {
			addr := harness.FreeAddrT(b)
			pidFile := filepath.Join(b.TempDir(), "http.pid")
			s, _ := harness.StartT(b, harness.Config{Binary: bin, Args: append([]string{"-addr", addr, "-pidfile", pidFile}, args...), PIDFile: pidFile})
			var ready, gone time.Duration
			for b.Loop() {
				u, err := s.Upgrade(ctx)
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
	b.Run("check", func(b *testing.B) {
		var cpu time.Duration
		for b.Loop() {
			cmd := exec.CommandContext(ctx, bin, "-check", "-addr", "127.0.0.1:8080", "-pidfile", "/nonexistent/http.pid")
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
			cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms")
	})
}

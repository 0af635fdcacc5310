//go:build unix

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// StartT is Start for tests: it bounds the start to 30 s, sends every
// generation's output to a log file in t's temp directory (printed if t
// fails), runs race-enabled servers without their 1 s sleep at exit
// (GORACE=atexit_sleep_ms=0: otherwise every old generation lives a second
// longer than it would in production), and closes the server at cleanup.
// cfg.Log, if set, is used instead of the log file. It returns the server
// and the log's path.
func StartT(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Log == nil {
		f, err := os.Create(filepath.Join(t.TempDir(), "server.log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			f.Close()
			if t.Failed() {
				b, _ := os.ReadFile(f.Name())
				t.Logf("server log:\n%s", b)
			}
		})
		cfg.Log = f
	}
	cfg.Env = append([]string{"GORACE=atexit_sleep_ms=0"}, cfg.Env...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, cfg.Log.Name()
}

// RunWithBinary is a TestMain body for tests of a server program: it
// builds pkg (relative to the module root, e.g. "./examples/http"; with
// the race detector when race is set) into a temporary directory, sets
// *bin to the binary's path, runs the tests, fails the run if goroutines
// leaked (goleak), removes the binary and returns the exit code:
//
//	func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./examples/http", true, &binary)) }
func RunWithBinary(m *testing.M, pkg string, race bool, bin *string) int {
	dir, err := os.MkdirTemp("", "hitless-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*bin = filepath.Join(dir, filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err = Build(ctx, pkg, *bin, race, "")
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building %s: %v\n", pkg, err)
		return 1
	}
	code := m.Run()
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

// FreeAddrT is FreeTCPAddr for tests: it fails t instead of returning an
// error.
func FreeAddrT(t testing.TB) string {
	t.Helper()
	addr, err := FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

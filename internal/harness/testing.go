//go:build unix

package harness

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
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

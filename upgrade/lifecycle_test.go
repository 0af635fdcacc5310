//go:build unix

package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hitlessgo/hitless/drain"
)

const envLifecycle = "HITLESS_TEST_LIFECYCLE" // which lifecycle lifecycleMain runs

// lifecycleMain runs one lifecycle of an Upgrader in a fresh process (only
// one may exist per process) and checks that nothing it started outlives
// it: no goroutine, no descriptor.
func lifecycleMain() int {
	dir := os.Getenv("HITLESS_TEST_DIR")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fdsBefore := len(fdTargets())
	switch os.Getenv(envLifecycle) {
	case "ready-stop":
		// New → Listen → Ready → Stop, without Run, with every
		// option that starts something.
		u, err := New(Options{PIDFile: filepath.Join(dir, "app.pid"), ControlSocket: filepath.Join(dir, "ctl.sock")})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		ln, err := u.Listen(ctx, "http", "tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		srv := &drain.HTTP{Server: &http.Server{}}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		if err := u.Ready(ctx); err != nil {
			fmt.Println(err)
			return 1
		}
		u.Stop()
		srv.Server.Close()
		<-served // Stop closed the listener under it
		if err := u.Upgrade(ctx); !errors.Is(err, ErrStopped) {
			fmt.Println("Upgrade after Stop:", err)
			return 1
		}
	case "new-fails":
		// New gets as far as the control socket, which cannot be made.
		_, err := New(Options{ControlSocket: filepath.Join(dir, "missing", "ctl.sock")})
		if err == nil || !strings.Contains(err.Error(), "control socket") {
			fmt.Println("New with an impossible control socket:", err)
			return 1
		}
	default:
		fmt.Println("unknown lifecycle")
		return 2
	}
	if err := goleak.Find(); err != nil {
		fmt.Println(err)
		return 1
	}
	if after := len(fdTargets()); after != fdsBefore {
		fmt.Printf("descriptors: %d before New, %d after: %v\n", fdsBefore, after, fdTargets())
		return 1
	}
	return 0
}

// TestNothingOutlivesStop: New → Ready → Stop without Run releases every
// goroutine and descriptor New and Ready started; so does a New that
// fails halfway.
func TestNothingOutlivesStop(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, lc := range []string{"ready-stop", "new-fails"} {
		t.Run(lc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, self, "-test.run=^$")
			cmd.Env = append(os.Environ(), envRole+"=lifecycle", envLifecycle+"="+lc,
				"HITLESS_TEST_DIR="+t.TempDir(), "GORACE=atexit_sleep_ms=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", lc, err, out)
			}
		})
	}
}

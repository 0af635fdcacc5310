package upgrade

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewRejectsUnwritablePIDFile(t *testing.T) {
	for _, path := range []string{
		filepath.Join(t.TempDir(), "missing-dir", "app.pid"),
		t.TempDir(), // a directory
	} {
		_, err := New(Options{PIDFile: path})
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("New(PIDFile: %s) = %v, want an error naming the file", path, err)
		}
		t.Log(err)
	}
}

// TestInProcessLifecycle uses the one Upgrader this test process may have.
func TestInProcessLifecycle(t *testing.T) {
	u, err := New(Options{PIDFile: filepath.Join(t.TempDir(), "app.pid")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{}); !errors.Is(err, ErrSingleton) {
		t.Fatalf("second New = %v, want ErrSingleton", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := u.Upgrade(ctx); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Upgrade before Ready = %v, want ErrNotReady", err)
	}
	if _, err := u.Listen(ctx, "http", "tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	u.Stop()
	if err := u.Run(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Run after Stop = %v, want ErrStopped", err)
	}
	if err := u.Upgrade(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Upgrade after Stop = %v, want ErrStopped", err)
	}
}

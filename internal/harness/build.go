package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// Build runs "go build -o out pkg" in the module root, found by walking up
// from the working directory to go.mod, so pkg is written relative to the
// root ("./internal/baseline"). race adds -race; a non-empty ldflags is
// passed as -ldflags (for example "-X main.version=2", to make two
// distinguishable binaries from one source). The go command is looked up
// in PATH, where "go test" puts the toolchain running the test. The error
// carries the compiler's output.
func Build(ctx context.Context, pkg, out string, race bool, ldflags string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("harness: build %s: %w", pkg, err)
	}
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	args = append(args, pkg)
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("harness: go %v: %w\n%s", args, err, b)
	}
	return nil
}

// ModuleRoot returns the nearest directory at or above the working
// directory that holds a go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// FreeTCPAddr returns a 127.0.0.1 address whose port was free a moment
// ago. Another process may take it before the server binds it; on a test
// machine that is rare enough, and the server then fails to start loudly.
func FreeTCPAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

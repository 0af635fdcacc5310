package upgrade

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// preflight checks, before anything is started, that the binary the next
// generation runs exists and is executable, then runs the application's
// own check. A broken deploy thus fails fast with a clear error.
func (u *Upgrader) preflight() error {
	binary, err := nextBinary()
	if err != nil {
		return &ChildError{Reason: StartFailed, Detail: err.Error()}
	}
	if u.opts.Preflight != nil {
		ctx, cancel := context.WithTimeout(context.Background(), u.opts.UpgradeTimeout)
		defer cancel()
		if err := u.opts.Preflight(ctx, binary); err != nil {
			return &ChildError{Reason: CheckFailed, Detail: err.Error()}
		}
	}
	return nil
}

// nextBinary resolves os.Args[0] the way the new generation is started
// (tableflip looks it up with exec.LookPath) and checks that it is a
// regular, executable file.
func nextBinary() (string, error) {
	path := os.Args[0]
	if !strings.Contains(path, "/") {
		found, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("binary %s: not found in $PATH", path)
		}
		path = found
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("binary %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("binary %s: not a regular file", path)
	}
	if err := checkExecutable(path); err != nil {
		return "", fmt.Errorf("binary %s: not executable (mode %v): %w", path, fi.Mode().Perm(), err)
	}
	return path, nil
}

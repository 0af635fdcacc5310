package upgrade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
// (tableflip looks it up like exec.LookPath, from the initial working
// directory) and checks that it is a regular, executable file.
func nextBinary() (string, error) {
	name := os.Args[0]
	path, err := exec.LookPath(name)
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) && errors.Is(ee.Err, exec.ErrNotFound) && filepath.Base(name) == name {
			return "", fmt.Errorf("binary %s: not found in $PATH", name)
		}
		if _, serr := os.Stat(name); serr != nil {
			return "", fmt.Errorf("binary %s: %w", name, serr)
		}
		return "", fmt.Errorf("binary %s: %w", name, err)
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

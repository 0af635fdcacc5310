package upgrade

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// writePIDFile replaces path with this process's PID atomically (a reader
// never sees a partial file), which is why it writes a temporary file in
// the same directory and renames it.
func writePIDFile(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// checkPIDFile fails early, at start-up, when the PID file cannot be
// written, instead of when the process is about to report ready.
func checkPIDFile(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return errors.New("is a directory")
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".check.*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// removePIDFile removes path if it still names this process.
func removePIDFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Equal(bytes.TrimSpace(b), []byte(strconv.Itoa(os.Getpid()))) {
		return nil
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing PID file: %w", err)
	}
	return nil
}

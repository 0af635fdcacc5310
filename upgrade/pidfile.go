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
// written, instead of when the process is about to report ready. It also
// refuses a PID file that other users could replace (security review M3):
// whoever reads it (systemd's PIDFile=, scripts, monitoring) would signal
// or watch the process they name. Refusing rather than warning is what
// sshd's StrictModes does, and the fix (chmod go-w, or the service's
// RuntimeDirectory=) is one line, found at the first start rather than
// after a stray signal.
func checkPIDFile(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return errors.New("is a directory")
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".check.*")
	if err != nil {
		return err
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return err
	}
	if err := unsafeDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("refused, since other users could replace it: %w; make every directory on the way writable only by its owner (chmod go-w), or use the service's RuntimeDirectory= (/run/<service>)", err)
	}
	return nil
}

// removePIDFile removes path if it still names this process. The file is
// read as something another user may have replaced (security review M3):
// never through a symlink, never blocking on a FIFO, at most a few bytes.
func removePIDFile(path string) error {
	b, err := readPIDFile(path)
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

// readPIDFile reads a PID file without following a symlink, without
// blocking (a FIFO), and only if it is a small regular file.
func readPIDFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > 32 {
		return nil, fmt.Errorf("PID file %s is not a small regular file (mode %v, %d bytes)", path, fi.Mode(), fi.Size())
	}
	b := make([]byte, 33)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return nil, err
	}
	return b[:n], nil
}

// reclaimPIDFile makes path name this process again if it names another
// (a new generation that wrote it and then failed).
func reclaimPIDFile(path string) error {
	if b, err := readPIDFile(path); err == nil && bytes.Equal(bytes.TrimSpace(b), []byte(strconv.Itoa(os.Getpid()))) {
		return nil
	}
	return writePIDFile(path)
}

//go:build unix

package upgrade

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// stderrFileName is the name under which the service's real stderr is
// handed to a new generation.
//
// Why: tableflip starts the new generation with our own stderr, so when it
// crashes before it is ready its last words go to the log, but not to whoever
// asked for the upgrade. So for the time of an attempt the new generation
// gets a pipe as its stderr; we copy everything from it to the real stderr
// (nothing is lost from the log) and keep the last lines for the error. A
// generation that becomes ready puts the real stderr, handed over under this
// name, back on fd 2 before it says so (adoptStderr), which ends the copy.
const stderrFileName = "hitless.stderr"

// stderrTailBytes bounds the output kept for an error.
const stderrTailBytes = 2048

// stderrSwap serialises swaps of os.Stderr.
var stderrSwap sync.Mutex

// captureStderr makes the next process tableflip starts write its stderr
// into a pipe, and returns a function that undoes it and returns the last
// lines written there.
func (u *Upgrader) captureStderr() (done func() string) {
	real := os.Stderr
	if !u.stderrHanded {
		if err := u.tf.Fds.AddFile(stderrFileName, real); err != nil {
			u.log.Warn("cannot capture the new generation's stderr", "err", err)
			return func() string { return "" }
		}
		u.stderrHanded = true
	}
	r, w, err := os.Pipe()
	if err != nil {
		u.log.Warn("cannot capture the new generation's stderr", "err", err)
		return func() string { return "" }
	}
	var (
		mu         sync.Mutex
		head, tail []byte
	)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				real.Write(buf[:n])
				mu.Lock()
				if room := stderrTailBytes - len(head); room > 0 {
					head = append(head, buf[:min(n, room)]...)
				}
				tail = append(tail, buf[:n]...)
				if len(tail) > stderrTailBytes {
					tail = tail[len(tail)-stderrTailBytes:]
				}
				mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	stderrSwap.Lock()
	os.Stderr = w
	return func() string {
		os.Stderr = real
		stderrSwap.Unlock()
		w.Close()
		// The new process has exited or put its own stderr back; what it
		// wrote before is in the pipe. A process it left behind could keep
		// the pipe open: do not wait for that.
		select {
		case <-copied:
		case <-time.After(200 * time.Millisecond):
		}
		r.Close()
		<-copied
		mu.Lock()
		defer mu.Unlock()
		if p := goPanic(head); p != "" {
			return p
		}
		return lastLines(tail, 10)
	}
}

// goPanic returns the lines that say why a Go program died ("panic: …" or
// "fatal error: …" and the line after it), which come before a goroutine
// trace far longer than what is kept of the end.
func goPanic(b []byte) string {
	lines := strings.Split(string(bytes.ToValidUTF8(b, nil)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			out := []string{l}
			if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "[signal") {
				out = append(out, lines[i+1])
			}
			return strings.Join(out, "\n") + "\n(goroutine trace in the service's log)"
		}
	}
	return ""
}

// lastLines returns at most n of the last lines of b, trimmed.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(bytes.ToValidUTF8(b, nil)), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// adoptStderr puts the service's real stderr, handed over by the previous
// generation, back on fd 2 (see stderrFileName).
func (u *Upgrader) adoptStderr() {
	f, err := u.tf.Fds.File(stderrFileName)
	if err != nil || f == nil {
		return
	}
	defer f.Close()
	raw, err := f.SyscallConn()
	if err != nil {
		return
	}
	// Control, not Fd: Fd would switch the shared file to blocking mode.
	raw.Control(func(fd uintptr) {
		if err := unix.Dup2(int(fd), 2); err != nil {
			u.log.Warn("restoring stderr", "err", err)
		}
	})
	u.stderrHanded = true
}

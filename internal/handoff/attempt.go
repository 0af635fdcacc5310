package handoff

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"time"
)

// stderrTailBytes bounds the output kept for an error.
const stderrTailBytes = 2048

// attempt follows one new generation while it starts: its hello on the
// side channel, and its stderr, which passes through this process until
// it is ready.
type attempt struct {
	h       *Handoff
	l       *link
	hello   message
	failed  string        // why it said it would not become ready
	leaving bool          // it said it stops for good (Leave) before listenChild took over
	heard   chan struct{} // closed when the reader is done

	mu         sync.Mutex
	head, last []byte
	eof        chan struct{} // closed when the stderr pipe reaches EOF; nil without one
}

func (h *Handoff) newAttempt(l *link) *attempt {
	a := &attempt{h: h, l: l, heard: make(chan struct{})}
	h.wg.Add(1)
	go a.listen()
	return a
}

// listen reads the hello, starts relaying the stderr pipe it carries, and
// then reads what else the new generation says until end.
func (a *attempt) listen() {
	defer a.h.wg.Done()
	defer close(a.heard)
	m, f, err := a.l.read()
	if err != nil {
		return
	}
	a.hello = m
	if f != nil {
		a.startRelay(f)
	}
	for {
		m, f, err := a.l.read()
		if err != nil {
			return
		}
		if f != nil {
			f.Close()
		}
		// A new generation that is ready may say more before Start has
		// handed its link to listenChild: what it says then is kept.
		if m.Hurry {
			notify(a.h.hurried)
		}
		if m.Leaving {
			a.mu.Lock()
			a.leaving = true
			a.mu.Unlock()
		}
		if m.Failed != "" {
			a.mu.Lock()
			a.failed = m.Failed
			a.mu.Unlock()
		}
	}
}

func (a *attempt) startRelay(f *os.File) {
	a.h.mu.Lock()
	if a.h.closed {
		a.h.mu.Unlock()
		f.Close()
		return
	}
	a.h.relays = append(a.h.relays, f)
	a.eof = make(chan struct{})
	a.h.wg.Add(1)
	a.h.mu.Unlock()
	go a.relay(f)
}

// failure returns why the new generation said it would not become ready.
func (a *attempt) failure() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed
}

// relay copies the new generation's stderr to ours and keeps its first and
// last bytes, until EOF: the new generation put its real stderr back, or
// died.
func (a *attempt) relay(f *os.File) {
	defer a.h.wg.Done()
	defer close(a.eof)
	defer a.h.dropRelay(f)
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			a.h.stderr.Write(buf[:n])
			a.mu.Lock()
			if room := stderrTailBytes - len(a.head); room > 0 {
				a.head = append(a.head, buf[:min(n, room)]...)
			}
			a.last = append(a.last, buf[:n]...)
			if len(a.last) > stderrTailBytes {
				a.last = a.last[len(a.last)-stderrTailBytes:]
			}
			a.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// end is called once tableflip has the outcome. It stops waiting for a
// hello (a version 0 child sends none) and, after a failure, gives the
// relay a moment to read what the dead process wrote last. A process the
// new generation spawned may hold the pipe open: the relay goes on
// copying until then, but nobody waits for it.
func (a *attempt) end(failed bool) message {
	a.l.conn.SetReadDeadline(time.Now())
	<-a.heard
	if failed && a.hello.PID == 0 {
		// The deadline can stop the reader with the hello already queued:
		// a generation that fails right after New sends it and may exit
		// before the reader has run (a past deadline fails a read without
		// looking). Look once more, briefly: the hello carries the stderr
		// pipe, which says why it failed.
		a.l.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if m, f, err := a.l.read(); err == nil {
			a.hello = m
			if f != nil {
				a.startRelay(f)
			}
		}
	}
	a.l.conn.SetReadDeadline(time.Time{})
	if failed && a.eof != nil {
		select {
		case <-a.eof:
		case <-time.After(200 * time.Millisecond):
		}
	}
	return a.hello
}

// tail returns what to quote of the new generation's stderr: a Go panic's
// first lines if it panicked, else its last lines.
func (a *attempt) tail() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := goPanic(a.head); p != "" {
		return p
	}
	return lastLines(a.last, 10)
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

// dropRelay closes a relay's pipe once it has reached EOF (or Close closed
// it) and forgets it.
func (h *Handoff) dropRelay(f *os.File) {
	h.mu.Lock()
	for i, r := range h.relays {
		if r == f {
			h.relays = append(h.relays[:i], h.relays[i+1:]...)
			break
		}
	}
	h.mu.Unlock()
	f.Close()
}

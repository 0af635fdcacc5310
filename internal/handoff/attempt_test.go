//go:build unix

package handoff

import (
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
)

// TestEndReadsAQueuedHello: a new generation that fails right after New
// has sent its hello (with its stderr pipe) and may be gone before the
// attempt's reader ran. end must still find the hello and what the
// generation wrote, not report that it never reached hitless. With one P
// and no yield between the send and end, the reader has not run yet in
// nearly every iteration.
func TestEndReadsAQueuedHello(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for i := range 50 {
		ours, theirs, err := newLinkPair()
		if err != nil {
			t.Fatal(err)
		}
		peer, err := newLink(theirs)
		theirs.Close()
		if err != nil {
			t.Fatal(err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		h := &Handoff{stderr: devNull(t)}
		a := h.newAttempt(ours)
		if err := peer.write(message{Version: 1, PID: 4242}, r); err != nil {
			t.Fatal(err)
		}
		r.Close()
		io.WriteString(w, "bad configuration\n")
		w.Close()
		peer.close()
		hello := a.end(true)
		if hello.PID != 4242 {
			t.Fatalf("iteration %d: end returned hello %+v, want the queued one", i, hello)
		}
		if tail := a.tail(); !strings.Contains(tail, "bad configuration") {
			t.Fatalf("iteration %d: stderr tail %q", i, tail)
		}
		ours.close()
		// What Close does for the relays (Close itself also stops
		// tableflip, which this Handoff has none of).
		h.mu.Lock()
		h.closed = true
		relays := h.relays
		h.mu.Unlock()
		for _, f := range relays {
			f.Close()
		}
		h.wg.Wait()
	}
}

func devNull(t *testing.T) *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

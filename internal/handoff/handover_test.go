//go:build linux

package handoff

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openFDs counts this process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory's own
}

// memfds counts this process's memory files.
func memfds(t testing.TB) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc/self/fd")
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "/memfd:") {
			n++
		}
	}
	return n
}

func quietHandoff() *Handoff {
	return &Handoff{log: slog.New(slog.DiscardHandler), hurried: make(chan struct{}, 1), forwarded: make(chan struct{}, 1)}
}

// sideChannel returns both ends of a side channel, closed at cleanup.
func sideChannel(t *testing.T) (old, young *link) {
	t.Helper()
	old, theirs, err := newLinkPair()
	if err != nil {
		t.Fatal(err)
	}
	young, err = newLink(theirs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.close(); young.close() })
	return old, young
}

// handOver does what Start and greetParent do with the handover, minus the
// processes: the old generation's hello and offers, read by the new one.
func handOver(t *testing.T, old, young *Handoff) error {
	t.Helper()
	out, err := old.prepare()
	if err != nil {
		return err
	}
	lo, ly := sideChannel(t)
	defer lo.close()
	defer ly.close()
	if err := lo.write(message{Version: Version, Generation: 2, Offers: len(out)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := lo.send(out); err != nil {
		t.Fatal(err)
	}
	ly.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	hello, _, err := ly.read()
	if err != nil {
		t.Fatal(err)
	}
	young.ho.hasParent, young.ho.peer = true, hello.Version
	return young.receive(ly, hello.Offers)
}

// TestHandoverFileAndState: a file and a state reach the new generation;
// the file is the same open file (shared offset); each name is taken
// once; what is not taken is closed at Ready; nothing stays open in either
// generation once both have closed.
func TestHandoverFileAndState(t *testing.T) {
	base := openFDs(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log")
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE, 0o600) // no O_APPEND: the offset is shared
	if err != nil {
		t.Fatal(err)
	}
	spare, err := os.Create(filepath.Join(dir, "spare"))
	if err != nil {
		t.Fatal(err)
	}
	old := quietHandoff()
	for _, err := range []error{
		old.OfferFile("log", lf),
		old.OfferFile("spare", spare),
		old.OfferState("cache", func() ([]byte, error) { return []byte(`{"k":"v"}`), nil }),
		old.OfferState("empty", func() ([]byte, error) { return nil, nil }),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The caller may close its own.
	spare.Close()
	if err := old.OfferFile("log", lf); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("offering log twice: %v, want ErrNameTaken", err)
	}
	if err := old.OfferState("spare", func() ([]byte, error) { return nil, nil }); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("offering a state under a file's name: %v, want ErrNameTaken", err)
	}
	for _, bad := range []string{"", "a b", "x:y", strings.Repeat("n", 65), "ü"} {
		if err := old.OfferState(bad, func() ([]byte, error) { return nil, nil }); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("OfferState(%q) = %v, want an error naming it", bad, err)
		}
	}

	young := quietHandoff()
	if err := handOver(t, old, young); err != nil {
		t.Fatal(err)
	}
	if n := memfds(t); n != 2 {
		t.Errorf("%d memory files open after the handover, want the 2 of the new generation (the old one closes its own once sent)", n)
	}
	got, err := young.TakeFile("log")
	if err != nil {
		t.Fatal(err)
	}
	// Both generations write through the same open file: the lines follow
	// each other whoever writes.
	for i, f := range []*os.File{lf, got, lf, got} {
		fmt.Fprintf(f, "line %d\n", i)
	}
	if b, _ := os.ReadFile(logPath); string(b) != "line 0\nline 1\nline 2\nline 3\n" {
		t.Errorf("log file holds %q: the offset is not shared", b)
	}
	got.Close()
	sf, size, err := young.TakeState("cache")
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if _, err := sf.ReadAt(b, 0); err != nil || string(b) != `{"k":"v"}` {
		t.Errorf("state: %q, %v", b, err)
	}
	seals, err := unix.FcntlInt(sf.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_WRITE == 0 {
		t.Errorf("state's memfd seals %#x (%v), want F_SEAL_WRITE", seals, err)
	}
	sf.Close()

	for _, c := range []struct {
		take func() error
		why  string
	}{
		{func() error { _, err := young.TakeFile("log"); return err }, "taken already"},
		{func() error { _, err := young.TakeFile("empty"); return err }, "it is a state: take it with State"},
		{func() error { _, _, err := young.TakeState("spare"); return err }, "it is a file: take it with File"},
		{func() error { _, err := young.TakeFile("nothing"); return err }, "it offered none under that name"},
	} {
		err := c.take()
		if !errors.Is(err, ErrNotHandedOver) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("take: %v, want ErrNotHandedOver saying %q", err, c.why)
		}
	}
	// "spare" and "empty" were not taken: Ready closes them.
	before := openFDs(t)
	young.closeUntaken()
	if closed := before - openFDs(t); closed != 2 {
		t.Errorf("Ready closed %d descriptors, want the 2 nobody took", closed)
	}
	if _, err := young.TakeFile("spare"); !errors.Is(err, ErrNotHandedOver) || !strings.Contains(err.Error(), "before Ready") {
		t.Errorf("take after Ready: %v", err)
	}
	young.closeHandover()
	old.closeHandover()
	lf.Close()
	if err := old.OfferFile("late", lf); err == nil {
		t.Error("OfferFile after Close succeeded")
	}
	if n := openFDs(t); n != base {
		t.Errorf("%d descriptors open at the end, %d at the start", n, base)
	}
}

// TestHandoverSnapshotFailure: a failing snapshot fails the handover with
// the state's name, and the memory files of the states before it are
// closed.
func TestHandoverSnapshotFailure(t *testing.T) {
	base := openFDs(t)
	old := quietHandoff()
	old.OfferState("first", func() ([]byte, error) { return []byte("fine"), nil })
	old.OfferState("second", func() ([]byte, error) { return nil, errors.New("database gone") })
	out, err := old.prepare()
	if err == nil || err.Error() != `state "second": database gone` {
		t.Fatalf("prepare: %v, %d messages; want the second state's error", err, len(out))
	}
	if n := openFDs(t); n != base {
		t.Errorf("%d descriptors open after the failed snapshot, %d before", n, base)
	}
}

// TestHandoverMaxOffers: the most a generation may offer is queued on the
// side channel before anyone reads it (the new process does not run yet),
// and arrives whole.
func TestHandoverMaxOffers(t *testing.T) {
	base := openFDs(t)
	old := quietHandoff()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	for i := range MaxOffers {
		if i%2 == 0 {
			err = old.OfferFile(fmt.Sprint("f", i), f)
		} else {
			err = old.OfferState(fmt.Sprint("s", i), func() ([]byte, error) { return []byte(strings.Repeat("x", 1000)), nil })
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := old.OfferFile("one-more", os.Stdin); err == nil || !strings.Contains(err.Error(), fmt.Sprint("at most ", MaxOffers)) {
		t.Fatalf("offer %d: %v, want the limit", MaxOffers+1, err)
	}
	young := quietHandoff()
	if err := handOver(t, old, young); err != nil {
		t.Fatal(err)
	}
	if n := len(young.ho.got); n != MaxOffers {
		t.Fatalf("%d arrived, want %d", n, MaxOffers)
	}
	young.closeUntaken()
	old.closeHandover()
	if n := openFDs(t); n != base {
		t.Errorf("%d descriptors open at the end, %d at the start", n, base)
	}
}

// TestHandoverAcrossVersions: a version 1 child (whose reader after the
// hello is listenParent, unchanged since version 1) goes on working with
// a parent that hands things over, and drops their descriptors; a child of
// a version 1 parent (no "offers" in its hello) is handed nothing, and
// says why.
func TestHandoverAcrossVersions(t *testing.T) {
	t.Run("version 1 child", func(t *testing.T) {
		base := openFDs(t)
		old := quietHandoff()
		f, _ := os.Open(os.DevNull)
		old.OfferFile("log", f)
		f.Close()
		old.OfferState("cache", func() ([]byte, error) { return []byte("x"), nil })
		out, err := old.prepare()
		if err != nil {
			t.Fatal(err)
		}
		lo, ly := sideChannel(t)
		lo.write(message{Version: Version, Generation: 2, Offers: len(out)}, nil)
		lo.send(out)
		lo.write(message{Upgrade: true}, nil)
		// What a version 1 child does: read the hello, then listenParent.
		v1 := quietHandoff()
		if _, _, err := ly.read(); err != nil {
			t.Fatal(err)
		}
		v1.wg.Add(1)
		go v1.listenParent(ly)
		select {
		case <-v1.Forwarded():
		case <-time.After(5 * time.Second):
			t.Fatal("the version 1 child did not get the request passed on after the handover's messages")
		}
		ly.conn.SetReadDeadline(time.Now())
		v1.wg.Wait()
		old.closeHandover()
		lo.close()
		ly.close()
		// It dropped the descriptors without closing them; their
		// finalizers do.
		deadline := time.Now().Add(5 * time.Second)
		for openFDs(t) != base && time.Now().Before(deadline) {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		if n := openFDs(t); n != base {
			t.Errorf("%d descriptors open at the end, %d at the start", n, base)
		}
	})
	t.Run("version 1 parent", func(t *testing.T) {
		lo, ly := sideChannel(t)
		lo.write(message{Version: 1, Generation: 2}, nil)
		hello, _, err := ly.read()
		if err != nil {
			t.Fatal(err)
		}
		young := quietHandoff()
		young.ho.hasParent, young.ho.peer = true, hello.Version
		if err := young.receive(ly, hello.Offers); err != nil {
			t.Fatal(err)
		}
		_, err = young.TakeFile("log")
		if !errors.Is(err, ErrNotHandedOver) || !strings.Contains(err.Error(), "handoff version 1") {
			t.Fatalf("TakeFile: %v, want ErrNotHandedOver naming version 1", err)
		}
	})
	t.Run("first generation", func(t *testing.T) {
		_, _, err := quietHandoff().TakeState("cache")
		if !errors.Is(err, ErrNotHandedOver) || !strings.Contains(err.Error(), "first generation") {
			t.Fatalf("TakeState: %v", err)
		}
	})
}

// FuzzHandoverReceive sends arbitrary sequences of side-channel messages
// after a hello that announces them, and checks what the new generation
// makes of them against a rule written out separately: it takes them all
// if and only if each names a file or a state (not both, not neither),
// under a valid name not seen before, with a descriptor attached; else it
// fails and keeps nothing open.
func FuzzHandoverReceive(f *testing.F) {
	f.Add([]byte{0x04, 0x0d, 0x15})       // file a, state b, file c
	f.Add([]byte{0x04, 0x04})             // the same name twice
	f.Add([]byte{0x00})                   // no descriptor
	f.Add([]byte{0x06})                   // both file and state
	f.Add([]byte{0x07})                   // neither
	f.Add([]byte{0x3c, 0x44, 0x2c, 0x35}) // bad names, valid ones
	f.Add([]byte{})
	names := []string{"", "a", "b", "c", "log.1", "bad name", "x:y", "z_-9"}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { devNull.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 16 {
			data = data[:16]
		}
		base := openFDs(t)
		lo, ly := sideChannel(t)
		lo.write(message{Version: Version, Generation: 2, Offers: len(data)}, nil)
		want := map[string]bool{} // name → is a state
		valid := true
		for _, b := range data {
			kind, fd, name := b&3, b&4 != 0, names[(b>>3)&7]
			var m message
			switch kind {
			case 0:
				m.File = name
			case 1:
				m.State = name
			case 2:
				m.File, m.State = name, name
			}
			var attach *os.File
			if fd {
				attach = devNull
			}
			if err := lo.write(m, attach); err != nil {
				t.Fatal(err)
			}
			_, seen := want[name]
			ok := (kind == 0 || kind == 1) && fd && name != "" && !strings.ContainsAny(name, " :") && !seen
			valid = valid && ok
			want[name] = kind == 1
		}
		ly.read() // the hello
		young := quietHandoff()
		err := young.receive(ly, len(data))
		if valid != (err == nil) {
			t.Fatalf("messages %x: receive: %v, want success %v", data, err, valid)
		}
		if valid {
			if len(young.ho.got) != len(want) {
				t.Fatalf("messages %x: %d taken, want %d", data, len(young.ho.got), len(want))
			}
			for name, state := range want {
				if x, ok := young.ho.got[name]; !ok || x.state != state {
					t.Fatalf("messages %x: %q: %+v, want state=%v", data, name, x, state)
				}
			}
		}
		young.closeHandover()
		lo.close()
		ly.close()
		if n := openFDs(t); n != base {
			t.Fatalf("messages %x: %d descriptors open after, %d before", data, n, base)
		}
	})
}

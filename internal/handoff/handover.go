package handoff

// Files and state handed to the next generation (handoff version 2).
//
// The old generation sends them over the side channel, right after its
// hello and before the new process runs, one message per name with the
// descriptor attached; the hello says how many follow, so that New in the
// new generation reads them all before it returns. They never go through
// tableflip's Fds: tableflip passes every file a generation took on to
// every later one, and has no way to drop one.

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync"
	"time"
)

// Errors of the handover, matched with errors.Is (package upgrade exports
// them).
var (
	// ErrNotHandedOver: the previous generation handed nothing over under
	// that name (or there is none, or it was taken already, or Ready
	// closed it).
	ErrNotHandedOver = errors.New("not handed over by the previous generation")
	// ErrNameTaken: a file or state is already offered under that name.
	ErrNameTaken = errors.New("name already offered to the next generation")
)

// MaxOffers bounds the files and states one generation offers. All of
// them are queued on the side channel before the new process runs, so
// they must fit in the socket's send buffer (about 200 small messages with
// Linux's default of 208 KiB); the handover is for a few named things, not
// for a pool of connections.
const MaxOffers = 64

// offersTimeout bounds the wait for the messages a hello announced; they
// were queued before this process started, so they are there at once.
const offersTimeout = 5 * time.Second

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidName reports whether name can name a file or state: 1 to 64 of
// A-Z a-z 0-9 . _ - (the rule for listener names).
func ValidName(name string) bool { return validName.MatchString(name) }

// offer is one thing the serving generation hands to every next one.
type offer struct {
	name     string
	file     *os.File               // our own copy, for OfferFile
	snapshot func() ([]byte, error) // for OfferState
}

// handed is one thing the previous generation handed to this one.
type handed struct {
	file  *os.File
	state bool   // file holds the bytes of a state
	size  int64  // announced size of a state
	build string // of the previous executable (previousExeName)
}

// handover is the Handoff's part for files and state.
type handover struct {
	mu     sync.Mutex
	offers []offer
	closed bool // Close ran: offers are refused

	got   map[string]handed // from the previous generation, until taken
	taken map[string]bool   // names taken already
	ready bool              // Ready closed what nobody took
	// hasParent says a previous generation started this one, and peer
	// which handoff version it speaks: they explain ErrNotHandedOver.
	hasParent bool
	peer      int
}

// OfferFile hands a copy of f to every later generation under name; the
// caller may close f. The copy is closed at Close.
func (h *Handoff) OfferFile(name string, f *os.File) error {
	if f == nil {
		return fmt.Errorf("file %q: nil *os.File", name)
	}
	dup, err := dupFile(f)
	if err != nil {
		return fmt.Errorf("file %q: copying its descriptor: %w", name, err)
	}
	if err := h.addOffer(offer{name: name, file: dup}); err != nil {
		dup.Close()
		return err
	}
	return nil
}

// OfferState makes snapshot's bytes, taken at the start of each upgrade,
// the state every later generation gets under name.
func (h *Handoff) OfferState(name string, snapshot func() ([]byte, error)) error {
	if snapshot == nil {
		return fmt.Errorf("state %q: nil snapshot function", name)
	}
	return h.addOffer(offer{name: name, snapshot: snapshot})
}

func (h *Handoff) addOffer(o offer) error {
	kind := "file"
	if o.file == nil {
		kind = "state"
	}
	if !ValidName(o.name) {
		return fmt.Errorf("%s name %q: want 1 to 64 of A-Z a-z 0-9 . _ -", kind, o.name)
	}
	ho := &h.ho
	ho.mu.Lock()
	defer ho.mu.Unlock()
	if ho.closed {
		return fmt.Errorf("%s %q: the handoff is closed", kind, o.name)
	}
	for _, x := range ho.offers {
		if x.name == o.name {
			return fmt.Errorf("%s %q: %w", kind, o.name, ErrNameTaken)
		}
	}
	if len(ho.offers) >= MaxOffers {
		return fmt.Errorf("%s %q: at most %d files and states can be offered", kind, o.name, MaxOffers)
	}
	ho.offers = append(ho.offers, o)
	return nil
}

// outgoing is one message of a handover and its file; own says the file
// was made for this attempt (a state's memfd) and is closed once sent.
type outgoing struct {
	m    message
	f    *os.File
	own  bool
	name string
}

// prepare takes the snapshots of this attempt and returns what to send.
// Snapshots run without the lock: they are the application's code.
func (h *Handoff) prepare() ([]outgoing, error) {
	h.ho.mu.Lock()
	offers := append([]offer(nil), h.ho.offers...)
	h.ho.mu.Unlock()
	out := make([]outgoing, 0, len(offers))
	for _, o := range offers {
		if o.file != nil {
			out = append(out, outgoing{m: message{File: o.name}, f: o.file, name: "file " + o.name})
			continue
		}
		b, err := o.snapshot()
		if err == nil {
			var f *os.File
			if f, err = newStateFile(o.name, b); err == nil {
				out = append(out, outgoing{m: message{State: o.name, Size: int64(len(b))}, f: f, own: true, name: "state " + o.name})
				continue
			}
			err = fmt.Errorf("writing it to a memory file: %w", err)
		}
		closeOwn(out)
		return nil, fmt.Errorf("state %q: %w", o.name, err)
	}
	return out, nil
}

func closeOwn(out []outgoing) {
	for _, o := range out {
		if o.own {
			o.f.Close()
		}
	}
}

// send writes the handover's messages after the hello; the memory files
// made for this attempt are closed (what is in flight stays open in the
// socket until the new generation takes it, or the socket is gone).
func (l *link) send(out []outgoing) error {
	defer closeOwn(out)
	for _, o := range out {
		if err := l.write(o.m, o.f); err != nil {
			return fmt.Errorf("handing over %s: %w", o.name, err)
		}
	}
	return nil
}

// receive reads the n messages the previous generation's hello announced.
func (h *Handoff) receive(l *link, n int) error {
	got := make(map[string]handed, n)
	keep := false
	defer func() {
		if !keep {
			for _, x := range got {
				x.file.Close()
			}
		}
	}()
	l.conn.SetReadDeadline(time.Now().Add(offersTimeout))
	defer l.conn.SetReadDeadline(time.Time{})
	for i := range n {
		m, f, err := l.read()
		if err != nil {
			return fmt.Errorf("handoff: reading file or state %d of %d the previous generation handed over: %w", i+1, n, err)
		}
		name, state := m.File, false
		if m.State != "" {
			name, state = m.State, true
		}
		_, dup := got[name]
		switch {
		case f == nil || !ValidName(name) || dup || (m.File != "" && m.State != ""):
			if f != nil {
				f.Close()
			}
			return fmt.Errorf("handoff: message %d of %d from the previous generation is not a file or state with a descriptor under a new valid name: %+v", i+1, n, m)
		}
		got[name] = handed{file: f, state: state, size: m.Size, build: m.Build}
	}
	h.ho.mu.Lock()
	h.ho.got = got
	h.ho.mu.Unlock()
	keep = true
	return nil
}

// take returns what the previous generation handed over under name if it
// is of the kind asked for, once.
func (h *Handoff) take(name string, state bool) (handed, error) {
	kind, wrong := "file", "it is a state: take it with State"
	if state {
		kind, wrong = "state", "it is a file: take it with File"
	}
	ho := &h.ho
	ho.mu.Lock()
	defer ho.mu.Unlock()
	x, ok := ho.got[name]
	why := ""
	switch {
	case ok && x.state != state:
		why = wrong
	case ok:
		delete(ho.got, name)
		if ho.taken == nil {
			ho.taken = make(map[string]bool)
		}
		ho.taken[name] = true
		return x, nil
	case ho.taken[name]:
		why = "taken already"
	case ho.ready:
		why = "anything not taken before Ready is closed"
	case ho.closed:
		why = "the handoff is closed (Stop)"
	case !ho.hasParent:
		why = "this is the first generation"
	case ho.peer < 2:
		why = fmt.Sprintf("the previous generation speaks handoff version %d, which hands over no files or state", ho.peer)
	default:
		why = "it offered none under that name"
	}
	return handed{}, fmt.Errorf("%s %q: %w: %s", kind, name, ErrNotHandedOver, why)
}

// TakeFile returns the file the previous generation handed over under
// name; it is the caller's from then on.
func (h *Handoff) TakeFile(name string) (*os.File, error) {
	x, err := h.take(name, false)
	return x.file, err
}

// TakeState returns the file that holds the state handed over under name,
// and the size the previous generation gave for it; the caller reads and
// closes it.
func (h *Handoff) TakeState(name string) (*os.File, int64, error) {
	x, err := h.take(name, true)
	return x.file, x.size, err
}

// closeUntaken closes what the previous generation handed over and nobody
// took; it is called at Ready.
func (h *Handoff) closeUntaken() {
	ho := &h.ho
	ho.mu.Lock()
	got := ho.got
	ho.got = nil
	ho.ready = true
	ho.mu.Unlock()
	for name, x := range got {
		x.file.Close()
		h.log.Info("closed what the previous generation handed over and nobody took", "name", name, "state", x.state)
	}
}

// closeHandover releases everything of the handover, at Close.
func (h *Handoff) closeHandover() {
	ho := &h.ho
	ho.mu.Lock()
	offers, got := ho.offers, ho.got
	ho.offers, ho.got, ho.closed = nil, nil, true
	ho.mu.Unlock()
	for _, o := range offers {
		if o.file != nil {
			o.file.Close()
		}
	}
	for _, x := range got {
		x.file.Close()
	}
}

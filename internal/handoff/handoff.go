// Package handoff passes a service from one generation of its process to
// the next: it starts the new binary, hands it the listening sockets, and
// learns from it, over a side channel, its PID, its generation, whether
// the two speak the same handoff version, and, if it fails before it is
// ready, the last lines it wrote to stderr.
//
// It is the only package that knows tableflip (github.com/cloudflare/tableflip).
// Every generation uses tableflip's child end (New, Ready, WaitForParent,
// the inherited descriptors); the parent's end, which starts the next
// generation, this package speaks itself (spawn.go), so that a generation
// can start new ones again after a take-back and keeps its own copies of
// the sockets while it drains. It also handles everything about tableflip
// that is awkward: the texts of its New (classify.go), its one Upgrader
// per process, its environment marker, descriptors 3 and 4 left
// inheritable in generation 2 and later, and a relative os.Args[0] after
// a chdir.
//
// # The side channel
//
// For each attempt the old generation makes a datagram socket pair and
// hands one end to the new generation under the name sideName. Messages
// are one JSON object per datagram:
//
//	old → new   {"v":2,"min":0,"gen":N,"offers":K}  first, before the new process runs
//	old → new   {"file":"name"}                     K of these and the next kind, right after
//	                                                the hello, each with the file attached
//	old → new   {"state":"name","size":S}           with a memfd of S bytes attached (an
//	                                                unlinked temporary file without memfd)
//	new → old   {"v":2,"pid":P,"gen":N,"build":B}   in New, with the read end of the
//	                                                new generation's stderr pipe attached
//	new → old   {"v":2,"pid":P,"err":"…"}           instead, when it cannot take over
//	new → old   {"hurry":true}                      cut your drain short (upgrade waiting)
//	old → new   {"upgrade":true}                    a request arrived while you started: carry it out
//	old → new   {"drained":{…}}                     what my drain came to, when it has ended
//
// The new generation decides whether the two versions can work together
// (it knows both); a generation of hitless older than the side channel
// (version 0) sends nothing, and is accepted: it inherits the sockets under
// the same names.
//
// Version 2 added "offers" and the file and state messages (handover.go).
// A version 1 child ignores them: its reader after the hello acts only on
// "upgrade", and the descriptors it drops are closed by their finalizers,
// at its next collection (the Go runtime collects at least every two
// minutes).
// A version 1 parent sends no "offers": its child is handed nothing, and
// says so (ErrNotHandedOver) when asked.
package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/hitlessgo/hitless/control"
)

// Version is the handoff protocol this build speaks, and minPeer the oldest
// one it works with. Raise Version when what passes between generations
// changes; raise minPeer only when an older peer can no longer be served.
var (
	Version = 3
	minPeer = 0
)

// versions overrides Version and minPeer as "version/minPeer", for tests
// that build a binary pretending to be another release
// (-ldflags "-X github.com/hitlessgo/hitless/internal/handoff.versions=99/99").
var versions string

func init() {
	if versions == "" {
		return
	}
	var v, m int
	if _, err := fmt.Sscanf(versions, "%d/%d", &v, &m); err == nil {
		Version, minPeer = v, m
	}
}

const (
	// sideName is the name of the side channel's file.
	sideName = "hitless.side"
	// legacyStderrName is where version 0 parents put the service's real
	// stderr, having given the new generation a pipe as its stderr.
	legacyStderrName = "hitless.stderr"
	// legacyGeneration is how version 0 parents passed the generation.
	legacyGeneration = "HITLESS_GENERATION"
	// listenerNetwork is the network part of the key under which
	// tableflip hands listeners over; the address part is the logical
	// name. It is deliberately not "unix": tableflip unlinks the path of
	// "unix" keys on its own schedule (and keys on address text, which is
	// why names are used at all: tableflip#46). Version 0 used it too.
	listenerNetwork = "hitless"
	// tableflipMarker is the variable tableflip sets for the new process
	// (a private constant of tableflip v1.2.3, parent.go; the contract
	// test checks it). It is removed once read, so that processes the
	// application starts do not believe they were handed descriptors.
	tableflipMarker = "TABLEFLIP_HAS_PARENT_7DIU3"
)

// errNoHello explains a new generation that ended without a word on the
// side channel.
var errNoHello = errors.New("it ended before it reached hitless (upgrade.New), so what it wrote is only in the service's log")

// markerTimeout bounds the wait for a parent's descriptor names.
const markerTimeout = 5 * time.Second

// ErrIncompatible matches the error of a new generation that cannot work
// with its parent's handoff version, or the other way round.
var ErrIncompatible = errors.New("incompatible handoff version")

// Options configure a Handoff.
type Options struct {
	// ReadyTimeout is how long a new generation has to become ready
	// before it is killed.
	ReadyTimeout time.Duration
	// Logger receives what happens; nil means silent.
	Logger *slog.Logger
	// Stderr receives the new generation's stderr while it starts (it
	// passes through this process, which keeps the last lines for the
	// error). Nil means os.Stderr, the stream the new generation would
	// have written to anyway.
	Stderr *os.File
	// Build names the build this process runs (upgrade.Options.Version);
	// it goes to the previous generation in the hello (Child.Build).
	Build string
}

// Handoff is this process's end of the handoff: the link to the
// generation before it, if any, and the means to start the next one.
type Handoff struct {
	tf         *tableflip.Upgrader
	log        *slog.Logger
	timeout    time.Duration
	stderr     *os.File
	generation int
	build      string

	parent      *link    // to the previous generation; nil for generation 1 and version 0 parents
	savedStderr *os.File // the real stderr, back on fd 2 at Ready
	legacyErr   *os.File // a version 0 parent's real stderr

	hurried   chan struct{}        // a newer generation asked us to cut our drain short
	forwarded chan struct{}        // our parent passed an upgrade request on
	drained   chan json.RawMessage // our parent's drain report (one, buffered)

	ho handover // files and state, to the next generation and from the previous one

	self        *executable // our own executable, for the next generation; nil if it cannot be kept
	previous    *executable // the previous generation's, for a rollback; nil if none
	previousErr error       // why there is none, when it is known
	rolledBack  bool        // a rollback started this generation

	res   reserve       // our copies of the sockets, for every new generation
	stopC chan struct{} // closed by Stop: a start in progress kills its process

	mu        sync.Mutex
	child     *link      // to the generation we started, once it is ready
	succ      *successor // the generation we started, once it is ready, until TakeBack
	relays    []*os.File // read ends of new generations' stderr pipes, closed at Close
	readied   bool       // Ready has succeeded
	starting  bool       // a Start is in progress
	takenBack bool       // we took the service back: Listener and PacketConn come from res
	stopped   bool
	closed    bool
	wg        sync.WaitGroup
}

// Child is a new generation that took over.
type Child struct {
	PID int // its process ID
	// Version is the handoff version it speaks.
	Version int
	// Build is the build it runs, as it said; empty if it did not.
	Build string
	// Died is closed if it exits without having said it stops for good
	// (Leave): it crashed, was killed, or exited on its own while this
	// generation still holds the sockets. See TakeBack.
	Died <-chan struct{}
}

// initialWD is the directory tableflip starts new generations in (it
// reads it at its own initialisation, before ours).
var initialWD, _ = os.Getwd()

// New takes over from the previous generation, if this process is one
// that tableflip started, and makes this process able to start the next.
// Only one may exist per process (ErrSingleton).
func New(opts Options) (*Handoff, error) {
	absArgv0()
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = tableflip.DefaultUpgradeTimeout
	}
	// tableflip reads the names of the handed-over descriptors from fd 4
	// and would wait forever for a parent that never writes them (the
	// marker inherited by a process that was not started by an upgrade,
	// with some pipe on fd 4). A real parent writes them at once.
	if os.Getenv(tableflipMarker) != "" && !readable(4, markerTimeout) {
		return nil, fmt.Errorf("%w (nothing arrived on descriptor 4 within %v)", errMarkerWithoutFds, markerTimeout)
	}
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: opts.ReadyTimeout})
	if err != nil {
		return nil, classifyNew(err)
	}
	h := &Handoff{
		tf: tf, log: opts.Logger, timeout: opts.ReadyTimeout, stderr: opts.Stderr, generation: 1, build: opts.Build,
		hurried: make(chan struct{}, 1), forwarded: make(chan struct{}, 1),
		drained: make(chan json.RawMessage, 1),
		stopC:   make(chan struct{}),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.stderr == nil {
		h.stderr = os.Stderr
	}
	os.Unsetenv(tableflipMarker)
	if self, err := openSelf(h.build); err != nil {
		h.log.Warn("no rollback to this build will be possible", "err", err)
	} else {
		h.self = self
	}
	if !tf.HasParent() {
		return h, nil
	}
	// tableflip leaves its pipes to the parent on descriptors 3 and 4
	// inheritable; a process the application spawns must not get them
	// (one holding fd 3 could even say "ready" for us).
	closeOnExec(3)
	closeOnExec(4)
	h.ho.hasParent = true
	if err := h.greetParent(); err != nil {
		tf.Stop()
		h.Close()
		return nil, err
	}
	return h, nil
}

// absArgv0 makes a relative os.Args[0] absolute against the directory the
// process started in. tableflip starts the next generation from that
// directory but looks the binary up from the current one, so after a
// chdir a relative path would name another file (or none) — and the
// pre-flight check would look at a different one than the one executed.
func absArgv0() {
	p := os.Args[0]
	if filepath.IsAbs(p) || !containsSlash(p) || initialWD == "" {
		return
	}
	os.Args[0] = filepath.Join(initialWD, p)
}

func containsSlash(s string) bool {
	for i := range len(s) {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

// greetParent reads the previous generation's hello and answers it with
// ours, taking over our stderr so that the parent sees what we write until
// we are ready.
func (h *Handoff) greetParent() error {
	f, err := h.tf.Fds.File(sideName)
	if err != nil {
		return fmt.Errorf("handoff: side channel: %w", err)
	}
	if f == nil {
		h.legacyParent()
		return nil
	}
	l, err := newLink(f)
	if err != nil {
		return fmt.Errorf("handoff: side channel: %w", err)
	}
	h.parent = l
	l.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	hello, _, err := l.read()
	l.conn.SetReadDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("handoff: reading the previous generation's hello: %w", err)
	}
	if hello.Generation > 0 {
		h.generation = hello.Generation
	}
	h.ho.peer = hello.Version
	me := message{Version: Version, PID: os.Getpid(), Generation: h.generation, Build: h.build}
	if hello.Version < minPeer || Version < hello.Min {
		err := fmt.Errorf("handoff: %w %d/%d: the running generation speaks version %d (and needs at least %d), this binary %d (and needs at least %d)",
			ErrIncompatible, hello.Version, Version, hello.Version, hello.Min, Version, minPeer)
		me.Err = err.Error()
		l.write(me, nil)
		return err
	}
	r, saved, err := captureStderr()
	if err != nil {
		// Without the capture the parent cannot quote our last words;
		// everything still reaches the service's stderr.
		h.log.Warn("cannot pass stderr through the previous generation", "err", err)
	} else {
		h.savedStderr = saved
	}
	err = l.write(me, r)
	if r != nil {
		r.Close()
	}
	if err != nil {
		return fmt.Errorf("handoff: answering the previous generation: %w", err)
	}
	// After our hello, so that an error here reaches the parent through
	// the stderr pipe; before the reader below, which would take them.
	if err := h.receive(l, hello.Offers); err != nil {
		return err
	}
	h.rolledBack = hello.Rollback
	if x, err := h.take(previousExeName, false); err == nil {
		if e, err := newExecutable(x.file, x.build); err != nil {
			x.file.Close()
			h.previousErr = err
		} else {
			h.previous = e
		}
	}
	h.wg.Add(1)
	go h.listenParent(l)
	return nil
}

// legacyParent takes over from a version 0 parent: generation number from
// the environment, and its real stderr to put back at Ready.
func (h *Handoff) legacyParent() {
	if g, err := strconv.Atoi(os.Getenv(legacyGeneration)); err == nil && g > 1 {
		h.generation = g
	}
	os.Unsetenv(legacyGeneration)
	if f, err := h.tf.Fds.File(legacyStderrName); err == nil && f != nil {
		h.legacyErr = f
	}
}

// listenParent receives what the previous generation sends after the
// hello: requests passed on to us.
func (h *Handoff) listenParent(l *link) {
	defer h.wg.Done()
	for {
		m, _, err := l.read()
		if err != nil {
			return
		}
		if m.Upgrade {
			notify(h.forwarded)
		}
		if len(m.Drained) > 0 {
			select {
			case h.drained <- m.Drained:
			default: // a parent drains once; a second report is ignored
			}
		}
	}
}

// Drained receives the report the previous generation sent with
// SendDrained, once its drain has ended.
func (h *Handoff) Drained() <-chan json.RawMessage { return h.drained }

// SendDrained sends report (a JSON value) to the generation this one
// handed over to. It fails if there is none, or it speaks handoff
// version 0.
func (h *Handoff) SendDrained(report json.RawMessage) error {
	h.mu.Lock()
	c := h.child
	h.mu.Unlock()
	if c == nil {
		return errors.New("handoff: no new generation to send the drain report to")
	}
	return c.write(message{Drained: report}, nil)
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Fail tells the previous generation why this one will not become ready
// (its readiness check failed), for its error. It changes nothing else:
// the process is expected to exit.
func (h *Handoff) Fail(err error) {
	if h.parent != nil {
		h.parent.write(message{PID: os.Getpid(), Failed: err.Error()}, nil)
	}
}

// Generation is this process's generation: 1 for the first, then 2, 3, …
func (h *Handoff) Generation() int { return h.generation }

// HasParent reports whether a previous generation started this process.
func (h *Handoff) HasParent() bool { return h.tf.HasParent() }

// Listener returns the listener the previous generation handed over under
// name, or nil. After TakeBack it returns a new listener on this
// generation's own socket of that name instead (nil if it has none).
func (h *Handoff) Listener(name string) (net.Listener, error) {
	if h.isTakenBack() {
		f := h.res.get(listenerKey(name))
		if f == nil {
			return nil, nil
		}
		return fileListener(f)
	}
	ln, err := h.tf.Fds.Listener(listenerNetwork, name)
	if ln == nil || err != nil {
		return ln, err
	}
	// Inherited sockets go on to the next generation as well.
	if err := h.AddListener(name, ln); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// AddListener hands ln to every later generation under name: the
// handoff keeps a copy of its descriptor until Close.
func (h *Handoff) AddListener(name string, ln net.Listener) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return fmt.Errorf("handoff: %T has no descriptor to hand over", ln)
	}
	return h.res.keep(listenerKey(name), sc)
}

func (h *Handoff) isTakenBack() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.takenBack
}

// Ready tells the previous generation that this one serves (it then stops
// accepting and drains), after putting the real stderr back on fd 2 and
// closing what the previous generation handed over and nobody took.
func (h *Handoff) Ready() error {
	h.closeUntaken()
	if h.savedStderr != nil {
		if err := restoreStderr(h.savedStderr); err != nil {
			h.log.Warn("restoring stderr", "err", err)
		}
		h.savedStderr.Close()
		h.savedStderr = nil
	}
	if h.legacyErr != nil {
		restoreStderr(h.legacyErr)
		h.legacyErr.Close()
		h.legacyErr = nil
	}
	if err := h.tf.Ready(); err != nil {
		return fmt.Errorf("handoff: telling the previous generation: %w", err)
	}
	h.mu.Lock()
	h.readied = true
	h.mu.Unlock()
	return nil
}

// WaitForParent waits until the previous generation has exited (at once
// for the first one). An error says it ended abnormally; it is gone
// either way. ctx bounds the wait.
func (h *Handoff) WaitForParent(ctx context.Context) error {
	return h.tf.WaitForParent(ctx)
}

// Hurry asks the previous generation, while it drains, to cut its drain
// short.
func (h *Handoff) Hurry() error {
	if h.parent == nil {
		if h.HasParent() {
			return errors.New("handoff: the previous generation speaks handoff version 0, which cannot be hurried")
		}
		return errors.New("handoff: there is no previous generation")
	}
	return h.parent.write(message{Hurry: true}, nil)
}

// Hurried receives when the generation this one handed over to asks it to
// cut its drain short.
func (h *Handoff) Hurried() <-chan struct{} { return h.hurried }

// Forwarded receives when the previous generation passes on a request to
// upgrade that arrived while it was starting this one.
func (h *Handoff) Forwarded() <-chan struct{} { return h.forwarded }

// Forward passes a request to upgrade on to the generation this one handed
// over to.
func (h *Handoff) Forward() error {
	h.mu.Lock()
	c := h.child
	h.mu.Unlock()
	if c == nil {
		return errors.New("handoff: the new generation speaks handoff version 0, which cannot take a request passed on")
	}
	return c.write(message{Upgrade: true}, nil)
}

// Stop ends upgrades for good: a new generation that is starting is
// killed, and Start returns control.ErrStopped from then on.
func (h *Handoff) Stop() {
	h.mu.Lock()
	if !h.stopped {
		h.stopped = true
		close(h.stopC)
	}
	h.mu.Unlock()
	h.tf.Stop()
}

// Stopped reports whether Stop was called: such a generation never takes
// the service back.
func (h *Handoff) Stopped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopped
}

// Close stops (see Stop) and releases what the handoff holds: the links to
// both neighbours and the goroutines that read them, its copies of the
// sockets and of offered files, and what the previous generation handed
// over and nobody took. The listeners stay open (their owner closes them).
// A new generation that took over keeps its end of tableflip's pipe to
// this process until this process exits: that EOF is what its
// WaitForParent waits for.
func (h *Handoff) Close() {
	h.Stop()
	h.mu.Lock()
	h.closed = true
	c, relays := h.child, h.relays
	h.mu.Unlock()
	for _, r := range relays {
		r.Close()
	}
	if h.parent != nil {
		h.parent.close()
	}
	if c != nil {
		c.close()
	}
	h.wg.Wait()
	h.res.close()
	h.closeHandover()
	h.self.close()
	h.previous.close()
	if h.savedStderr != nil {
		h.savedStderr.Close()
	}
	if h.legacyErr != nil {
		h.legacyErr.Close()
	}
}

// Start starts the next generation (the binary at os.Args[0], with the
// same arguments, environment and initial working directory, and the
// handed-over descriptors) and waits until it is ready, or has failed, or
// the ready timeout passed, or Stop was called. A failure is a
// *control.ChildError (its process is gone by then) that carries the last
// lines it wrote to stderr; control.ErrStopped after Stop,
// control.ErrUpgraded while a generation this one started serves,
// control.ErrNotReady before Ready. After TakeBack it can start one again.
func (h *Handoff) Start() (Child, error) { return h.start(false) }

// Rollback is Start with the previous generation's executable (kept open
// since it ran, so whatever is at its path now does not matter) instead of
// os.Args[0]; the new process's os.Args[0] is still os.Args[0]. It fails
// with an error matching ErrNoRollback, saying why, when there is none:
// this is the first generation, or one a rollback started, or the
// previous one could not keep its executable (a script, no /proc), or
// that file was overwritten in place since.
func (h *Handoff) Rollback() (Child, error) { return h.start(true) }

// PreviousBinary is a path through which the executable a rollback would
// start can be read, for a pre-flight check, or ErrNoRollback.
func (h *Handoff) PreviousBinary() (string, error) {
	if h.previous == nil {
		return "", h.noRollback()
	}
	var fd int
	ctl(h.previous.f, func(d int) { fd = d })
	return "/proc/self/fd/" + strconv.Itoa(fd), nil
}

func (h *Handoff) start(rollback bool) (Child, error) {
	var exe *executable
	if rollback {
		if h.previous == nil {
			return Child{}, h.noRollback()
		}
		if err := h.previous.check(); err != nil {
			return Child{}, fmt.Errorf("%w: %w", ErrNoRollback, err)
		}
		exe = h.previous
	}
	h.mu.Lock()
	var refused error
	switch {
	case h.stopped:
		refused = control.ErrStopped
	case h.succ != nil:
		refused = control.ErrUpgraded
	case !h.readied:
		refused = control.ErrNotReady
	case h.starting:
		refused = errInProgress
	}
	if refused != nil {
		h.mu.Unlock()
		return Child{}, refused
	}
	h.starting = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.starting = false
		h.mu.Unlock()
	}()
	startFailed := func(err error) (Child, error) {
		return Child{}, &control.ChildError{Reason: control.ReasonStartFailed, Err: err}
	}
	// The state is taken as late as can be, and a failure to take it
	// fails the upgrade before anything is started.
	out, err := h.prepare()
	if err != nil {
		return startFailed(err)
	}
	if !rollback && h.self != nil {
		// The new generation can roll back to this one; one started by a
		// rollback gets nothing: it has nothing older to go back to.
		out = append(out, outgoing{m: message{File: previousExeName, Build: h.build}, f: h.self.f, name: "the executable"})
	}
	l, peer, err := newLinkPair()
	if err != nil {
		closeOwn(out)
		return startFailed(fmt.Errorf("side channel: %w", err))
	}
	defer peer.Close()
	if err := l.write(message{Version: Version, Min: minPeer, Generation: h.generation + 1, Offers: len(out), Rollback: rollback}, nil); err != nil {
		closeOwn(out)
		l.close()
		return startFailed(fmt.Errorf("side channel: %w", err))
	}
	if err := l.send(out); err != nil {
		l.close()
		return startFailed(fmt.Errorf("side channel: %w", err))
	}
	a := h.newAttempt(l)
	sp, err := h.spawn(peer, exe)
	if err == nil {
		err = sp.await(h.timeout, h.stopC)
	}
	hello := a.end(err != nil)
	if err == nil {
		a.mu.Lock()
		left := a.leaving
		a.mu.Unlock()
		return h.took(sp, l, hello, left), nil
	}
	l.close()
	var ce *control.ChildError
	if errors.As(err, &ce) {
		ce.Stderr = a.tail()
		if hello.PID == 0 && ce.Reason == control.ReasonExited && ce.Err == nil {
			// Its stderr passes through us only from its New on; what it
			// wrote before (a flag it did not know, a config it could not
			// read) went straight to the service's stderr.
			ce.Err = errNoHello
		}
		if f := a.failure(); f != "" && ce.Err == nil {
			ce.Err = errors.New(f)
		}
		if hello.Err != "" {
			ce.Reason, ce.Err = control.ReasonIncompatible, errors.New(hello.Err)
			if ce.PID == 0 {
				ce.PID = hello.PID
			}
		}
	}
	return Child{}, err
}

// spawn starts the new process with the reserve and the side channel's
// other end. The reserve stays locked meanwhile: Close must not close a
// descriptor the fork is copying.
func (h *Handoff) spawn(side *os.File, exe *executable) (*spawned, error) {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	if h.res.closed {
		return nil, control.ErrStopped
	}
	files := make(map[fileName]*os.File, len(h.res.files)+1)
	for k, f := range h.res.files {
		files[k] = f
	}
	files[fileKey(sideName)] = side
	sp, err := spawn(files, exe)
	if err != nil {
		return nil, &control.ChildError{Reason: control.ReasonStartFailed, Err: err}
	}
	return sp, nil
}

// took records the ready new generation sp, reached over l, as this
// one's successor, and starts watching it.
func (h *Handoff) took(sp *spawned, l *link, hello message, left bool) Child {
	s := &successor{
		pid: sp.proc.Pid, proc: sp.proc, namesW: sp.namesW, exited: sp.exited,
		died: make(chan struct{}), leaving: make(chan struct{}), read: make(chan struct{}),
	}
	if left {
		close(s.leaving)
	}
	h.mu.Lock()
	h.succ = s
	if hello.Version > 0 {
		s.link = l
		h.child = l
		h.wg.Add(1)
		go h.listenChild(s)
	} else {
		l.close()
		close(s.read)
	}
	h.mu.Unlock()
	go s.watch(sp)
	return Child{PID: s.pid, Version: hello.Version, Build: hello.Build, Died: s.died}
}

// watch waits for the successor's exit (it belongs to that process, and
// may outlive this one), lets the link's reader take what it sent last,
// and closes died unless it said it was leaving.
func (s *successor) watch(sp *spawned) {
	<-sp.exited
	s.state, s.waitErr = sp.state, sp.err
	left := false
	if s.link != nil {
		// Stop the reader, then take what it sent before it died, which
		// is queued already: a read past its deadline fails without
		// looking, so the queue is read here, without waiting.
		s.link.conn.SetReadDeadline(time.Now())
		<-s.read
		for {
			m, f, err := s.link.readNow()
			if err != nil {
				break
			}
			if f != nil {
				f.Close()
			}
			left = left || m.Leaving
		}
	}
	select {
	case <-s.leaving:
		left = true
	default:
	}
	if !left {
		close(s.died)
	}
}

// listenChild receives what the generation we handed over to sends: a
// request to hurry, or that it stops for good.
func (h *Handoff) listenChild(s *successor) {
	defer h.wg.Done()
	defer close(s.read)
	leaving := false
	select {
	case <-s.leaving:
		leaving = true
	default:
	}
	for {
		m, f, err := s.link.read()
		if err != nil {
			return
		}
		if f != nil {
			f.Close()
		}
		if m.Hurry {
			notify(h.hurried)
		}
		if m.Leaving && !leaving {
			leaving = true
			close(s.leaving)
		}
	}
}

// Commit gives up the take-back: the handoff closes its copies of the
// sockets now rather than at Close, so that if the new generation dies,
// its sockets close with it and clients are refused at once.
func (h *Handoff) Commit() { h.res.close() }

// Leave tells the previous generation, while it drains, that this one
// stops for good and will exit: it must not take the service back. Call it
// before the service tells systemd it stops.
func (h *Handoff) Leave() {
	if h.parent != nil {
		if err := h.parent.write(message{Leaving: true}, nil); err != nil {
			h.log.Warn("telling the previous generation that this one stops", "err", err)
		}
	}
}

// TakeBack makes this generation the one that serves again after c, the
// generation it handed over to, died (c.Died is closed): it forgets c,
// closes its end of c's pipes, and from now on Listener and PacketConn
// return new sockets made from its own copies (the accept queues kept
// what arrived meanwhile), and Start can start a new generation. It
// returns how c ended ("was killed by SIGKILL", "exited with status 2").
func (h *Handoff) TakeBack(c Child) (string, error) {
	h.mu.Lock()
	s := h.succ
	if s == nil || s.pid != c.PID {
		h.mu.Unlock()
		return "", errors.New("handoff: TakeBack of a generation that is not this one's successor")
	}
	select {
	case <-s.died:
	default:
		h.mu.Unlock()
		return "", fmt.Errorf("handoff: TakeBack of generation %d (pid %d), which has not died (it runs, or said it was leaving)", h.generation+1, s.pid)
	}
	if h.stopped {
		h.mu.Unlock()
		return "", errors.New("handoff: TakeBack after Stop")
	}
	h.succ, h.child, h.takenBack = nil, nil, true
	h.mu.Unlock()
	s.namesW.Close()
	if s.link != nil {
		s.link.close()
	}
	return describe(s.state, s.waitErr), nil
}

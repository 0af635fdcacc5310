package upgrade

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/handoff"
	"github.com/hitlessgo/hitless/listener"
	"github.com/hitlessgo/hitless/readiness"
)

// Upgrader runs one generation's life: it provides listeners (inherited or
// new), reports readiness, starts the next generation on Upgrade, and
// drains when this generation must go. Create it with New, at most once per
// process, and call Stop when done with it (Run does).
type Upgrader struct {
	opts      Options
	log       *slog.Logger
	h         *handoff.Handoff
	sd        systemd
	listeners listener.Set
	systemd   map[string][]*os.File // what systemd passed; Listen takes from it

	lnMu  sync.Mutex
	named map[string]syscall.Conn // the sockets by name, as bound, for the fd store

	readyOnce sync.Once
	readyErr  error
	ready     atomic.Bool
	readyC    chan struct{} // closed when Ready opens the accept gates
	readyDone chan struct{} // closed when Ready has succeeded
	dog       *watchdog     // set in Ready, ended at hand-over or release

	sched scheduler
	hist  *history

	upgraded atomic.Bool

	mu       sync.Mutex
	control  *controlServer // nil without Options.ControlSocket; replaced at a take-back
	exit     chan struct{}  // closed by finish; a new one after a take-back
	exitShut bool           // exit is closed
	succ     *handoff.Child // the generation this one handed over to, while it lives
	status   control.Status
	inRun    bool
	released bool
	relOnce  sync.Once
}

// New creates the Upgrader of this process, taking over the listening
// sockets the previous generation handed down, if any. It fails with
// ErrNotSupported on Windows, ErrSingleton if called twice, and an error
// naming the file if Options.PIDFile cannot be written. On failure it has
// undone everything it did.
func New(opts Options) (*Upgrader, error) {
	opts = opts.withDefaults()
	opts.Version = buildVersion(opts.Version)
	// Every generation of a service usually logs to the same place.
	log := opts.Logger.With("pid", os.Getpid())
	if opts.PIDFile != "" {
		abs, err := filepath.Abs(opts.PIDFile)
		if err != nil {
			return nil, fmt.Errorf("upgrade: PID file %s: %w", opts.PIDFile, err)
		}
		opts.PIDFile = abs
		if err := checkPIDFile(abs); err != nil {
			return nil, fmt.Errorf("upgrade: PID file %s cannot be used: %w", abs, err)
		}
	}
	// The new generation tells us it is ready only after its probation.
	h, err := handoff.New(handoff.Options{ReadyTimeout: opts.UpgradeTimeout + opts.Probation.For, Logger: log, Build: opts.Version})
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	u := &Upgrader{
		opts: opts, log: log, h: h, sd: systemd{log: log},
		named:     make(map[string]syscall.Conn),
		readyC:    make(chan struct{}),
		readyDone: make(chan struct{}),
		exit:      make(chan struct{}),
	}
	u.status = control.Status{PID: os.Getpid(), Generation: h.Generation(), State: control.StateStarting}
	u.listeners.Handoff = h
	u.listeners.ListenConfig = opts.ListenConfig
	// Sockets from systemd are for the first generation; later ones get
	// them from their predecessor, and never see LISTEN_* (FromSystemd
	// removes them from the environment in every generation).
	activated, err := listener.FromSystemd()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("upgrade: sockets from systemd: %w", err)
	}
	u.systemd = activated
	u.listeners.Systemd = activated
	if _, err := readiness.WatchdogIntervalErr(); err != nil {
		log.Warn("ignoring systemd's watchdog: nothing will ping it", "err", err)
	}
	if _, ok := readiness.WatchdogInterval(); ok {
		// WATCHDOG_PID names the first generation; make it name this
		// one, for code that checks it (sd_watchdog_enabled), while
		// processes this one starts still see a PID that is not theirs.
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}
	if opts.ControlSocket != "" {
		c, err := u.startControl(opts.ControlSocket)
		if err != nil {
			u.closeSystemdSockets()
			u.listeners.Close()
			h.Close()
			return nil, fmt.Errorf("upgrade: control socket: %w", err)
		}
		u.control = c
	}
	u.hist = newHistory(u)
	u.sched.start(u)
	return u, nil
}

// Listen returns the listener named name, inherited from the previous
// generation if it handed one over for the same address, else bound anew.
// See listener.Set.Listen for the details and errors.
//
// Accept on the returned listener blocks until Ready has told the
// previous generation that this one takes over (on probation: until the
// readiness check, Options.ReadyCheck, has passed), so that a generation
// that fails before that never takes a connection (they wait in the
// socket's queue meanwhile). Serve it before calling Ready, but do not
// make the readiness check wait on a connection to it. For datagram
// sockets, see ListenPacket.
func (u *Upgrader) Listen(ctx context.Context, name, network, addr string) (net.Listener, error) {
	ln, err := u.listeners.Listen(ctx, name, network, addr)
	if err != nil {
		return nil, err
	}
	u.record(name, ln)
	return &gatedListener{Listener: ln, ready: u.readyC, closed: make(chan struct{})}, nil
}

// record keeps the socket named name for the fd store. Every socket a
// listener.Set provides has a descriptor.
func (u *Upgrader) record(name string, c any) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		u.log.Warn("cannot put a socket in systemd's store: it has no descriptor", "name", name, "type", fmt.Sprintf("%T", c))
		return
	}
	u.lnMu.Lock()
	u.named[name] = sc
	u.lnMu.Unlock()
}

// Ready reports that this generation serves: it writes the PID file, tells
// the previous generation (which then stops accepting and drains), and
// tells systemd (MAINPID and READY=1). Call it once every listener is
// served. Unused inherited listeners are closed. Only the first call does
// anything; later calls return its result. ctx bounds the readiness check
// and the probation (each is also bounded by UpgradeTimeout).
func (u *Upgrader) Ready(ctx context.Context) error {
	u.readyOnce.Do(func() {
		u.readyErr = u.becomeReady(ctx)
		if u.readyErr != nil && u.h.HasParent() {
			// The previous generation quotes this in its error.
			u.h.Fail(u.readyErr)
		}
	})
	return u.readyErr
}

func (u *Upgrader) becomeReady(ctx context.Context) error {
	if u.opts.ReadyCheck != nil {
		cctx, cancel := context.WithTimeout(ctx, u.opts.UpgradeTimeout)
		err := u.opts.ReadyCheck(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("upgrade: readiness check failed: %w", err)
		}
	}
	// On probation this generation serves alongside the previous one, so
	// it accepts from now on. Otherwise it accepts only once the previous
	// generation has been told (below): a process that died between the
	// two would take the connections it had accepted with it, while the
	// upgrade is reported failed. Meanwhile new connections wait in the
	// socket's queue, for a few milliseconds, and are not refused.
	onProbation := u.h.HasParent() && u.opts.Probation.For > 0
	if onProbation {
		close(u.readyC)
		if err := u.probation(ctx); err != nil {
			return err
		}
	}
	// From here on this generation accepts; the PID file, written next,
	// tells the world, which may ask for its status at once.
	u.setState(control.StateServing)
	if u.opts.PIDFile != "" {
		if err := writePIDFile(u.opts.PIDFile); err != nil {
			return fmt.Errorf("upgrade: writing PID file: %w", err)
		}
	}
	if err := u.h.Ready(); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	// Counted before anyone can ask: a scrape of this generation must not
	// see one upgrade fewer than the previous generation reported.
	u.hist.ready()
	if !onProbation {
		close(u.readyC)
	}
	u.ready.Store(true)
	close(u.readyDone)
	u.sd.ready(u.h.Generation(), u.h.HasParent())
	u.log.Info("ready", "generation", u.h.Generation())
	u.mu.Lock()
	u.dog = u.sd.startWatchdog()
	u.mu.Unlock()
	u.storeListeners()
	return nil
}

// storeListeners closes the sockets systemd passed that nobody listens on,
// and, with Options.FDStore, puts the listeners and datagram sockets in
// systemd's store.
func (u *Upgrader) storeListeners() {
	unused := u.closeSystemdSockets()
	if !u.opts.FDStore {
		return
	}
	u.lnMu.Lock()
	named := make(map[string]syscall.Conn, len(u.named))
	for k, v := range u.named {
		if k != controlListenerName {
			named[k] = v
		}
	}
	u.lnMu.Unlock()
	u.sd.store(named, unused)
}

// closeSystemdSockets closes what systemd passed and no Listen took, and
// returns their names.
func (u *Upgrader) closeSystemdSockets() []string {
	var names []string
	for name, files := range u.systemd {
		for _, f := range files {
			f.Close()
		}
		names = append(names, name)
	}
	clear(u.systemd)
	return names
}

// probationInterval is how often Probation.Check runs.
const probationInterval = 100 * time.Millisecond

// probation serves alongside the previous generation for Probation.For,
// running Probation.Check, before this generation takes over.
func (u *Upgrader) probation(ctx context.Context) error {
	u.log.Info("on probation", "for", u.opts.Probation.For)
	end := time.Now().Add(u.opts.Probation.For)
	tick := time.NewTicker(probationInterval)
	defer tick.Stop()
	for time.Now().Before(end) {
		if u.opts.Probation.Check != nil {
			cctx, cancel := context.WithTimeout(ctx, probationInterval*10)
			err := u.opts.Probation.Check(cctx)
			cancel()
			if err != nil {
				return fmt.Errorf("upgrade: failed the probation check: %w", err)
			}
		}
		select {
		case <-tick.C:
		case <-u.exitC():
			return fmt.Errorf("upgrade: stopped during probation")
		case <-ctx.Done():
			return fmt.Errorf("upgrade: probation: %w", ctx.Err())
		}
	}
	return nil
}

// Status returns the current status. Safe for concurrent use.
func (u *Upgrader) Status() control.Status {
	u.mu.Lock()
	st := u.status
	u.mu.Unlock()
	u.hist.status(&st)
	st.RollbackTo, _ = u.h.PreviousBuild()
	return st
}

func (u *Upgrader) setState(s control.State) {
	u.mu.Lock()
	u.status.State = s
	u.mu.Unlock()
}

func (u *Upgrader) exitErr() error {
	if u.upgraded.Load() {
		return ErrUpgraded
	}
	return ErrStopped
}

// finish closes Exit.
func (u *Upgrader) finish() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.exitShut {
		u.exitShut = true
		close(u.exit)
	}
}

// exitC is the channel Exit returns now.
func (u *Upgrader) exitC() chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.exit
}

// revive undoes what a successful upgrade did to this generation's
// state, for a take-back: it has not upgraded, and has a new Exit
// channel. Called from the scheduler's loop.
func (u *Upgrader) revive() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.upgraded.Store(false)
	u.exit, u.exitShut = make(chan struct{}), false
	u.succ = nil
}

// successor is the generation this one handed over to, or nil.
func (u *Upgrader) successor() *handoff.Child {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.succ
}

// controlSrv is the control socket's server now (nil without one).
func (u *Upgrader) controlSrv() *controlServer {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.control
}

// Exit returns a channel that is closed when this generation must stop
// serving: after a successful Upgrade or after Stop. Under RunFunc, a
// generation that takes the service back (see RunFunc) serves again, and
// Exit then returns a new channel, closed at its next upgrade or stop.
func (u *Upgrader) Exit() <-chan struct{} { return u.exitC() }

// stop ends this generation without waiting: no more upgrades, a new
// generation being started is killed, and Exit is closed.
func (u *Upgrader) stop() {
	u.finish()
	u.h.Stop()
}

// Stop ends this generation for good: no more upgrades, an upgrade in
// progress is aborted (its new process killed), and Exit is closed. Stop
// is idempotent. Called while Run runs, it returns at once and Run drains
// and then releases everything; otherwise it releases at once what New
// and Ready started (the request queue, the control socket's server, the
// watchdog pings, the link to the other generations) and closes the
// listeners, waiting for that.
func (u *Upgrader) Stop() {
	u.stop()
	u.mu.Lock()
	inRun := u.inRun
	u.mu.Unlock()
	if !inRun {
		u.release()
	}
}

// release ends everything this Upgrader started; it is the last thing it
// does.
func (u *Upgrader) release() {
	u.relOnce.Do(func() {
		u.stop()
		u.sched.end()
		u.controlSrv().close()
		u.mu.Lock()
		dog := u.dog
		u.released = true
		u.mu.Unlock()
		dog.end()
		u.closeSystemdSockets()
		if err := u.listeners.Close(); err != nil {
			u.log.Warn("closing listeners", "err", err)
		}
		u.h.Close()
		u.hist.close()
	})
}

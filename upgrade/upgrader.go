package upgrade

import (
	"context"
	"errors"
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

	"github.com/cloudflare/tableflip"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/listener"
	"github.com/hitlessgo/hitless/readiness"
)

// Defaults for Options.
const (
	DefaultUpgradeTimeout = time.Minute
	DefaultDrainTimeout   = 30 * time.Second
	// DefaultCrashLoopAfter failed upgrades in a row start the back-off.
	DefaultCrashLoopAfter = 3
	// DefaultCrashLoopBackoff is the first back-off period.
	DefaultCrashLoopBackoff = 10 * time.Second
)

// tableflipSentinel is the variable tableflip sets for the new generation.
// It is removed from our environment once read, so that processes the
// application spawns do not believe they were handed sockets.
const tableflipSentinel = "TABLEFLIP_HAS_PARENT_7DIU3"

// Options configure an Upgrader. The zero value is usable.
type Options struct {
	// UpgradeTimeout is how long a new generation has to become ready
	// before it is killed and the upgrade reported as failed. Zero or
	// negative means DefaultUpgradeTimeout.
	UpgradeTimeout time.Duration
	// DrainTimeout bounds the drain in Run, after an upgrade or a stop.
	// Zero or negative means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// PIDFile, if set, receives the PID of the serving generation, written
	// atomically when it is ready and before the previous generation is
	// told so. It is checked for writability in New.
	PIDFile string
	// Logger receives what happens; nil means silent.
	Logger *slog.Logger
	// ListenConfig binds listeners that are not inherited.
	ListenConfig net.ListenConfig

	// ControlSocket, if set, is the path of a unix socket on which the
	// service answers reload, stop and status requests (see Client and
	// cmd/hitless). It is handed to each new generation like any listener.
	// Its file mode is 0600, and only peers running as the service's user
	// or as root are served (checked with the peer's credentials).
	ControlSocket string
	// Preflight, if set, runs before a new generation is started, with the
	// path of the binary about to be executed; an error fails the upgrade
	// with Reason CheckFailed and nothing is started. That the binary
	// exists and is executable is always checked first.
	Preflight func(ctx context.Context, binary string) error
	// CrashLoopAfter is the number of consecutive failed upgrades after
	// which further upgrade requests are refused for a while (with a
	// *BackoffError), instead of starting a broken binary again and again.
	// Zero means DefaultCrashLoopAfter; negative disables the protection.
	CrashLoopAfter int
	// CrashLoopBackoff is how long requests are refused after the
	// CrashLoopAfter-th failure in a row; it doubles with each further
	// failure, up to 16 times. Zero or negative means
	// DefaultCrashLoopBackoff.
	CrashLoopBackoff time.Duration
	// ReadyCheck, if set, must pass before the generation reports ready
	// (a readiness gate: the database answers, the certificate loads).
	// If it fails, Ready fails, this generation takes no connection, and
	// the previous generation, if any, reports the upgrade as failed with
	// the check's error. It runs before the listeners accept, so it must
	// not connect to them. ctx expires after UpgradeTimeout.
	ReadyCheck func(ctx context.Context) error
	// Probation, if positive, makes a new generation prove itself before
	// it takes over: once it is ready, it serves alongside this one
	// (both accept on the shared sockets) for this long, and only then
	// tells this one, which stops accepting and drains. If it exits,
	// crashes or fails ProbationCheck meanwhile, the upgrade fails as
	// if it had never become ready, and this generation, which never
	// stopped serving, goes on. It adds to the time Upgrade waits.
	// Zero means no probation. (Both generations read their own Options:
	// it is the new generation's value that counts.)
	Probation time.Duration
	// ProbationCheck, if set, is called by a new generation on probation
	// every 100 ms; an error ends the probation as failed.
	ProbationCheck func(ctx context.Context) error
	// FDStore, if true, keeps the listening sockets in systemd's file
	// descriptor store (FDSTORE=1, under their logical names; the unit
	// needs FileDescriptorStoreMax=), so that after `systemctl restart`, a
	// crash with Restart=, or an OOM kill, the next start gets them back
	// and connections queued meanwhile are served instead of refused. A
	// stored socket the configuration no longer has is removed from the
	// store. Sockets systemd passes (socket activation or the store) are
	// used in any case.
	FDStore bool
	// HurrySignal, if not zero, lets a newer generation that has an
	// upgrade waiting ask this one, while it drains, to cut its drain
	// short (a reload requested with hurry). This generation subscribes to
	// that signal from New to the end of Run (so that an early one is not
	// fatal: SIGUSR1 and SIGUSR2 terminate a process by default) and acts
	// on it only while it drains after an upgrade, by ending the drain at
	// once and reporting what it cut. syscall.SIGUSR2 is the usual choice.
	// Zero means draining generations are never hurried.
	HurrySignal syscall.Signal
}

// Upgrader runs one generation's life: it provides listeners (inherited or
// new), reports readiness, starts the next generation on Upgrade, and
// drains when this generation must go. Create it with New, at most once per
// process.
type Upgrader struct {
	opts      Options
	log       *slog.Logger
	tf        *tableflip.Upgrader
	listeners listener.Set

	readyOnce sync.Once
	readyErr  error
	ready     atomic.Bool
	readyC    chan struct{} // closed when Ready begins accepting; opens the accept gates
	readyDone chan struct{} // closed when Ready has succeeded

	generation   int
	hurry        hurrier // asks the draining previous generation to hurry
	stderrHanded bool    // the real stderr is in the handoff (stderr_unix.go)

	// The request queue is owned by the loop goroutine (queue.go).
	requests    chan upgradeRequest
	settle      chan chan struct{}
	hurryC      chan struct{}
	running     chan struct{}
	done        chan error
	loopStop    chan struct{}
	loopStopped chan struct{}

	mu     sync.Mutex
	status Status

	control *controlServer

	watchdogStop, watchdogDone chan struct{}
	hurrySigs                  chan os.Signal // Options.HurrySignal, subscribed in New

	exitOnce sync.Once
	exit     chan struct{}
	upgraded atomic.Bool
}

// New creates the Upgrader of this process, taking over the listening
// sockets the previous generation handed down, if any. It fails with
// ErrNotSupported on Windows, ErrSingleton if called twice, and an error
// naming the file if Options.PIDFile cannot be written.
func New(opts Options) (*Upgrader, error) {
	if opts.UpgradeTimeout <= 0 {
		opts.UpgradeTimeout = DefaultUpgradeTimeout
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.CrashLoopAfter == 0 {
		opts.CrashLoopAfter = DefaultCrashLoopAfter
	}
	if opts.CrashLoopBackoff <= 0 {
		opts.CrashLoopBackoff = DefaultCrashLoopBackoff
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Every generation of a service usually logs to the same place.
	log = log.With("pid", os.Getpid())
	if opts.PIDFile != "" {
		abs, err := filepath.Abs(opts.PIDFile)
		if err != nil {
			return nil, fmt.Errorf("upgrade: PID file %s: %w", opts.PIDFile, err)
		}
		opts.PIDFile = abs
		if err := checkPIDFile(abs); err != nil {
			return nil, fmt.Errorf("upgrade: PID file %s is not writable: %w", abs, err)
		}
	}
	// The new generation tells us it is ready only after its probation.
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: opts.UpgradeTimeout + opts.Probation})
	switch {
	case errors.Is(err, tableflip.ErrNotSupported):
		return nil, ErrNotSupported
	case err != nil && err.Error() == "tableflip: only a single Upgrader allowed":
		return nil, ErrSingleton
	case err != nil:
		return nil, fmt.Errorf("upgrade: taking over from the previous generation: %w", err)
	}
	os.Unsetenv(tableflipSentinel)
	u := &Upgrader{
		opts:        opts,
		log:         log,
		tf:          tf,
		generation:  takeGeneration(),
		exit:        make(chan struct{}),
		readyC:      make(chan struct{}),
		readyDone:   make(chan struct{}),
		requests:    make(chan upgradeRequest),
		settle:      make(chan chan struct{}),
		hurryC:      make(chan struct{}, 1),
		running:     make(chan struct{}),
		done:        make(chan error),
		loopStop:    make(chan struct{}),
		loopStopped: make(chan struct{}),
	}
	u.status = Status{PID: os.Getpid(), Generation: u.generation, State: StateStarting}
	u.listeners.Handoff = tf.Fds
	u.listeners.ListenConfig = opts.ListenConfig
	// Sockets from systemd are for the first generation; later ones get
	// them from their predecessor, and never see LISTEN_* (FromSystemd
	// removes them from the environment in every generation).
	activated, err := listener.FromSystemd()
	if err != nil {
		tf.Stop()
		return nil, fmt.Errorf("upgrade: sockets from systemd: %w", err)
	}
	u.listeners.Systemd = activated
	if _, ok := readiness.WatchdogInterval(); ok {
		// WATCHDOG_PID names the first generation; make it name this
		// one, for code that checks it (sd_watchdog_enabled), while
		// processes this one starts still see a PID that is not theirs.
		os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	}
	if tf.HasParent() {
		u.hurry = newHurrier(os.Getppid(), opts.HurrySignal)
	}
	u.hurrySigs = hurrySignals(opts.HurrySignal)
	if opts.ControlSocket != "" {
		ln, err := u.listeners.Listen(context.Background(), controlListenerName, "unix", opts.ControlSocket)
		if err != nil {
			tf.Stop()
			return nil, fmt.Errorf("upgrade: control socket: %w", err)
		}
		u.control = newControlServer(u, &gatedListener{Listener: ln, ready: u.readyC, closed: make(chan struct{})}, opts.ControlSocket)
	}
	go u.loop()
	return u, nil
}

// HasParent reports whether this process was started by an upgrade (rather
// than by systemd, a shell or a supervisor).
func (u *Upgrader) HasParent() bool { return u.tf.HasParent() }

// Listen returns the listener named name, inherited from the previous
// generation if it handed one over for the same address, else bound anew.
// See listener.Set.Listen for the details and errors.
//
// Accept on the returned listener blocks until Ready has succeeded, so
// that a generation that fails before it is ready never takes a
// connection (they wait in the socket's queue meanwhile). Serve it before
// calling Ready, but do not make Ready wait on a connection to it.
func (u *Upgrader) Listen(ctx context.Context, name, network, addr string) (net.Listener, error) {
	ln, err := u.listeners.Listen(ctx, name, network, addr)
	if err != nil {
		return nil, err
	}
	return &gatedListener{Listener: ln, ready: u.readyC, closed: make(chan struct{})}, nil
}

// Ready reports that this generation serves: it writes the PID file, tells
// the previous generation (which then stops accepting and drains), and
// tells systemd (MAINPID and READY=1). Call it once every listener is
// served. Unused inherited listeners are closed. Only the first call does
// anything; later calls return its result.
func (u *Upgrader) Ready() error {
	u.readyOnce.Do(func() {
		if u.opts.ReadyCheck != nil {
			ctx, cancel := context.WithTimeout(context.Background(), u.opts.UpgradeTimeout)
			err := u.opts.ReadyCheck(ctx)
			cancel()
			if err != nil {
				// Said on stderr, which a previous generation captures
				// for its error.
				u.readyErr = fmt.Errorf("upgrade: readiness check failed: %w", err)
				fmt.Fprintln(os.Stderr, u.readyErr)
				return
			}
		}
		// Open the accept gates before the previous generation stops
		// accepting, so that the socket's queue is never left unserved.
		close(u.readyC)
		if u.HasParent() && u.opts.Probation > 0 {
			if err := u.probation(); err != nil {
				// Said on stderr, which the previous generation captures
				// for its error, then Run drains and the process exits.
				fmt.Fprintln(os.Stderr, err)
				u.readyErr = err
				return
			}
		}
		// From here on this generation accepts; the PID file, written
		// next, tells the world, which may ask for its status at once.
		u.setState(StateServing)
		if u.opts.PIDFile != "" {
			if err := writePIDFile(u.opts.PIDFile); err != nil {
				u.readyErr = fmt.Errorf("upgrade: writing PID file: %w", err)
				return
			}
		}
		u.adoptStderr()
		if err := u.tf.Ready(); err != nil {
			u.readyErr = fmt.Errorf("upgrade: telling the previous generation: %w", err)
			return
		}
		u.ready.Store(true)
		close(u.readyDone)
		states := []string{readiness.Ready}
		if u.HasParent() {
			// The new generation claims the main PID itself; this needs
			// NotifyAccess=all in the unit.
			states = []string{readiness.MainPID(os.Getpid()), readiness.Ready}
		}
		states = append(states, readiness.Status(fmt.Sprintf("serving, generation %d, pid %d", u.generation, os.Getpid())))
		if _, err := readiness.Notify(states...); err != nil {
			u.log.Warn("telling systemd we are ready", "err", err)
		}
		u.log.Info("ready", "generation", u.generation)
		u.startWatchdog()
		u.storeListeners()
	})
	return u.readyErr
}

// storeListeners closes the sockets systemd passed that nobody listens on,
// and, with Options.FDStore, puts the listeners in systemd's store, after
// removing the names it no longer needs (removal goes by name, so a name
// still in use is stored again right after).
func (u *Upgrader) storeListeners() {
	unused := u.listeners.CloseUnusedSystemd()
	if !u.opts.FDStore || os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	for _, name := range unused {
		line, err := readiness.FDName(name)
		if err == nil {
			_, err = readiness.Notify(readiness.FDStoreRemove, line)
		}
		if err != nil {
			u.log.Warn("removing a socket from systemd's store", "name", name, "err", err)
		}
	}
	for name, ln := range u.listeners.Listeners() {
		sc, ok := ln.(syscall.Conn)
		line, err := readiness.FDName(name)
		if err == nil && !ok {
			err = fmt.Errorf("%T has no descriptor", ln)
		}
		if err == nil {
			_, err = readiness.NotifyWithFiles([]syscall.Conn{sc}, readiness.FDStore, line)
		}
		if err != nil {
			u.log.Warn("storing a socket with systemd", "name", name, "err", err)
		}
	}
}

// startWatchdog pings systemd's watchdog (WatchdogSec=) from the moment
// this generation is the main process until it hands over to the next, or,
// when it stops, until it exits. The next generation starts pinging when it
// becomes ready, before this one stops: there is no gap.
func (u *Upgrader) startWatchdog() {
	every, ok := readiness.WatchdogInterval()
	if !ok || os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	u.watchdogStop = make(chan struct{})
	u.watchdogDone = make(chan struct{})
	go func() {
		defer close(u.watchdogDone)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if _, err := readiness.Notify(readiness.Watchdog); err != nil {
				u.log.Warn("pinging the watchdog", "err", err)
			}
			select {
			case <-tick.C:
			case <-u.watchdogStop:
				return
			}
		}
	}()
}

func (u *Upgrader) stopWatchdog() {
	if u.watchdogStop != nil {
		close(u.watchdogStop)
		<-u.watchdogDone
		u.watchdogStop = nil
	}
}

// probationInterval is how often ProbationCheck runs.
const probationInterval = 100 * time.Millisecond

// probation serves alongside the previous generation for
// Options.Probation, checking ProbationCheck, before this generation takes
// over (see Options.Probation).
func (u *Upgrader) probation() error {
	u.log.Info("on probation", "for", u.opts.Probation)
	end := time.Now().Add(u.opts.Probation)
	tick := time.NewTicker(probationInterval)
	defer tick.Stop()
	for time.Now().Before(end) {
		if u.opts.ProbationCheck != nil {
			ctx, cancel := context.WithTimeout(context.Background(), probationInterval*10)
			err := u.opts.ProbationCheck(ctx)
			cancel()
			if err != nil {
				return fmt.Errorf("upgrade: failed the probation check: %w", err)
			}
		}
		select {
		case <-tick.C:
		case <-u.exit:
			return fmt.Errorf("upgrade: stopped during probation")
		}
	}
	return nil
}

func (u *Upgrader) exitErr() error {
	if u.upgraded.Load() {
		return ErrUpgraded
	}
	return ErrStopped
}

func (u *Upgrader) finish() { u.exitOnce.Do(func() { close(u.exit) }) }

// Exit returns a channel that is closed when this generation must stop
// serving: after a successful Upgrade or after Stop.
func (u *Upgrader) Exit() <-chan struct{} { return u.exit }

// Stop ends this generation for good: no more upgrades, an upgrade in
// progress is aborted (its new process killed), and Exit is closed. Run
// then drains. Stop is idempotent and does not block; after a successful
// upgrade it changes nothing.
func (u *Upgrader) Stop() {
	u.finish()
	u.tf.Stop()
}

// Run reports ready (see Ready), waits until this generation must go (a
// successful upgrade, Stop, or ctx done, which acts as Stop), then drains
// every server in parallel within DrainTimeout, closes the listeners and
// returns. When the service stops for good (not after an upgrade) it also
// tells systemd STOPPING=1, removes its unix socket files and its PID file.
//
// It returns nil when everything drained, and otherwise the drain errors
// (which wrap context.DeadlineExceeded and say how many connections were
// cut). If Ready fails, Run stops, drains and returns Ready's error.
func (u *Upgrader) Run(ctx context.Context, servers ...drain.Drainer) error {
	readyErr := u.Ready()
	if readyErr != nil {
		u.Stop()
	}
	select {
	case <-u.exit:
	case <-ctx.Done():
		u.Stop()
	}
	// An upgrade attempt may be settling; its outcome decides whether the
	// service stops or lives on in the next generation.
	settled := make(chan struct{})
	select {
	case u.settle <- settled:
		<-settled
	case <-u.loopStopped:
	}
	defer u.stopLoop()
	defer stopHurrySignals(u.hurrySigs)
	upgraded := u.upgraded.Load()
	// The next generation (or nobody, at a stop) answers the control
	// socket from now on.
	u.control.close()

	// A new generation that never became ready is not the service: the
	// previous generation still serves on the same sockets, PID file and
	// unit. It leaves all of them alone.
	stopping := !upgraded && (u.ready.Load() || !u.HasParent())

	if stopping {
		u.setState(StateStopping)
		u.log.Info("stopping; draining")
		if _, err := readiness.Notify(readiness.Stopping, readiness.Status("stopping: draining")); err != nil {
			u.log.Warn("telling systemd", "err", err)
		}
		if err := u.listeners.Unlink(); err != nil {
			u.log.Warn("removing socket files", "err", err)
		}
	}

	dctx, cancel := context.WithTimeout(context.Background(), u.opts.DrainTimeout)
	defer cancel()
	if upgraded {
		// The new generation is the main process and pings now.
		u.stopWatchdog()
		u.setState(StateDraining)
		// A newer generation may ask us to cut the drain short.
		defer listenHurry(u.hurrySigs, cancel, u.log)()
	} else {
		defer u.stopWatchdog()
	}
	g := drain.Group{Name: "generation " + strconv.Itoa(u.generation)}
	if stopping {
		// Keep systemd's stop timeout ahead of the drain, however long
		// TimeoutStopSec is.
		deadline, _ := dctx.Deadline()
		g.Heartbeat = func(next time.Duration) {
			left := time.Until(deadline).Round(time.Second)
			if _, err := readiness.Notify(readiness.ExtendTimeout(next),
				readiness.Status(fmt.Sprintf("stopping: draining, %v left", left))); err != nil {
				u.log.Warn("telling systemd", "err", err)
			}
		}
	}
	g.Add(servers...)
	report, drainErr := g.Drain(dctx)
	for _, r := range report.Servers {
		level := slog.LevelInfo
		if r.Cut > 0 {
			level = slog.LevelWarn
		}
		u.log.Log(context.Background(), level, "drained", "server", r.Name, "open", r.Open,
			"ended", r.Ended, "cut", r.Cut, "took", r.Duration.Round(time.Millisecond))
	}
	if err := u.listeners.Close(); err != nil {
		u.log.Warn("closing listeners", "err", err)
	}
	if stopping && u.opts.PIDFile != "" {
		if err := removePIDFile(u.opts.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			u.log.Warn("removing PID file", "err", err)
		}
	}
	if readyErr != nil {
		return readyErr
	}
	if drainErr != nil {
		return fmt.Errorf("upgrade: %w", drainErr)
	}
	return nil
}

package upgrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sync/errgroup"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/listener"
	"github.com/hitlessgo/hitless/readiness"
)

// Defaults for Options.
const (
	DefaultUpgradeTimeout = time.Minute
	DefaultDrainTimeout   = 30 * time.Second
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
	readyC    chan struct{} // closed when Ready succeeds; opens the accept gates

	// attempt holds a token while an upgrade attempt runs: one at a time.
	attempt chan struct{}

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
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: opts.UpgradeTimeout})
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
		opts:    opts,
		log:     log,
		tf:      tf,
		attempt: make(chan struct{}, 1),
		exit:    make(chan struct{}),
		readyC:  make(chan struct{}),
	}
	u.listeners.Handoff = tf.Fds
	u.listeners.ListenConfig = opts.ListenConfig
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
		if u.opts.PIDFile != "" {
			if err := writePIDFile(u.opts.PIDFile); err != nil {
				u.readyErr = fmt.Errorf("upgrade: writing PID file: %w", err)
				return
			}
		}
		// Open the accept gates before the previous generation stops
		// accepting, so that the socket's queue is never left unserved.
		close(u.readyC)
		if err := u.tf.Ready(); err != nil {
			u.readyErr = fmt.Errorf("upgrade: telling the previous generation: %w", err)
			return
		}
		u.ready.Store(true)
		states := []string{readiness.Ready}
		if u.HasParent() {
			// The new generation claims the main PID itself; this needs
			// NotifyAccess=all in the unit.
			states = []string{readiness.MainPID(os.Getpid()), readiness.Ready}
		}
		if _, err := readiness.Notify(states...); err != nil {
			u.log.Warn("telling systemd we are ready", "err", err)
		}
		u.log.Info("ready", "upgraded", u.HasParent())
	})
	return u.readyErr
}

// Upgrade starts the new generation (the binary at os.Args[0], with the
// same arguments), hands it the listeners and waits until it is ready.
//
// It returns nil once the new generation is ready: Exit is then closed and
// this generation should drain and exit (Run does that). It returns a
// *ChildError (matching ErrChildFailed) if the new generation failed to
// start, crashed, exited or was not ready within UpgradeTimeout; it has
// then been killed and this generation serves on, unchanged. It returns
// ErrNotReady before Ready, ErrStopped after Stop, ErrUpgraded after a
// successful upgrade.
//
// If the previous generation is still draining, Upgrade first waits for it
// to exit, and it waits for an upgrade already in progress: at most two
// generations exist at any time. ctx bounds only these waits and the wait
// for the outcome: when it is done Upgrade returns ctx.Err(), but an
// attempt already started goes on (bounded by UpgradeTimeout) and, if it
// succeeds, still closes Exit. Safe for concurrent use.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	if !u.ready.Load() {
		return ErrNotReady
	}
	select {
	case u.attempt <- struct{}{}:
	case <-u.exit:
		return u.exitErr()
	case <-ctx.Done():
		return fmt.Errorf("upgrade: waiting for the upgrade in progress: %w", ctx.Err())
	}
	select {
	case <-u.exit:
		<-u.attempt
		return u.exitErr()
	default:
	}
	// tableflip refuses to upgrade while our own parent lives; wait for it
	// to finish draining instead of failing the request.
	if err := u.waitForParent(ctx); err != nil {
		<-u.attempt
		return err
	}

	start := time.Now()
	u.log.Info("upgrading")
	result := make(chan error, 1)
	go func() {
		defer func() { <-u.attempt }()
		err := classify(u.tf.Upgrade(), u.opts.UpgradeTimeout)
		if err == nil {
			u.upgraded.Store(true)
			u.finish()
			u.log.Info("new generation ready; draining", "took", time.Since(start))
		} else {
			u.log.Error("upgrade failed; still serving", "err", err, "took", time.Since(start))
			if _, nerr := readiness.Notify(readiness.Status("upgrade failed: " + err.Error())); nerr != nil {
				u.log.Warn("telling systemd", "err", nerr)
			}
		}
		result <- err
	}()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return fmt.Errorf("upgrade: waiting for the new generation: %w", ctx.Err())
	}
}

// waitForParent waits until the previous generation has exited, giving up
// when ctx is done or this generation is stopped meanwhile.
func (u *Upgrader) waitForParent(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-u.exit:
			cancel()
		case <-wctx.Done():
		}
	}()
	err := u.tf.WaitForParent(wctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("upgrade: waiting for the previous generation to exit: %w", ctx.Err())
	case wctx.Err() != nil:
		return u.exitErr()
	}
	u.log.Warn("previous generation ended abnormally", "err", err)
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
	u.attempt <- struct{}{}
	defer func() { <-u.attempt }()
	upgraded := u.upgraded.Load()

	if !upgraded {
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
	reports := make([]drain.Report, len(servers))
	errs := make([]error, len(servers))
	var g errgroup.Group
	for i, s := range servers {
		g.Go(func() error {
			reports[i], errs[i] = s.Drain(dctx)
			return nil
		})
	}
	g.Wait()
	for i, r := range reports {
		level := slog.LevelInfo
		if errs[i] != nil {
			level = slog.LevelWarn
		}
		u.log.Log(context.Background(), level, "drained", "server", r.Name, "open", r.Open,
			"ended", r.Ended, "cut", r.Cut, "took", r.Duration.Round(time.Millisecond))
	}
	if err := u.listeners.Close(); err != nil {
		u.log.Warn("closing listeners", "err", err)
	}
	if !upgraded && u.opts.PIDFile != "" {
		if err := removePIDFile(u.opts.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			u.log.Warn("removing PID file", "err", err)
		}
	}
	if readyErr != nil {
		return readyErr
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	return nil
}

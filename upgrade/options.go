package upgrade

import (
	"context"
	"log/slog"
	"net"
	"time"
)

// Defaults for Options.
const (
	DefaultUpgradeTimeout = time.Minute
	DefaultDrainTimeout   = 30 * time.Second
	// DefaultCrashLoopAfter failed upgrades in a row start the back-off.
	DefaultCrashLoopAfter = 3
	// DefaultCrashLoopBackoff is the first back-off period.
	DefaultCrashLoopBackoff = 10 * time.Second
	// DefaultStateLimit bounds a state handed to the next generation
	// (OfferState), in bytes.
	DefaultStateLimit = 16 << 20
	// DefaultHistoryLen is Options.HistoryLen's default.
	DefaultHistoryLen = 16
)

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
	// told so. New checks that it can be written, and refuses it when a
	// directory on its path can be written by other users (without the
	// sticky bit) or is owned by one: whoever reads a PID file signals the
	// PID it names. RuntimeDirectory= (/run/<service>) is the place.
	PIDFile string
	// Logger receives what happens; nil means silent.
	Logger *slog.Logger
	// ListenConfig binds listeners that are not inherited.
	ListenConfig net.ListenConfig

	// ControlSocket, if set, is the path of a unix socket on which the
	// service answers reload, stop and status requests (see package
	// control and cmd/hitless). It is handed to each new generation like
	// any listener. Its file mode is 0600 (set through the socket bound,
	// never through a path someone replaced), and only peers running as
	// the service's user or as root are served (checked with the peer's
	// credentials). New warns when its directory can be written by other
	// users: they could not talk to the service, but could make the socket
	// unreachable.
	ControlSocket string
	// Preflight, if set, runs before a new generation is started, with the
	// path of the binary about to be executed; an error fails the upgrade
	// with control.ReasonCheckFailed and nothing is started. ctx ends at
	// UpgradeTimeout, or at once when the generation is stopped.
	//
	// Whether it is set or not, the binary is checked first, reading only
	// its headers (tens of microseconds): a regular, executable file, an
	// executable for this platform (ELF or Mach-O of this architecture,
	// or a "#!" script whose interpreter is executable) and complete
	// (not truncated, as a binary still being copied is). A failure there
	// fails the upgrade with control.ReasonStartFailed.
	//
	// Preflight runs as the upgrade begins, and its cost adds to it: one
	// that runs the new binary (as examples/http does with -preflight)
	// is a second start of the program, competing for the CPU with the
	// new generation and the one serving (docs/upgrade-preflight.md).
	Preflight func(ctx context.Context, binary string) error
	// ReadyCheck, if set, must pass before the generation reports ready
	// (a readiness gate: the database answers, the certificate loads).
	// If it fails, Ready fails, this generation takes no connection, and
	// the previous generation, if any, reports the upgrade as failed with
	// the check's error. It runs before the listeners accept, so it must
	// not connect to them. ctx expires after UpgradeTimeout.
	ReadyCheck func(ctx context.Context) error
	// Probation makes a new generation prove itself before it takes over.
	Probation Probation
	// CrashLoop holds upgrades back after repeated failures.
	CrashLoop CrashLoop
	// FDStore, if true, keeps the listening sockets in systemd's file
	// descriptor store (FDSTORE=1, under their logical names; the unit
	// needs FileDescriptorStoreMax=), so that after `systemctl restart`, a
	// crash with Restart=, or an OOM kill, the next start gets them back
	// and connections queued meanwhile are served instead of refused. A
	// stored socket the configuration no longer has is removed from the
	// store. Sockets systemd passes (socket activation or the store) are
	// used in any case.
	FDStore bool
	// StateLimit bounds each state handed over (OfferState), in bytes: a
	// snapshot larger than the limit fails the upgrade, and State refuses
	// a state larger than its generation's limit before reading it. Zero
	// or negative means DefaultStateLimit.
	StateLimit int

	// Version names the build this generation runs, for the history, the
	// status and the Observer ("v1.4.2", a commit). Empty means the main
	// module's version from the build information, or its VCS revision.
	Version string
	// Observer, if set, is told what happens to upgrades and drains (see
	// Event); it must not block.
	Observer Observer
	// HistoryLen is how many upgrades the history keeps (and hands to the
	// next generation). Zero means DefaultHistoryLen; negative keeps none
	// (the totals still count). The history travels to the next
	// generation as the state "hitless.history", which is reserved (an
	// OfferState under that name fails with ErrNameTaken) and takes one of
	// the 64 names a generation may offer.
	HistoryLen int
}

// Probation makes a new generation serve alongside the old one for a while
// before it takes over: both accept on the shared sockets for For, and
// only then is the old one told, which stops accepting and drains. If the
// new generation exits, crashes or fails Check meanwhile, the upgrade
// fails as if it had never become ready, and the old generation, which
// never stopped serving, goes on. Probation adds to the time an upgrade
// waits. It is the new generation's Options that count: a generation on
// probation is the one that checks itself.
type Probation struct {
	// For is how long the probation lasts; zero means none.
	For time.Duration
	// Check, if set, is called every 100 ms during the probation; an
	// error ends it as failed.
	Check func(ctx context.Context) error
}

// CrashLoop refuses upgrade requests for a while (with a *BackoffError)
// after repeated failed upgrades, instead of starting a broken binary
// again and again.
type CrashLoop struct {
	// After is the number of failed upgrades in a row that starts the
	// back-off. Zero means DefaultCrashLoopAfter; negative disables it.
	After int
	// Backoff is how long requests are refused after the After-th failure
	// in a row; it doubles with each further failure, up to 16 times.
	// Zero or negative means DefaultCrashLoopBackoff.
	Backoff time.Duration
}

func (o Options) withDefaults() Options {
	if o.UpgradeTimeout <= 0 {
		o.UpgradeTimeout = DefaultUpgradeTimeout
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.CrashLoop.After == 0 {
		o.CrashLoop.After = DefaultCrashLoopAfter
	}
	if o.CrashLoop.Backoff <= 0 {
		o.CrashLoop.Backoff = DefaultCrashLoopBackoff
	}
	if o.StateLimit <= 0 {
		o.StateLimit = DefaultStateLimit
	}
	if o.HistoryLen == 0 {
		o.HistoryLen = DefaultHistoryLen
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

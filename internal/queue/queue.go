package queue

import (
	"strconv"
	"time"
)

// ID names a request, or a [Machine.Settle] call. The owner chooses it; a
// request's ID must be unique per Machine (IDs of Settle calls are a
// separate space: the machine only hands them back).
type ID uint64

// Request is one request to upgrade.
type Request struct {
	ID ID
	// Async is true when nobody waits for the outcome (a signal). Such a
	// request is never given up: [Machine.GiveUp] ignores it, and it
	// keeps its attempt from being cancelled.
	Async bool
	// Hurry asks the previous generation, if it still drains, to cut its
	// drain short so that the attempt that carries the request out can
	// start.
	Hurry bool
}

// Config is the crash-loop policy. The zero Config disables the back-off.
type Config struct {
	// CrashLoopAfter failed attempts in a row (counted ones, see
	// [Machine.Done]) start the back-off. Zero or negative disables it.
	CrashLoopAfter int
	// CrashLoopBackoff is the first back-off period; it doubles with each
	// further failure, at most 16 times (<< 4). Zero or negative means no
	// back-off even past CrashLoopAfter (failures are still counted).
	CrashLoopBackoff time.Duration
}

// Phase is where the machine is.
type Phase int

// Phases of a [Machine]. Idle, Waiting and Running say whether an attempt
// exists and whether it takes more requests; Exited overrides them.
const (
	// Idle: no attempt exists. A request starts one, unless the back-off
	// refuses it.
	Idle Phase = iota
	// Waiting: an attempt exists but has not started the new process (it
	// waits for the previous generation to exit); requests coalesce into
	// it.
	Waiting
	// Running: the attempt has started the new process, or it has been
	// cancelled and winds down; either way it takes no more requests, and
	// new ones wait for the next attempt.
	Running
	// Exited: this generation must go (Stop, or an upgrade succeeded);
	// requests are refused. An attempt may still be winding down. Final.
	Exited
)

var phaseNames = [...]string{Idle: "Idle", Waiting: "Waiting", Running: "Running", Exited: "Exited"}

// String returns the constant's name, for logs and status reports.
func (p Phase) String() string {
	if p >= 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "Phase(" + strconv.Itoa(int(p)) + ")"
}

// Action is something the owner must do. Kind says what; IDs and Err are
// set only for the kinds that document them.
type Action struct {
	Kind ActionKind
	// IDs are the requests a Reply or Forward concerns, or the Settle
	// calls a Settled releases, in the order they arrived; never empty for
	// those kinds, nil for the others.
	IDs []ID
	// Err is the outcome for Reply (nil: the upgrade succeeded).
	Err error
}

// ActionKind says what an Action asks for.
type ActionKind int

// Kinds of [Action].
const (
	// Start a new attempt: the owner runs it, reports Started once it
	// starts the new process (if it gets that far), then Done. Never
	// issued while an attempt exists, nor once the machine is Exited.
	Start ActionKind = iota + 1
	// Hurry asks the draining previous generation to cut its drain short,
	// for the attempt that exists. At most once per attempt.
	Hurry
	// Cancel the attempt that exists: the owner ends it promptly (stops
	// waiting for the previous generation, or kills the new process) and
	// still reports Done for it, with counts false unless the attempt
	// failed on its own. Issued at most once per attempt: when every
	// request it would carry out has given up before it started the new
	// process, or when this generation must exit ([Machine.Exit]).
	Cancel
	// Reply gives Err to the requests in IDs. IDs include Async requests:
	// nobody waits for those, so the owner logs their outcome instead.
	Reply
	// Forward passes the requests in IDs on to the new generation: they
	// arrived while an attempt that then succeeded was running, so their
	// sender may expect a newer binary than that attempt started. The
	// owner tells waiting requesters to ask the new generation, and
	// signals the new generation once if any of them is Async.
	Forward
	// Settled: nothing is pending any more; the Settle calls in IDs may
	// go on (see Machine.Settle).
	Settled
)

var kindNames = [...]string{Start: "Start", Hurry: "Hurry", Cancel: "Cancel", Reply: "Reply", Forward: "Forward", Settled: "Settled"}

// String returns the constant's name, for logs.
func (k ActionKind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "ActionKind(" + strconv.Itoa(int(k)) + ")"
}

// Status is the machine's bookkeeping, for the owner's status report.
type Status struct {
	// Phase is where the machine is.
	Phase Phase
	// Failures counts failed attempts in a row (counted ones, see
	// [Machine.Done]); a success resets it.
	Failures int
	// Backoff is when the last back-off ends: requests are refused while
	// the time is before it. Zero until CrashLoopAfter failures in a row,
	// and again after a success. It is not cleared when it passes (the
	// machine has no clock): compare it with the time.
	Backoff time.Time
	// LastErr is the outcome of the last attempt that ended (nil: it
	// succeeded, or none has ended). An attempt that was cancelled and
	// reports a failure that does not count leaves it unchanged, as it
	// leaves LastAt: that failure is the cancellation, not news.
	LastErr error
	// LastAt is when the last attempt ended; zero if none.
	LastAt time.Time
	// Upgraded: an attempt succeeded, so this generation drains. Once set,
	// it stays set.
	Upgraded bool
}

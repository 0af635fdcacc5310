package control

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Errors a request can end with, in the service (upgrade.Upgrader.Upgrade
// returns them; package upgrade re-exports them under the same names) and
// across the control socket (Client returns them). Match them with
// errors.Is.
var (
	// ErrNotReady: the generation asked is not serving yet.
	ErrNotReady = errors.New("hitless: this generation is not ready yet")
	// ErrStopped: the service is stopping; no more upgrades.
	ErrStopped = errors.New("hitless: stopped")
	// ErrUpgraded: this generation has already handed over to a newer one
	// and is draining; ask the new one.
	ErrUpgraded = errors.New("hitless: already upgraded, this generation is exiting")
	// ErrChildFailed matches every *ChildError.
	ErrChildFailed = errors.New("hitless: the new generation failed")
	// ErrBackoff matches every *BackoffError.
	ErrBackoff = errors.New("hitless: backing off after repeated failures")
	// ErrNoRollback: a rollback was asked for and there is nothing to
	// roll back to; the error says why.
	ErrNoRollback = errors.New("nothing to roll back to")
)

// Reason says how a new generation failed.
type Reason int

// Reasons a new generation did not take over.
const (
	// ReasonStartFailed: the new binary could not be started (missing,
	// not executable, fork failed).
	ReasonStartFailed Reason = iota + 1
	// ReasonCrashed: it was killed by a signal before it was ready.
	ReasonCrashed
	// ReasonExited: it exited before it was ready.
	ReasonExited
	// ReasonTimedOut: it did not become ready within the upgrade timeout
	// and was killed.
	ReasonTimedOut
	// ReasonCheckFailed: the pre-flight check rejected it; it was not
	// started.
	ReasonCheckFailed
	// ReasonIncompatible: it was built with a release of hitless whose
	// handoff this one cannot speak (or the other way round); it exited
	// before it took any traffic.
	ReasonIncompatible
)

var reasonText = map[Reason]string{
	ReasonStartFailed:  "start failed",
	ReasonCrashed:      "crashed before ready",
	ReasonExited:       "exited before ready",
	ReasonTimedOut:     "not ready in time",
	ReasonCheckFailed:  "pre-flight check failed",
	ReasonIncompatible: "incompatible handoff version",
}

func (r Reason) String() string {
	if s, ok := reasonText[r]; ok {
		return s
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// ChildError says why a new generation did not take over. When an upgrade
// fails with one, the new process is gone and the old generation serves on
// as before.
type ChildError struct {
	Reason Reason
	// PID of the new process; zero when it was never started.
	PID int
	// ExitStatus is the exit status when Reason is ReasonExited.
	ExitStatus int
	// Signal is the signal that killed it when Reason is ReasonCrashed.
	Signal syscall.Signal
	// Timeout is the readiness timeout when Reason is ReasonTimedOut.
	Timeout time.Duration
	// Err is the cause, when there is one beyond the reason: why the
	// binary could not be started, what the pre-flight check returned,
	// which handoff versions did not match. In the service it is the
	// original error (errors.Is and errors.As see through it); across the
	// control socket only its text survives.
	Err error
	// Stderr holds the last lines the new generation wrote to its stderr
	// before it failed (everything it wrote also went to the service's
	// own stderr). It may hold secrets a failing program printed, so it is
	// given only to whoever asked for the upgrade, never to systemd's
	// STATUS= (see Summary).
	Stderr string
}

// Error says what happened, followed by the new generation's last output.
func (e *ChildError) Error() string {
	msg := e.Summary()
	if e.Stderr != "" {
		msg += "; its last output: " + strings.ReplaceAll(e.Stderr, "\n", " | ")
	}
	return msg
}

// Summary says what happened without the new generation's output: the
// reason, its PID, its exit status or signal. It is what may be shown to
// every local user (systemd's STATUS=).
func (e *ChildError) Summary() string {
	cause := ""
	if e.Err != nil {
		cause = ": " + e.Err.Error()
	}
	switch e.Reason {
	case ReasonStartFailed:
		return "hitless: could not start the new generation" + cause
	case ReasonCrashed:
		return fmt.Sprintf("hitless: new generation (pid %d) crashed before it was ready: killed by signal %s", e.PID, signalName(e.Signal))
	case ReasonExited:
		return fmt.Sprintf("hitless: new generation (pid %d) exited with status %d before it was ready%s", e.PID, e.ExitStatus, cause)
	case ReasonTimedOut:
		return fmt.Sprintf("hitless: new generation (pid %d) was not ready within %v and was killed", e.PID, e.Timeout)
	case ReasonCheckFailed:
		return "hitless: pre-flight check of the new binary failed" + cause
	case ReasonIncompatible:
		return fmt.Sprintf("hitless: new generation (pid %d) cannot take over%s", e.PID, cause)
	}
	return fmt.Sprintf("hitless: new generation (pid %d) failed: %v%s", e.PID, e.Reason, cause)
}

// Is makes errors.Is(err, ErrChildFailed) true for every *ChildError.
func (e *ChildError) Is(target error) bool { return target == ErrChildFailed }

// Unwrap returns the cause (Err), if any.
func (e *ChildError) Unwrap() error { return e.Err }

// BackoffError is returned while upgrade requests are refused after
// repeated failed upgrades (upgrade.Options.CrashLoop).
type BackoffError struct {
	// Until is when upgrades are allowed again.
	Until time.Time
	// Failures counts the failed upgrades in a row.
	Failures int
	// Last is the last failure (usually a *ChildError).
	Last error
}

func (e *BackoffError) Error() string {
	last := "unknown"
	if e.Last != nil {
		last = e.Last.Error()
	}
	return fmt.Sprintf("hitless: refused: %d upgrades failed in a row, next attempt allowed at %s (last: %s)",
		e.Failures, e.Until.Format(time.RFC3339), last)
}

// Is makes errors.Is(err, ErrBackoff) true.
func (e *BackoffError) Is(target error) bool { return target == ErrBackoff }

// Unwrap returns the last failure.
func (e *BackoffError) Unwrap() error { return e.Last }

// State is what a generation is doing.
type State string

// States of a generation, as Status reports them.
const (
	StateStarting  State = "starting"  // not ready yet
	StateServing   State = "serving"   // ready, no upgrade running
	StateUpgrading State = "upgrading" // an upgrade attempt runs or waits for the previous generation
	StateDraining  State = "draining"  // a newer generation serves; this one drains
	StateStopping  State = "stopping"  // stopping for good; draining
)

// Status describes a generation, for operators (`hitless status`) and for
// the application's own reporting.
type Status struct {
	PID int
	// Generation counts generations since the service started: 1 for the
	// process started by systemd or a shell, then 2, 3, ...
	Generation int
	State      State
	// LastUpgrade is the outcome of this generation's last upgrade
	// attempt: empty if none, "ok", or what failed (without the new
	// generation's output).
	LastUpgrade   string
	LastUpgradeAt time.Time
	// Failures counts failed upgrades in a row.
	Failures int
	// BackoffUntil is set while upgrade requests are refused after
	// repeated failures.
	BackoffUntil time.Time
	// Version is the build this generation runs
	// (upgrade.Options.Version, or what its build information says).
	Version string
	// RollbackTo is the build a rollback would start (the previous
	// generation's); empty when there is nothing to roll back to.
	RollbackTo string
	// History is the service's last upgrades (upgrade.Options.HistoryLen
	// of them), oldest first, handed from generation to generation; the
	// last may be in progress.
	History []Upgrade
	// Totals counts upgrades and drains since the service started, across
	// every generation.
	Totals Totals
}

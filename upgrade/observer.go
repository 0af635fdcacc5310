package upgrade

import (
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
)

// Observer is told what happens to this service's upgrades and drains,
// for metrics and alerts (examples/extra/metrics exports them to
// Prometheus). Set it in Options.Observer.
//
// Observe is called synchronously, from the goroutine where the thing
// happened (the one carrying out an upgrade, Run's, Ready's), outside
// every lock of the Upgrader, so it may call Upgrader.Status. Calls are
// never concurrent, and they come in the order things happened, so that
// Event.Totals never goes back: when two things happen at once, the
// goroutine that is telling the Observer about the first also tells it
// about the second. Observe must not block: the upgrade, the drain or the
// readiness report waits for it to return. An Observer that sends to a
// channel should drop what it cannot send.
type Observer interface {
	Observe(Event)
}

// EventKind says what an Event reports.
type EventKind string

// Kinds of Event. The fields an Event sets besides Kind, At, Generation,
// PID and Totals are listed with each kind.
const (
	// EventReady: this generation became ready and serves. After an
	// upgrade (it has a predecessor) From and To name the two
	// generations and Took is how long the upgrade took so far, from its
	// start in the previous generation.
	EventReady EventKind = "ready"
	// EventUpgradeStarted: this generation begins an upgrade. From is
	// this generation, To.Generation the one it will start.
	EventUpgradeStarted EventKind = "upgrade_started"
	// EventUpgraded: the new generation (To) took over; this one drains
	// next. Took is how long the attempt took.
	EventUpgraded EventKind = "upgraded"
	// EventUpgradeFailed: the attempt failed and this generation serves
	// on. Err is the error (usually a *ChildError), Reason its code (see
	// control.ErrorCode), Took how long the attempt took.
	EventUpgradeFailed EventKind = "upgrade_failed"
	// EventTakenBack: the generation this one had handed over to (To)
	// died while this one still drained, and this one serves again.
	// Reason says what it died of.
	EventTakenBack EventKind = "taken_back"
	// EventDrained: this generation's servers drained, after an upgrade
	// or at a stop. Drain is the report (a drain.Group's, with a report
	// per server), Err the drain's error.
	EventDrained EventKind = "drained"
	// EventPreviousDrained: the generation this one took over from (From)
	// finished its drain and said how it went (Drain, and Err if it
	// failed, as text). Totals now include it.
	EventPreviousDrained EventKind = "previous_drained"
)

// Totals counts what happened to the service's upgrades since it started,
// across every generation (see control.Totals). It is part of the history
// each generation hands to the next, so counters derived from it do not
// start again from zero at each upgrade.
type Totals = control.Totals

// Event is one thing that happened to the service's upgrades or drains.
type Event struct {
	Kind EventKind
	// At is when it happened.
	At time.Time
	// Generation and PID name the generation that reports it (this
	// process).
	Generation int
	PID        int
	// From and To name the generations of the upgrade the event is about,
	// with their versions, as far as they are known.
	From, To control.Process
	// Took is how long the upgrade took, for the kinds that say so.
	Took time.Duration
	// Err is what failed, for EventUpgradeFailed, EventDrained and
	// EventPreviousDrained.
	Err error
	// Reason is a failure's or a take-back's code ("crashed", "exited",
	// "timed-out", ...; see control.ErrorCode).
	Reason string
	// Drain is the drain's report, for EventDrained and
	// EventPreviousDrained.
	Drain drain.Report
	// Totals are the counts across every generation, this event
	// included. Each Event has its own copy.
	Totals Totals
}

package upgrade

import (
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/internal/handoff"
)

// SKELETON (to be completed by the history/metrics work): the types and
// the hooks the lifecycle calls. Bodies are no-ops for now.

// Observer is told what happens to this service's upgrades and drains.
// Observe is called synchronously from the goroutine where it happened,
// so it must not block.
type Observer interface {
	Observe(Event)
}

// EventKind says what an Event reports.
type EventKind string

// Event is one thing that happened.
type Event struct {
	Kind       EventKind
	At         time.Time
	Generation int
	PID        int
	Drain      drain.Report
	Err        error
}

// history keeps the upgrades of this service, hands them to the next
// generation and tells the Observer.
type history struct{}

// newHistory is called in New, once u.h is set, before the scheduler
// starts.
func newHistory(u *Upgrader) *history { return &history{} }

// ready: this generation became ready (took over if it has a parent).
func (h *history) ready() {}

// attemptStarted: an upgrade to generation next begins (before the
// preflight check).
func (h *history) attemptStarted(next int) {}

// upgraded: the attempt that began at attemptStarted succeeded.
func (h *history) upgraded(child handoff.Child) {}

// failed: the attempt failed (not cancelled); err is its error.
func (h *history) failed(err error) {}

// drained: this generation's servers drained, after an upgrade (upgraded
// true) or at a stop.
func (h *history) drained(r drain.Report, err error, upgraded bool) {}

// takenBack: the generation this one had handed over to (pid) died
// before this one's drain ended, and this one serves again.
func (h *history) takenBack(pid int, why string) {}

// close ends what newHistory started. Called at release.
func (h *history) close() {}

// status fills in st's history fields. Called by Upgrader.Status.
func (h *history) status(st *control.Status) {}

// buildVersion is Options.Version, or what the build information says
// when it is empty.
func buildVersion(v string) string { return v }

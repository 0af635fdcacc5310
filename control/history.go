package control

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/hitlessgo/hitless/internal/ctlproto"
)

// UpgradeKind says what an entry of the history was.
type UpgradeKind string

// Kinds of Upgrade.
const (
	// KindUpgrade: a new generation started from the binary on disk
	// (a reload, SIGHUP, Upgrader.Upgrade).
	KindUpgrade UpgradeKind = "upgrade"
	// KindRollback: a new generation started from the executable the
	// previous generation ran (a rollback, Upgrader.Rollback).
	KindRollback UpgradeKind = "rollback"
)

// Outcome says how an Upgrade ended.
type Outcome string

// Outcomes of an Upgrade.
const (
	// OutcomeInProgress: the attempt has not ended yet.
	OutcomeInProgress Outcome = "in progress"
	// OutcomeOK: the new generation took over.
	OutcomeOK Outcome = "ok"
	// OutcomeFailed: the new generation did not take over (Upgrade.Reason
	// says why); the old one served on.
	OutcomeFailed Outcome = "failed"
	// OutcomeTakenBack: the new generation took over, then died while
	// the old one still drained, and the old one serves again.
	OutcomeTakenBack Outcome = "taken back"
	// OutcomeCanceled: the attempt was given up (a stop, or every
	// requester went away) before it ended; it is not a failure.
	OutcomeCanceled Outcome = "canceled"
)

// Process names one generation of the service.
type Process struct {
	PID        int
	Generation int
	// Version is the build the generation runs (upgrade.Options.Version,
	// or what its build information says); empty if it did not say.
	Version string
}

// Upgrade is one entry of a service's history: an upgrade attempt, from
// the generation that made it to the one it started.
type Upgrade struct {
	Kind UpgradeKind
	// Requested is when the first request the attempt answers arrived
	// (a signal, a reload); Started is when the attempt began (after
	// waiting for the previous generation's drain, if it had to);
	// Finished is when it ended (zero while in progress).
	Requested, Started, Finished time.Time
	From, To                     Process
	Outcome                      Outcome
	// Reason is, for a failure or a take-back, a code saying why: one of
	// the codes ErrorCode returns ("crashed", "exited", "timed-out",
	// "start-failed", "check-failed", "incompatible", ...), or for a
	// take-back what the new generation died of.
	Reason string
	// Error says what went wrong, in words, without the new generation's
	// output (see ChildError.Summary), shortened to a line.
	Error string
	// Took is how long the attempt took, from Started to Finished: for a
	// success, until the new generation was ready (Finished minus
	// Requested adds the wait for the previous generation's drain).
	Took time.Duration
	// DrainedAt is when the old generation's drain ended, once it has;
	// DrainTook, DrainEnded and DrainCut are that drain's duration and
	// the connections it let end and cut (see drain.Report).
	DrainedAt            time.Time
	DrainTook            time.Duration
	DrainEnded, DrainCut int
}

// Totals counts what happened to a service's upgrades since it started,
// across every generation: each hands its totals to the next, which adds
// the previous generation's drain to them when it has ended.
type Totals struct {
	// Upgrades counts upgrades that succeeded (a new generation took
	// over), including those later taken back.
	Upgrades int64
	// Failures counts upgrades that failed; FailuresByReason splits them
	// by Upgrade.Reason.
	Failures         int64
	FailuresByReason map[string]int64
	// TakeBacks counts new generations that died while the old one still
	// drained, which then served again.
	TakeBacks int64
	// DrainEnded and DrainCut count the connections that generations'
	// drains let end gracefully and cut (drain.Report's Ended and Cut).
	DrainEnded, DrainCut int64
}

// Clone returns a copy of t that shares nothing with it.
func (t Totals) Clone() Totals {
	t.FailuresByReason = maps.Clone(t.FailuresByReason)
	return t
}

// Code returns r's code on the control socket ("crashed", "exited",
// "timed-out", "start-failed", "check-failed", "incompatible"), which is
// also Upgrade.Reason's; "internal" for a Reason this release does not
// know.
func (r Reason) Code() string {
	if c, ok := reasonCodes[r]; ok {
		return c
	}
	return ctlproto.CodeInternal
}

// ErrorCode returns the code the control socket gives err: for a
// *ChildError its Reason's Code, "backoff", "stopped", "upgraded",
// "not-ready", "timeout", "canceled", or "internal" for anything else;
// empty for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	return errorResponse(err).Code
}

//go:embed status.schema.json
var statusSchema []byte

// StatusSchema returns the JSON schema (draft 2020-12) of a Status as
// Status.MarshalJSON encodes it, which is what the control socket sends
// and `hitless status -json` prints. The caller may modify the slice.
func StatusSchema() []byte { return append([]byte(nil), statusSchema...) }

// MarshalJSON encodes u as it appears in a status's history: snake_case
// keys, RFC 3339 times, durations in nanoseconds, zero fields left out.
func (u Upgrade) MarshalJSON() ([]byte, error) { return json.Marshal(upgradeToWire(u)) }

// UnmarshalJSON decodes what MarshalJSON encodes.
func (u *Upgrade) UnmarshalJSON(b []byte) error {
	var w ctlproto.Upgrade
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	v, err := upgradeFromWire(w)
	if err != nil {
		return fmt.Errorf("control: upgrade: %w", err)
	}
	*u = v
	return nil
}

// MarshalJSON encodes t as it appears in a status: snake_case keys, zero
// counts left out.
func (t Totals) MarshalJSON() ([]byte, error) { return json.Marshal(totalsToWire(t)) }

// UnmarshalJSON decodes what MarshalJSON encodes.
func (t *Totals) UnmarshalJSON(b []byte) error {
	var w ctlproto.Totals
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*t = totalsFromWire(&w)
	return nil
}

func processToWire(p Process) *ctlproto.Process {
	if p == (Process{}) {
		return nil
	}
	return &ctlproto.Process{PID: p.PID, Generation: p.Generation, Version: p.Version}
}

func processFromWire(p *ctlproto.Process) Process {
	if p == nil {
		return Process{}
	}
	return Process{PID: p.PID, Generation: p.Generation, Version: p.Version}
}

func upgradeToWire(u Upgrade) ctlproto.Upgrade {
	return ctlproto.Upgrade{Kind: string(u.Kind),
		Requested: formatTime(u.Requested), Started: formatTime(u.Started), Finished: formatTime(u.Finished),
		From: processToWire(u.From), To: processToWire(u.To),
		Outcome: string(u.Outcome), Reason: u.Reason, Error: u.Error, TookNS: int64(u.Took),
		DrainedAt: formatTime(u.DrainedAt), DrainNS: int64(u.DrainTook), DrainEnded: u.DrainEnded, DrainCut: u.DrainCut}
}

func upgradeFromWire(w ctlproto.Upgrade) (Upgrade, error) {
	u := Upgrade{Kind: UpgradeKind(w.Kind), From: processFromWire(w.From), To: processFromWire(w.To),
		Outcome: Outcome(w.Outcome), Reason: w.Reason, Error: w.Error, Took: time.Duration(w.TookNS),
		DrainTook: time.Duration(w.DrainNS), DrainEnded: w.DrainEnded, DrainCut: w.DrainCut}
	for _, t := range []struct {
		key string
		s   string
		to  *time.Time
	}{{"requested", w.Requested, &u.Requested}, {"started", w.Started, &u.Started},
		{"finished", w.Finished, &u.Finished}, {"drained_at", w.DrainedAt, &u.DrainedAt}} {
		v, err := parseTime(t.s)
		if err != nil {
			return Upgrade{}, fmt.Errorf("%s: %w", t.key, err)
		}
		*t.to = v
	}
	return u, nil
}

func historyToWire(h []Upgrade) []ctlproto.Upgrade {
	if len(h) == 0 {
		return nil
	}
	w := make([]ctlproto.Upgrade, len(h))
	for i, u := range h {
		w[i] = upgradeToWire(u)
	}
	return w
}

func historyFromWire(w []ctlproto.Upgrade) ([]Upgrade, error) {
	if len(w) == 0 {
		return nil, nil
	}
	h := make([]Upgrade, len(w))
	for i, u := range w {
		var err error
		if h[i], err = upgradeFromWire(u); err != nil {
			return nil, fmt.Errorf("history[%d]: %w", i, err)
		}
	}
	return h, nil
}

func totalsToWire(t Totals) *ctlproto.Totals {
	w := ctlproto.Totals{Upgrades: t.Upgrades, Failures: t.Failures, TakeBacks: t.TakeBacks,
		DrainEnded: t.DrainEnded, DrainCut: t.DrainCut}
	for reason, n := range t.FailuresByReason {
		if n != 0 {
			if w.FailuresByReason == nil {
				w.FailuresByReason = make(map[string]int64)
			}
			w.FailuresByReason[reason] = n
		}
	}
	if w.Upgrades == 0 && w.Failures == 0 && w.TakeBacks == 0 && w.DrainEnded == 0 && w.DrainCut == 0 && w.FailuresByReason == nil {
		return nil
	}
	return &w
}

func totalsFromWire(w *ctlproto.Totals) Totals {
	if w == nil {
		return Totals{}
	}
	return Totals{Upgrades: w.Upgrades, Failures: w.Failures, FailuresByReason: maps.Clone(w.FailuresByReason),
		TakeBacks: w.TakeBacks, DrainEnded: w.DrainEnded, DrainCut: w.DrainCut}
}

package control

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/internal/ctlproto"
)

// This file turns errors and Status into their wire forms and back, so
// that what a Handler returns is what Client returns: the same types, the
// same fields, the same errors.Is answers.

// reasonCodes is the wire code of each Reason.
var reasonCodes = map[Reason]string{
	ReasonStartFailed:  ctlproto.CodeStartFailed,
	ReasonCrashed:      ctlproto.CodeCrashed,
	ReasonExited:       ctlproto.CodeExited,
	ReasonTimedOut:     ctlproto.CodeTimedOut,
	ReasonCheckFailed:  ctlproto.CodeCheckFailed,
	ReasonIncompatible: ctlproto.CodeIncompatible,
}

func reasonOf(code string) (Reason, bool) {
	for r, c := range reasonCodes {
		if c == code {
			return r, true
		}
	}
	return 0, false
}

// errorResponse is the answer that carries err to the client. A
// *BackoffError is looked for before a *ChildError, because a back-off
// wraps the child failure that caused it.
func errorResponse(err error) ctlproto.Response {
	if err == nil {
		return ctlproto.Response{OK: true}
	}
	r := ctlproto.Response{Error: err.Error(), Code: ctlproto.CodeInternal}
	var be *BackoffError
	var ce *ChildError
	switch {
	case errors.As(err, &be):
		r.Code = ctlproto.CodeBackoff
		r.Backoff = &ctlproto.Backoff{Until: formatTime(be.Until), Failures: be.Failures}
		var last *ChildError
		switch {
		case errors.As(be.Last, &last):
			r.Backoff.LastCode, r.Backoff.LastChild = childWire(last)
			r.Backoff.Last = last.Error()
		case be.Last != nil:
			r.Backoff.Last = be.Last.Error()
		}
	case errors.As(err, &ce):
		r.Code, r.Child = childWire(ce)
	case errors.Is(err, ErrBackoff):
		r.Code = ctlproto.CodeBackoff
	case errors.Is(err, ErrForwarded):
		r.Code = ctlproto.CodeForwarded
	case errors.Is(err, ErrStopped):
		r.Code = ctlproto.CodeStopped
	case errors.Is(err, ErrUpgraded):
		r.Code = ctlproto.CodeUpgraded
	case errors.Is(err, ErrNotReady):
		r.Code = ctlproto.CodeNotReady
	case errors.Is(err, ErrNoRollback):
		r.Code = ctlproto.CodeNoRollback
	case errors.Is(err, context.DeadlineExceeded):
		r.Code = ctlproto.CodeTimeout
	case errors.Is(err, context.Canceled):
		r.Code = ctlproto.CodeCanceled
	}
	return r
}

// childWire returns the code and wire form of ce. A Reason this release
// does not know (from a newer service) goes as CodeInternal with its Child
// set, which a client still matches to ErrChildFailed.
func childWire(ce *ChildError) (string, *ctlproto.Child) {
	code, ok := reasonCodes[ce.Reason]
	if !ok {
		code = ctlproto.CodeInternal
	}
	c := &ctlproto.Child{PID: ce.PID, ExitStatus: ce.ExitStatus, Signal: int(ce.Signal),
		TimeoutNS: int64(ce.Timeout), Stderr: ce.Stderr,
		Reason: code, TimeoutMS: ce.Timeout.Milliseconds()}
	if ce.Err != nil {
		c.Cause = ce.Err.Error()
		c.Detail = c.Cause
	}
	return code, c
}

func childFromWire(reason Reason, c *ctlproto.Child) *ChildError {
	ce := &ChildError{Reason: reason, PID: c.PID, ExitStatus: c.ExitStatus,
		Signal: syscall.Signal(c.Signal), Timeout: time.Duration(c.TimeoutNS), Stderr: c.Stderr}
	if ce.Timeout == 0 && c.TimeoutMS > 0 { // a previous release's server
		ce.Timeout = time.Duration(c.TimeoutMS) * time.Millisecond
	}
	switch {
	case c.Cause != "":
		ce.Err = errors.New(c.Cause)
	case c.Detail != "":
		ce.Err = errors.New(c.Detail)
	}
	return ce
}

// responseError turns an answer back into the error the Handler returned.
// It is nil for an OK answer. CodeForwarded is for Client.Reload to act on
// before calling it.
func responseError(r ctlproto.Response) error {
	if r.OK {
		return nil
	}
	if reason, ok := reasonOf(r.Code); ok {
		if r.Child == nil {
			return &ChildError{Reason: reason, Err: errors.New(r.Error)}
		}
		return childFromWire(reason, r.Child)
	}
	switch r.Code {
	case ctlproto.CodeBackoff:
		if r.Backoff == nil {
			return &remoteError{msg: r.Error, base: ErrBackoff}
		}
		return backoffFromWire(r.Backoff)
	case ctlproto.CodeStopped:
		return &remoteError{msg: r.Error, base: ErrStopped}
	case ctlproto.CodeUpgraded:
		return &remoteError{msg: r.Error, base: ErrUpgraded}
	case ctlproto.CodeNotReady:
		return &remoteError{msg: r.Error, base: ErrNotReady}
	case ctlproto.CodeNoRollback:
		return &remoteError{msg: r.Error, base: ErrNoRollback}
	case ctlproto.CodeTimeout, ctlproto.CodeExpired:
		return &remoteError{msg: r.Error, base: context.DeadlineExceeded}
	case ctlproto.CodeCanceled:
		return &remoteError{msg: r.Error, base: context.Canceled}
	case ctlproto.CodeRefused:
		return fmt.Errorf("control: the service refused the request: %s", r.Error)
	}
	if r.Child != nil {
		return &remoteError{msg: r.Error, base: ErrChildFailed}
	}
	if r.Code == "" {
		r.Code = "no code"
	}
	return fmt.Errorf("control: the service answered: %s (%s)", r.Error, r.Code)
}

func backoffFromWire(b *ctlproto.Backoff) error {
	until, err := parseTime(b.Until)
	if err != nil {
		return fmt.Errorf("control: malformed answer: back-off until %q: %w", b.Until, err)
	}
	be := &BackoffError{Until: until, Failures: b.Failures}
	switch reason, known := reasonOf(b.LastCode); {
	case b.LastChild != nil && known:
		be.Last = childFromWire(reason, b.LastChild)
	case b.LastChild != nil:
		be.Last = &remoteError{msg: b.Last, base: ErrChildFailed}
	case b.Last != "":
		be.Last = errors.New(b.Last)
	}
	return be
}

// remoteError carries the service's words and matches the sentinel they
// stand for.
type remoteError struct {
	msg  string
	base error
}

func (e *remoteError) Error() string {
	if e.msg == "" {
		return e.base.Error()
	}
	return e.msg
}

func (e *remoteError) Unwrap() error { return e.base }

// toWire is st as it goes on the wire, and as `hitless status -json`
// prints it.
func toWire(st Status) ctlproto.Status {
	return ctlproto.Status{PID: st.PID, Generation: st.Generation, State: string(st.State),
		LastUpgrade: st.LastUpgrade, LastUpgradeAt: formatTime(st.LastUpgradeAt),
		Failures: st.Failures, BackoffUntil: formatTime(st.BackoffUntil),
		Version: st.Version, RollbackTo: st.RollbackTo, History: historyToWire(st.History), Totals: totalsToWire(st.Totals)}
}

func fromWire(w ctlproto.Status) (Status, error) {
	st := Status{PID: w.PID, Generation: w.Generation, State: State(w.State),
		LastUpgrade: w.LastUpgrade, Failures: w.Failures,
		Version: w.Version, RollbackTo: w.RollbackTo, Totals: totalsFromWire(w.Totals)}
	var err error
	if st.LastUpgradeAt, err = parseTime(w.LastUpgradeAt); err != nil {
		return Status{}, fmt.Errorf("last_upgrade_at: %w", err)
	}
	if st.BackoffUntil, err = parseTime(w.BackoffUntil); err != nil {
		return Status{}, fmt.Errorf("backoff_until: %w", err)
	}
	if st.History, err = historyFromWire(w.History); err != nil {
		return Status{}, err
	}
	return st, nil
}

// Times keep their offset on the wire, so that an error rebuilt by the
// client prints them as the service did.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

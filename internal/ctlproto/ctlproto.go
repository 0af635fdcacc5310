// Package ctlproto is the wire format of the control socket: one JSON
// request line from the client, one JSON response line from the server.
//
// It is deliberately tiny and strict, because its input comes from outside
// the process: a request is at most MaxMessage bytes, must name a known verb,
// and may carry only the fields that verb uses. Anything else is rejected
// with an error that says what was wrong, and nothing is done.
package ctlproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MaxMessage bounds a request or response line, newline included.
const MaxMessage = 4096

// Verbs.
const (
	VerbReload = "reload"
	VerbStop   = "stop"
	VerbStatus = "status"
)

// MaxTimeout bounds the timeout a client may ask for.
const MaxTimeout = time.Hour

// ErrMalformed wraps every reason a request is refused.
var ErrMalformed = errors.New("ctlproto: malformed request")

// Request is what a client asks.
type Request struct {
	Verb string `json:"verb"`
	// Timeout, in milliseconds, bounds how long the server waits for the
	// outcome on the client's behalf (reload). Zero means the server's
	// default.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// Hurry asks a generation that is still draining to cut its drain
	// short so that this reload can start sooner (reload only).
	Hurry bool `json:"hurry,omitempty"`
}

// Timeout returns the requested timeout.
func (r Request) Timeout() time.Duration { return time.Duration(r.TimeoutMS) * time.Millisecond }

// ParseRequest parses one request line (with or without its newline).
func ParseRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxMessage {
		return r, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMalformed, len(line), MaxMessage)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	if len(bytes.TrimSpace(line)) == 0 {
		return r, fmt.Errorf("%w: empty", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Request{}, fmt.Errorf("%w: trailing data after the JSON object", ErrMalformed)
	}
	switch r.Verb {
	case VerbReload:
	case VerbStop, VerbStatus:
		if r.Hurry {
			return Request{}, fmt.Errorf("%w: hurry applies to reload only", ErrMalformed)
		}
	default:
		return Request{}, fmt.Errorf("%w: unknown verb %q (want reload, stop or status)", ErrMalformed, r.Verb)
	}
	if r.TimeoutMS < 0 || r.Timeout() > MaxTimeout {
		return Request{}, fmt.Errorf("%w: timeout_ms %d out of range (0 to %d)", ErrMalformed, r.TimeoutMS, MaxTimeout.Milliseconds())
	}
	return r, nil
}

// Marshal returns the request as one line.
func (r Request) Marshal() []byte {
	b, _ := json.Marshal(r)
	return append(b, '\n')
}

// Response is what the server answers.
type Response struct {
	OK bool `json:"ok"`
	// Error says why the request failed, in words for an operator.
	Error string `json:"error,omitempty"`
	// Code names the failure for programs: "crashed", "exited",
	// "timed-out", "start-failed", "check-failed", "backoff", "stopped",
	// "upgraded", "not-ready", "timeout", "malformed", "refused", "internal".
	Code string `json:"code,omitempty"`
	// Child describes the new generation that failed, for reload.
	Child *Child `json:"child,omitempty"`
	// Status is the server's state (every verb answers with it).
	Status *Status `json:"status,omitempty"`
}

// Child is the wire form of a failed new generation.
type Child struct {
	PID        int    `json:"pid,omitempty"`
	Reason     string `json:"reason"`
	ExitStatus int    `json:"exit_status,omitempty"`
	Signal     int    `json:"signal,omitempty"`
	TimeoutMS  int64  `json:"timeout_ms,omitempty"`
	Detail     string `json:"detail,omitempty"`
	// Stderr is the last output the new generation wrote.
	Stderr string `json:"stderr,omitempty"`
}

// Status is the state of the serving generation.
type Status struct {
	PID        int    `json:"pid"`
	Generation int    `json:"generation"`
	State      string `json:"state"`
	// LastUpgrade is the outcome of the last upgrade this generation
	// attempted: "" (none), "ok", or the error.
	LastUpgrade   string `json:"last_upgrade,omitempty"`
	LastUpgradeAt string `json:"last_upgrade_at,omitempty"`
	// BackoffUntil, when set, is when upgrades are allowed again after
	// repeated failures.
	BackoffUntil string `json:"backoff_until,omitempty"`
	Failures     int    `json:"consecutive_failures,omitempty"`
}

// ParseResponse parses one response line.
func ParseResponse(line []byte) (Response, error) {
	var r Response
	if len(line) > MaxMessage {
		return r, fmt.Errorf("ctlproto: response of %d bytes exceeds %d", len(line), MaxMessage)
	}
	if err := json.Unmarshal(bytes.TrimSpace(line), &r); err != nil {
		return Response{}, fmt.Errorf("ctlproto: malformed response: %w", err)
	}
	return r, nil
}

// Marshal returns the response as one line, cut to MaxMessage by
// shortening the error text if needed.
func (r Response) Marshal() []byte {
	b, _ := json.Marshal(r)
	if len(b)+1 > MaxMessage && len(r.Error) > 0 {
		cut := len(b) + 1 - MaxMessage + 3
		if cut < len(r.Error) {
			r.Error = r.Error[:len(r.Error)-cut] + "..."
		} else {
			r.Error = ""
		}
		b, _ = json.Marshal(r)
	}
	return append(b, '\n')
}

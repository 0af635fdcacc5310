// Package ctlproto is the wire format of the control socket: one JSON
// request line from the client, one JSON response line from the server,
// a request at most MaxMessage bytes, a response at most MaxResponse.
//
// Requests come from outside the process, so they are parsed strictly: the
// top level must be one object, its keys must be exactly the known ones
// (case-sensitive, each at most once), the verb must be known and every
// field must be one the verb uses. Anything else is refused with an error
// that says what was wrong, and nothing is done. Responses come from a
// server the client has already checked (by its peer credentials), and are
// parsed leniently so that a newer server may add fields.
package ctlproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// MaxMessage bounds a request line, newline included. It bounded
// responses too until they carried the history (MaxResponse).
const MaxMessage = 4096

// MaxResponse bounds a response line, newline included: a status with a
// long history takes more than MaxMessage. Requests stay at MaxMessage,
// since they come from outside the process and are read before anyone
// is trusted.
const MaxResponse = 64 << 10

// Verbs.
const (
	VerbReload = "reload"
	VerbStop   = "stop"
	VerbStatus = "status"
	// VerbRollback starts the previous build again (upgrade.Rollback).
	VerbRollback = "rollback"
)

// MaxTimeout bounds how far ahead of now a request's deadline is honoured:
// a client clamps its deadline to it, and so does the server, so no
// request waits longer than this on either side.
const MaxTimeout = time.Hour

// MaxDeadlineUnixMS is the largest deadline_unix_ms a request may carry
// (9999-12-31T23:59:59.999Z). It exists only to keep the accepted range a
// plain, documented interval; MaxTimeout is what bounds the wait.
const MaxDeadlineUnixMS = 253402300799999

// Codes name the outcome of a request for programs (Response.Code).
const (
	// CodeMalformed: the request could not be read or parsed; nothing was
	// done.
	CodeMalformed = "malformed"
	// CodeRefused: the peer may not use the socket (its credentials); the
	// request was not even read.
	CodeRefused = "refused"
	// CodeExpired: the request's deadline had passed when the server read
	// it (it waited in the backlog); nothing was done.
	CodeExpired = "expired"
	// CodeForwarded: the reload arrived while another upgrade ran and
	// succeeded; send it again, to the new generation.
	CodeForwarded = "forwarded"

	// Reload failures, one per way a new generation fails (Child is set).
	CodeStartFailed  = "start-failed"
	CodeCrashed      = "crashed"
	CodeExited       = "exited"
	CodeTimedOut     = "timed-out"
	CodeCheckFailed  = "check-failed"
	CodeIncompatible = "incompatible"

	// CodeBackoff: upgrades are held back after repeated failures
	// (Backoff is set).
	CodeBackoff = "backoff"
	// CodeStopped: the service is stopping.
	CodeStopped = "stopped"
	// CodeUpgraded: this generation has handed over and is exiting.
	CodeUpgraded = "upgraded"
	// CodeNotReady: this generation is not serving yet.
	CodeNotReady = "not-ready"
	// CodeTimeout: the request's deadline passed while it was carried
	// out (or waited to be).
	CodeTimeout = "timeout"
	// CodeCanceled: the request was given up (its requester went away).
	CodeCanceled = "canceled"
	// CodeNoRollback: a rollback was asked for and there is nothing to
	// roll back to; Error says why.
	CodeNoRollback = "no-rollback"
	// CodeInternal: anything else; Error says what.
	CodeInternal = "internal"
)

// ErrMalformed wraps every reason a request is refused by ParseRequest.
var ErrMalformed = errors.New("ctlproto: malformed request")

// Request is what a client asks.
type Request struct {
	Verb string `json:"verb"`
	// Hurry asks a generation that is still draining to cut its drain
	// short so that this reload can start sooner (reload and rollback).
	Hurry bool `json:"hurry,omitempty"`
	// History asks for the status's history (status only). Without it
	// the history is left out, so that an answer stays within the
	// MaxMessage bytes that clients of earlier releases read.
	History bool `json:"history,omitempty"`
	// DeadlineUnixMS is when the client stops waiting, in milliseconds
	// since the Unix epoch. Client and server are on the same host, so
	// they read the same clock. Required, 1 to MaxDeadlineUnixMS.
	//
	// It is absolute, not a timeout relative to when the server reads the
	// request, so that the time a request spent in the listen backlog
	// counts against it: a request whose client has given up is never
	// carried out later (security review M2). It replaced timeout_ms,
	// whose milliseconds-to-Duration conversion could overflow past the
	// range check (review L4); a deadline is compared as milliseconds and
	// never converted.
	DeadlineUnixMS int64 `json:"deadline_unix_ms,omitempty"`
	// TimeoutMS is how the previous release's clients (wire version 0)
	// bound a reload: relative to when the server reads the request, 0
	// to MaxTimeout, zero meaning the server's default. A request has it
	// or DeadlineUnixMS, never both; one with neither is such a client's
	// stop or status. Those requests are served, without the protection
	// of an absolute deadline, so that a service and the hitless command
	// need not be upgraded together.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// Deadline returns when the request's client stops waiting: its
// DeadlineUnixMS, or, for a client of the previous release, TimeoutMS (or
// MaxTimeout) after now, the moment the request was read.
func (r Request) Deadline(now time.Time) time.Time {
	switch {
	case r.DeadlineUnixMS > 0:
		return time.UnixMilli(r.DeadlineUnixMS)
	case r.TimeoutMS > 0:
		return now.Add(time.Duration(r.TimeoutMS) * time.Millisecond)
	}
	return now.Add(MaxTimeout)
}

// ParseRequest parses one request line (with or without its newline). On
// error the Request is zero and the error wraps ErrMalformed. It does not
// look at the clock: whether the deadline has passed is for the server to
// decide.
func ParseRequest(line []byte) (Request, error) {
	r, err := parseRequest(line)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return r, nil
}

func parseRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxMessage {
		return r, fmt.Errorf("%d bytes, the limit is %d", len(line), MaxMessage)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	if len(bytes.TrimSpace(line)) == 0 {
		return r, errors.New("empty")
	}
	fields, err := members(line)
	if err != nil {
		return r, err
	}
	// Unknown keys first, then the verb, so that the error names the
	// first thing an operator typing JSON by hand would have to fix.
	for key := range fields {
		switch key {
		case "verb", "hurry", "history", "deadline_unix_ms", "timeout_ms":
		default:
			return r, fmt.Errorf("unknown field %q", key)
		}
	}
	raw, ok := fields["verb"]
	if !ok {
		return r, errors.New("no verb")
	}
	if err := decodeValue(raw, &r.Verb); err != nil {
		return r, fmt.Errorf("verb: %v", err)
	}
	switch r.Verb {
	case VerbReload, VerbStop, VerbStatus, VerbRollback:
	default:
		return r, fmt.Errorf("unknown verb %q (want reload, rollback, stop or status)", r.Verb)
	}
	if raw, ok := fields["hurry"]; ok {
		if err := decodeValue(raw, &r.Hurry); err != nil {
			return r, fmt.Errorf("hurry: %v", err)
		}
		if r.Hurry && r.Verb != VerbReload && r.Verb != VerbRollback {
			return r, errors.New("hurry applies to reload and rollback only")
		}
	}
	if raw, ok := fields["history"]; ok {
		if err := decodeValue(raw, &r.History); err != nil {
			return r, fmt.Errorf("history: %v", err)
		}
		if r.History && r.Verb != VerbStatus {
			return r, errors.New("history applies to status only")
		}
	}
	raw, ok = fields["deadline_unix_ms"]
	legacy, isLegacy := fields["timeout_ms"]
	switch {
	case ok && isLegacy:
		return r, errors.New("both deadline_unix_ms and timeout_ms")
	case isLegacy:
		if err := decodeValue(legacy, &r.TimeoutMS); err != nil {
			return r, fmt.Errorf("timeout_ms: %v", err)
		}
		// Compared in milliseconds: converting first could overflow
		// past the check (review L4).
		if r.TimeoutMS < 0 || r.TimeoutMS > MaxTimeout.Milliseconds() {
			return r, fmt.Errorf("timeout_ms %d out of range (0 to %d)", r.TimeoutMS, MaxTimeout.Milliseconds())
		}
		return r, nil
	case !ok:
		return r, nil // a previous release's stop or status
	}
	if err := decodeValue(raw, &r.DeadlineUnixMS); err != nil {
		return r, fmt.Errorf("deadline_unix_ms: %v", err)
	}
	if r.DeadlineUnixMS < 1 || r.DeadlineUnixMS > MaxDeadlineUnixMS {
		return r, fmt.Errorf("deadline_unix_ms %d out of range (1 to %d)", r.DeadlineUnixMS, int64(MaxDeadlineUnixMS))
	}
	return r, nil
}

// members splits one JSON object into its members, by exact key. Decoding
// into a struct would match keys case-insensitively, and decoding into a
// map would let the last of two equal keys win silently, so that
// {"verb":"status","Verb":"stop"} became a stop (review L4); walking the
// tokens sees every key as written.
func members(line []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("want a JSON object, got %v", tok)
	}
	fields := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("want a key, got %v", tok)
		}
		if _, dup := fields[key]; dup {
			return nil, fmt.Errorf("field %q given twice", key)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		fields[key] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return fields, nil
}

// decodeValue decodes one member's value into v, refusing null (which
// json.Unmarshal would take as "leave v unchanged").
func decodeValue(raw json.RawMessage, v any) error {
	if string(bytes.TrimSpace(raw)) == "null" {
		return errors.New("null")
	}
	return json.Unmarshal(raw, v)
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
	// Code names the outcome for programs: one of the Code constants.
	Code string `json:"code,omitempty"`
	// Child describes the new generation that failed (reload, with one of
	// the child failure codes).
	Child *Child `json:"child,omitempty"`
	// Backoff describes the back-off (reload, with CodeBackoff).
	Backoff *Backoff `json:"backoff,omitempty"`
	// Status is the server's state. Every response carries it except a
	// refusal, which tells a stranger nothing.
	Status *Status `json:"status,omitempty"`
}

// Child is the wire form of a failed new generation.
type Child struct {
	PID        int `json:"pid,omitempty"`
	ExitStatus int `json:"exit_status,omitempty"`
	Signal     int `json:"signal,omitempty"`
	// TimeoutNS is the readiness timeout in nanoseconds (exact, unlike
	// milliseconds, so that the error reads the same on both sides).
	TimeoutNS int64 `json:"timeout_ns,omitempty"`
	// Cause is the text of the underlying error, if any.
	Cause string `json:"cause,omitempty"`
	// Stderr is the last output the new generation wrote.
	Stderr string `json:"stderr,omitempty"`
	// Reason, Detail and TimeoutMS repeat the response's Code, Cause and
	// TimeoutNS for clients of the previous release (wire version 0),
	// which read these.
	Reason    string `json:"reason,omitempty"`
	Detail    string `json:"detail,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}

// Backoff is the wire form of a back-off refusal.
type Backoff struct {
	// Until is when upgrades are allowed again (RFC 3339).
	Until    string `json:"until"`
	Failures int    `json:"failures"`
	// LastCode and LastChild describe the last failure when it was a
	// child failure; otherwise Last is its text.
	LastCode  string `json:"last_code,omitempty"`
	LastChild *Child `json:"last_child,omitempty"`
	Last      string `json:"last,omitempty"`
}

// Status is the state of the serving generation. It is also what
// `hitless status -json` prints: snake_case keys, RFC 3339 times, and every
// field that is zero left out.
type Status struct {
	PID        int    `json:"pid,omitempty"`
	Generation int    `json:"generation,omitempty"`
	State      string `json:"state,omitempty"`
	// LastUpgrade is the outcome of the last upgrade this generation
	// attempted: absent (none), "ok", or what failed.
	LastUpgrade   string `json:"last_upgrade,omitempty"`
	LastUpgradeAt string `json:"last_upgrade_at,omitempty"`
	// Failures counts failed upgrades in a row.
	Failures int `json:"consecutive_failures,omitempty"`
	// BackoffUntil, when set, is when upgrades are allowed again after
	// repeated failures.
	BackoffUntil string `json:"backoff_until,omitempty"`
	// Version is the build the generation runs.
	Version string `json:"version,omitempty"`
	// RollbackTo is the build a rollback would start; absent when there
	// is none.
	RollbackTo string `json:"rollback_to,omitempty"`
	// History is the service's last upgrades, oldest first; the last may
	// be in progress.
	History []Upgrade `json:"history,omitempty"`
	// Totals counts upgrades and drains since the service started.
	Totals *Totals `json:"totals,omitempty"`
}

// Upgrade is the wire form of one entry of the history.
type Upgrade struct {
	Kind      string   `json:"kind,omitempty"`
	Requested string   `json:"requested,omitempty"`
	Started   string   `json:"started,omitempty"`
	Finished  string   `json:"finished,omitempty"`
	From      *Process `json:"from,omitempty"`
	To        *Process `json:"to,omitempty"`
	Outcome   string   `json:"outcome,omitempty"`
	Reason    string   `json:"reason,omitempty"`
	Error     string   `json:"error,omitempty"`
	// TookNS and DrainNS are durations in nanoseconds, like
	// Child.TimeoutNS.
	TookNS     int64  `json:"took_ns,omitempty"`
	DrainedAt  string `json:"drained_at,omitempty"`
	DrainNS    int64  `json:"drain_ns,omitempty"`
	DrainEnded int    `json:"drain_ended,omitempty"`
	DrainCut   int    `json:"drain_cut,omitempty"`
}

// Process is the wire form of a generation named in the history.
type Process struct {
	PID        int    `json:"pid,omitempty"`
	Generation int    `json:"generation,omitempty"`
	Version    string `json:"version,omitempty"`
}

// Totals is the wire form of the counts across generations.
type Totals struct {
	Upgrades         int64            `json:"upgrades,omitempty"`
	Failures         int64            `json:"failures,omitempty"`
	FailuresByReason map[string]int64 `json:"failures_by_reason,omitempty"`
	TakeBacks        int64            `json:"take_backs,omitempty"`
	DrainEnded       int64            `json:"drain_ended,omitempty"`
	DrainCut         int64            `json:"drain_cut,omitempty"`
}

// ParseResponse parses one response line.
func ParseResponse(line []byte) (Response, error) {
	var r Response
	if len(line) > MaxResponse {
		return r, fmt.Errorf("ctlproto: response of %d bytes exceeds %d", len(line), MaxResponse)
	}
	if err := json.Unmarshal(bytes.TrimSpace(line), &r); err != nil {
		return Response{}, fmt.Errorf("ctlproto: malformed response: %w", err)
	}
	return r, nil
}

// Marshal returns the response as one line of at most MaxResponse bytes.
// Without the status's history it takes at most MaxMessage, as it always
// has, shortening the texts that can be long if needed: first the
// status's last_upgrade and the child's stderr, then the error (which, for
// a child failure or a back-off, repeats the structured fields), then the
// rest. The history then takes what is left of MaxResponse, giving up its
// oldest entries if needed.
func (r Response) Marshal() []byte {
	var history []Upgrade
	if r.Status != nil {
		st := *r.Status
		r.Status = &st
		history, st.History = st.History, nil
	}
	for _, text := range r.cuttable() {
		b, _ := json.Marshal(r)
		over := len(b) + 1 - MaxMessage
		if over <= 0 {
			break
		}
		*text = shorten(*text, over)
	}
	if len(history) > 0 {
		r.Status.History = history
	}
	b, _ := json.Marshal(r)
	for len(b)+1 > MaxResponse && len(r.Status.History) > 0 {
		r.Status.History = r.Status.History[1:]
		b, _ = json.Marshal(r)
	}
	return append(b, '\n')
}

// cuttable returns the free texts of r, in the order they are given up.
// What the pointers lead to is copied first, so that shortening r's texts
// does not write through the caller's pointers.
func (r *Response) cuttable() []*string {
	var first, last []*string
	if r.Status != nil {
		st := *r.Status
		r.Status = &st
		first = append(first, &st.LastUpgrade)
	}
	if r.Child != nil {
		c := *r.Child
		r.Child = &c
		first = append(first, &c.Stderr)
		last = append(last, &c.Cause)
	}
	if r.Backoff != nil {
		b := *r.Backoff
		r.Backoff = &b
		if b.LastChild != nil {
			c := *b.LastChild
			b.LastChild = &c
			first = append(first, &c.Stderr)
			last = append(last, &c.Cause)
		}
		last = append(last, &b.Last)
	}
	return append(append(first, &r.Error), last...)
}

// shorten cuts at least over encoded bytes off s, ending it with "..." when
// anything is left. JSON escapes can make a byte of s take up to six bytes
// on the wire, so it cuts by the encoded size, rune by rune.
func shorten(s string, over int) string {
	runes := []rune(s)
	for len(runes) > 0 && over > -3 {
		last := string(runes[len(runes)-1])
		b, _ := json.Marshal(last)
		over -= len(b) - 2
		runes = runes[:len(runes)-1]
	}
	if len(runes) == 0 {
		return ""
	}
	return string(runes) + "..."
}

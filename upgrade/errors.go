package upgrade

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Errors callers can match with errors.Is.
var (
	// ErrNotSupported is returned by New on platforms without fd passing
	// between processes (Windows).
	ErrNotSupported = errors.New("upgrade: hitless upgrades are not supported on this platform")
	// ErrSingleton is returned by New when an Upgrader already exists in
	// this process: listening sockets are handed to a new generation per
	// process, so there can be only one.
	ErrSingleton = errors.New("upgrade: only one Upgrader may exist per process")
	// ErrNotReady is returned by Upgrade before Ready has succeeded: a
	// generation that is not serving yet cannot hand over.
	ErrNotReady = errors.New("upgrade: this generation is not ready yet")
	// ErrStopped is returned by Upgrade after Stop.
	ErrStopped = errors.New("upgrade: stopped")
	// ErrUpgraded is returned by Upgrade once an upgrade has succeeded:
	// this generation is draining and a newer one serves.
	ErrUpgraded = errors.New("upgrade: already upgraded, this generation is exiting")
	// ErrChildFailed matches every *ChildError: the new generation did not
	// become ready, and this one goes on serving.
	ErrChildFailed = errors.New("upgrade: the new generation failed")
	// ErrBackoff matches every *BackoffError.
	ErrBackoff = errors.New("upgrade: backing off after repeated failures")
	// ErrForwarded is returned for a request that arrived while another
	// upgrade ran and succeeded: this generation is exiting, and the
	// request must be carried out by the new one (Client.Reload re-sends
	// it there by itself).
	ErrForwarded = errors.New("upgrade: passed on to the new generation")
)

// BackoffError is returned while upgrade requests are refused after
// repeated failed upgrades (Options.CrashLoopAfter).
type BackoffError struct {
	Until    time.Time
	Failures int
	// Last is the last failure, in words.
	Last string
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("upgrade: refused: %d upgrades failed in a row, next attempt allowed at %s (last: %s)",
		e.Failures, e.Until.Format(time.RFC3339), e.Last)
}

// Is makes errors.Is(err, ErrBackoff) true.
func (e *BackoffError) Is(target error) bool { return target == ErrBackoff }

type forwardedError struct{ pid int }

func (e *forwardedError) Error() string {
	if e.pid == 0 {
		return ErrForwarded.Error()
	}
	return fmt.Sprintf("%v (pid %d)", ErrForwarded, e.pid)
}

func (e *forwardedError) Is(target error) bool { return target == ErrForwarded }

// Reason says how a new generation failed.
type Reason int

const (
	// StartFailed: the new binary could not be started (missing, not
	// executable, fork failed).
	StartFailed Reason = iota + 1
	// Crashed: it was killed by a signal before it was ready.
	Crashed
	// Exited: it exited before it was ready.
	Exited
	// TimedOut: it did not become ready within Options.UpgradeTimeout and
	// was killed.
	TimedOut
	// CheckFailed: Options.Preflight rejected it; it was not started.
	CheckFailed
)

func (r Reason) String() string {
	switch r {
	case StartFailed:
		return "start failed"
	case Crashed:
		return "crashed before ready"
	case Exited:
		return "exited before ready"
	case TimedOut:
		return "not ready in time"
	case CheckFailed:
		return "pre-flight check failed"
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// ChildError says why a new generation did not take over. When Upgrade
// returns one, the new process is gone and this generation serves on as
// before.
type ChildError struct {
	Reason Reason
	// PID of the new process; zero when it could not be started.
	PID int
	// ExitStatus is the exit status when Reason is Exited.
	ExitStatus int
	// Signal is the signal that killed it when Reason is Crashed.
	Signal syscall.Signal
	// Timeout is the readiness timeout when Reason is TimedOut.
	Timeout time.Duration
	// Detail is the underlying cause when Reason is StartFailed or
	// CheckFailed.
	Detail string
	// Stderr holds the last lines the new generation wrote to its stderr
	// before it failed (everything it wrote also went to the service's
	// own stderr).
	Stderr string
}

func (e *ChildError) Error() string {
	msg := e.message()
	if e.Stderr != "" {
		msg += "; its last output: " + strings.ReplaceAll(e.Stderr, "\n", " | ")
	}
	return msg
}

func (e *ChildError) message() string {
	switch e.Reason {
	case StartFailed:
		return "upgrade: could not start the new generation: " + e.Detail
	case Crashed:
		return fmt.Sprintf("upgrade: new generation (pid %d) crashed before it was ready: killed by signal %s", e.PID, signalName(e.Signal))
	case Exited:
		return fmt.Sprintf("upgrade: new generation (pid %d) exited with status %d before it was ready", e.PID, e.ExitStatus)
	case TimedOut:
		return fmt.Sprintf("upgrade: new generation (pid %d) was not ready within %v and was killed", e.PID, e.Timeout)
	case CheckFailed:
		return "upgrade: pre-flight check of the new binary failed: " + e.Detail
	}
	return fmt.Sprintf("upgrade: new generation (pid %d) failed: %v", e.PID, e.Reason)
}

// Is makes errors.Is(err, ErrChildFailed) true for every *ChildError.
func (e *ChildError) Is(target error) bool { return target == ErrChildFailed }

// tableflip reports failures as plain strings (its errors are built with
// %s), so they are recognised here by their text and turned into typed
// errors. The texts are those of tableflip v1.2.3; the process-level tests
// produce each of them with a real child, so a tableflip release that
// rewords one fails the tests instead of degrading an error silently.
var (
	childExited   = regexp.MustCompile(`^child pid=(\d+) exited(?:: (.*))?$`)
	childTimedOut = regexp.MustCompile(`^new child pid=(\d+) timed out$`)
	exitStatus    = regexp.MustCompile(`^exit status (\d+)$`)
)

// classify turns an error from tableflip's Upgrade into ours.
func classify(err error, timeout time.Duration) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch msg {
	case "terminating":
		return ErrStopped
	case "already upgraded":
		return ErrUpgraded
	case "process is not ready yet":
		return ErrNotReady
	}
	if rest, ok := strings.CutPrefix(msg, "can't start child: "); ok {
		return &ChildError{Reason: StartFailed, Detail: rest}
	}
	if m := childTimedOut.FindStringSubmatch(msg); m != nil {
		pid, _ := strconv.Atoi(m[1])
		return &ChildError{Reason: TimedOut, PID: pid, Timeout: timeout}
	}
	if m := childExited.FindStringSubmatch(msg); m != nil {
		pid, _ := strconv.Atoi(m[1])
		status := m[2]
		if status == "" {
			return &ChildError{Reason: Exited, PID: pid}
		}
		if s := exitStatus.FindStringSubmatch(status); s != nil {
			code, _ := strconv.Atoi(s[1])
			return &ChildError{Reason: Exited, PID: pid, ExitStatus: code}
		}
		if name, ok := strings.CutPrefix(status, "signal: "); ok {
			return &ChildError{Reason: Crashed, PID: pid, Signal: parseSignal(name)}
		}
	}
	return fmt.Errorf("upgrade: %w", err)
}

// parseSignal maps the text os.ProcessState prints for a signal ("killed",
// "segmentation fault (core dumped)") back to the signal.
func parseSignal(text string) syscall.Signal {
	text = strings.TrimSuffix(text, " (core dumped)")
	for s := syscall.Signal(1); s < 65; s++ {
		if s.String() == text {
			return s
		}
	}
	return 0
}

package outside

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// RequireEnv is the environment variable that turns a missing tool from a
// skip into a failure in [Require]: CI sets it to "1" after installing the
// tools, so that a broken installation cannot pass as a skipped test.
const RequireEnv = "HITLESS_REQUIRE_OUTSIDE"

// Tool names a load tool by the name of its executable.
type Tool string

// The tools this package runs.
const (
	Wrk     Tool = "wrk"
	AB      Tool = "ab"
	H2load  Tool = "h2load"
	Dnsperf Tool = "dnsperf"
)

// Package returns the Debian (and Ubuntu) package that installs t.
func (t Tool) Package() string {
	switch t {
	case Wrk:
		return "wrk"
	case AB:
		return "apache2-utils"
	case H2load:
		return "nghttp2-client"
	case Dnsperf:
		return "dnsperf"
	}
	return "?"
}

// Path looks t up in PATH. When it is missing, the error wraps
// [exec.ErrNotFound] and names the package to install.
func (t Tool) Path() (string, error) {
	p, err := exec.LookPath(string(t))
	if err != nil {
		return "", fmt.Errorf("outside: %s is not installed (apt-get install %s): %w", t, t.Package(), err)
	}
	return p, nil
}

// TB is the part of testing.TB that [Require] uses.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Require returns the path of tool's executable. If tool is not installed
// it skips t, naming the package to install, or fails t when the
// environment variable [RequireEnv] is "1".
func Require(t TB, tool Tool) string {
	t.Helper()
	p, err := tool.Path()
	if err == nil {
		return p
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%v (%s=1 requires it)", err, RequireEnv)
	} else {
		t.Skipf("%v (set %s=1 to fail instead of skipping)", err, RequireEnv)
	}
	return ""
}

// ParseError says that a tool's output did not have the shape this package
// expects of it, and quotes the output.
type ParseError struct {
	Tool   Tool
	Reason string // what was missing or malformed
	Output []byte // the whole output; Error quotes it truncated
}

// maxQuoted bounds how much of an output an error message quotes: the
// summaries sit at the end, the banner and the command's echo at the start,
// so we keep both ends.
const maxQuoted = 2048

func (e *ParseError) Error() string {
	return fmt.Sprintf("outside: cannot parse the output of %s: %s; output: %s", e.Tool, e.Reason, quote(e.Output))
}

// quote quotes b, keeping only its first and last maxQuoted/2 bytes if it
// is longer than maxQuoted.
func quote(b []byte) string {
	if len(b) <= maxQuoted {
		return fmt.Sprintf("%q", b)
	}
	h := maxQuoted / 2
	return fmt.Sprintf("%q …(%d bytes left out)… %q", b[:h], len(b)-2*h, b[len(b)-h:])
}

func parseErr(tool Tool, out []byte, format string, args ...any) error {
	return &ParseError{Tool: tool, Reason: fmt.Sprintf(format, args...), Output: out}
}

// waitDelay bounds how long a run waits, after the tool exited or was
// killed, for its output pipes to close: none of these tools starts
// children that could hold them, so this only matters if one somehow does.
const waitDelay = time.Second

// run runs tool with args and returns its stdout and stderr. A tool that
// exits non-zero, or is killed because ctx ended, is an error that quotes
// both.
func run(ctx context.Context, tool Tool, args []string) (stdout, stderr []byte, err error) {
	path, err := tool.Path()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	// The C locale keeps the decimal point a point, whatever the
	// machine's locale says, should a tool ever call setlocale.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = waitDelay
	err = cmd.Run()
	line := string(tool) + " " + strings.Join(args, " ")
	switch {
	case ctx.Err() != nil:
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("outside: %s: stopped by its context: %w; stdout: %s; stderr: %s",
			line, context.Cause(ctx), quote(out.Bytes()), quote(errOut.Bytes()))
	case err != nil:
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("outside: %s: %w; stdout: %s; stderr: %s",
			line, err, quote(out.Bytes()), quote(errOut.Bytes()))
	}
	return out.Bytes(), errOut.Bytes(), nil
}

// Timed is the result of one run and when it ran.
type Timed[R any] struct {
	Result     R
	Start, End time.Time
}

// Repeat calls run again and again, each call starting as soon as the one
// before returned, until stop is closed; the call under way then is let
// finish, since a tool killed in the middle of a run prints no summary. It
// returns every completed run in order. It returns early, with the runs
// completed so far, when a run returns an error (which it wraps) or ctx
// ends (run receives ctx, so a tool under way is killed).
//
// Back-to-back runs of a few seconds each, rather than one long run, let a
// test see which run crossed which event and keep every wait bounded.
func Repeat[R any](ctx context.Context, stop <-chan struct{}, run func(context.Context) (R, error)) ([]Timed[R], error) {
	var runs []Timed[R]
	for i := 1; ; i++ {
		select {
		case <-stop:
			return runs, nil
		case <-ctx.Done():
			return runs, fmt.Errorf("outside: before run %d: %w", i, context.Cause(ctx))
		default:
		}
		start := time.Now()
		r, err := run(ctx)
		if err != nil {
			return runs, fmt.Errorf("outside: run %d: %w", i, err)
		}
		runs = append(runs, Timed[R]{Result: r, Start: start, End: time.Now()})
	}
}

// seen records which labelled lines a parser met, so that a duplicate (two
// outputs run together) is an error and a missing one can be named.
type seen map[string]bool

// once marks label seen and reports false if it was already.
func (s seen) once(label string) bool {
	if s[label] {
		return false
	}
	s[label] = true
	return true
}

// missing returns the first of labels not seen, or "".
func (s seen) missing(labels ...string) string {
	for _, l := range labels {
		if !s[l] {
			return l
		}
	}
	return ""
}

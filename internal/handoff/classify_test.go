package handoff

// Table tests of classify and classifyNew on literal texts: cheap, and
// they document the format. That the texts are tableflip's, still, is what
// contract_test.go checks.

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/hitlessgo/hitless/control"
)

func TestClassify(t *testing.T) {
	const timeout = 42 * time.Second
	sentinels := []struct {
		text string
		want error
	}{
		{"terminating", control.ErrStopped},
		{"already upgraded", control.ErrUpgraded},
		{"process is not ready yet", control.ErrNotReady},
		{"parent hasn't exited", errParentNotExited},
		{"upgrade in progress", errInProgress},
	}
	for _, c := range sentinels {
		t.Run(c.text, func(t *testing.T) {
			if got := classify(errors.New(c.text), timeout); got != c.want {
				t.Errorf("classify(%q) = %v, want %v", c.text, got, c.want)
			}
		})
	}

	children := []struct {
		text string
		want control.ChildError
	}{
		{`can't start child: can't start process /srv/app: exec: "/srv/app": stat /srv/app: no such file or directory`,
			control.ChildError{Reason: control.ReasonStartFailed,
				Err: errors.New(`can't start process /srv/app: exec: "/srv/app": stat /srv/app: no such file or directory`)}},
		{"can't start child: pipe failed: too many open files",
			control.ChildError{Reason: control.ReasonStartFailed, Err: errors.New("pipe failed: too many open files")}},
		{"can't start child: can't start process /srv/app: fork/exec: resource temporarily unavailable",
			control.ChildError{Reason: control.ReasonStartFailed, Err: errors.New("can't start process /srv/app: fork/exec: resource temporarily unavailable")}},
		{"child pid=4242 exited",
			control.ChildError{Reason: control.ReasonExited, PID: 4242}},
		{"child pid=4242 exited: exit status 3",
			control.ChildError{Reason: control.ReasonExited, PID: 4242, ExitStatus: 3}},
		{"child pid=4242 exited: exit status 255",
			control.ChildError{Reason: control.ReasonExited, PID: 4242, ExitStatus: 255}},
		{"child pid=4242 exited: signal: " + syscall.SIGKILL.String(),
			control.ChildError{Reason: control.ReasonCrashed, PID: 4242, Signal: syscall.SIGKILL}},
		{"child pid=4242 exited: signal: " + syscall.SIGSEGV.String() + " (core dumped)",
			control.ChildError{Reason: control.ReasonCrashed, PID: 4242, Signal: syscall.SIGSEGV}},
		{"child pid=4242 exited: signal: " + syscall.SIGABRT.String(),
			control.ChildError{Reason: control.ReasonCrashed, PID: 4242, Signal: syscall.SIGABRT}},
		// A signal without a description prints as "signal N".
		{"child pid=4242 exited: signal: " + syscall.Signal(99).String(),
			control.ChildError{Reason: control.ReasonCrashed, PID: 4242, Signal: 99}},
		{"new child pid=4242 timed out",
			control.ChildError{Reason: control.ReasonTimedOut, PID: 4242, Timeout: timeout}},
	}
	for _, c := range children {
		t.Run(c.text, func(t *testing.T) {
			got := classify(errors.New(c.text), timeout)
			var ce *control.ChildError
			if !errors.As(got, &ce) {
				t.Fatalf("classify(%q) = %v (%T), want a *control.ChildError", c.text, got, got)
			}
			if !errors.Is(got, control.ErrChildFailed) {
				t.Errorf("classify(%q) does not match control.ErrChildFailed", c.text)
			}
			if ce.Reason != c.want.Reason || ce.PID != c.want.PID || ce.ExitStatus != c.want.ExitStatus ||
				ce.Signal != c.want.Signal || ce.Timeout != c.want.Timeout || fmt.Sprint(ce.Err) != fmt.Sprint(c.want.Err) {
				t.Errorf("classify(%q) =\n\t%s\nwant\n\t%s", c.text, childFields(ce), childFields(&c.want))
			}
		})
	}

	unrecognised := []string{
		"Terminating",
		"terminating.",
		" already upgraded",
		"can't start child: ",
		"child pid=4242 exited: waitid: no child processes", // a Wait that failed: no exit status to report
		"child pid=4242 exited: already waited",
		"child pid=4242 exited: signal: no such signal",
		"child pid=4242 exited: exit status -1",
		"child pid=0 exited",
		"child pid=x exited",
		"child 4242 exited",
		"new child pid=4242 timed out after 1m0s",
		"child pid=4242 timed out",
		"upgrade refused: busy",
	}
	for _, text := range unrecognised {
		t.Run("unrecognised/"+text, func(t *testing.T) {
			orig := errors.New(text)
			got := classify(orig, timeout)
			expectUnrecognised(t, got, orig)
			if ce := (*control.ChildError)(nil); errors.As(got, &ce) {
				t.Errorf("classify(%q) is a *control.ChildError: %v", text, got)
			}
			if errors.Is(got, control.ErrChildFailed) {
				t.Errorf("classify(%q) matches control.ErrChildFailed", text)
			}
		})
	}

	t.Run("nil", func(t *testing.T) {
		if got := classify(nil, timeout); got != nil {
			t.Errorf("classify(nil) = %v", got)
		}
	})
}

func TestClassifyNew(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"nil", nil, nil},
		{"not supported", fmt.Errorf("%w", tableflip.ErrNotSupported), ErrNotSupported},
		{"singleton", errors.New("tableflip: only a single Upgrader allowed"), ErrSingleton},
		{"marker without descriptors", errors.New("can't decode names from parent process: EOF"), errMarkerWithoutFds},
		{"marker without descriptors, fd 4 closed", errors.New("can't decode names from parent process: read read: bad file descriptor"), errMarkerWithoutFds},
		{"no working directory", errors.New("couldn't determine initial working directory"), errNoWorkingDir},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := classifyNew(c.err)
			if c.want == nil {
				if got != nil {
					t.Errorf("classifyNew(%v) = %v, want nil", c.err, got)
				}
				return
			}
			if !errors.Is(got, c.want) {
				t.Errorf("classifyNew(%v) = %v, want %v", c.err, got, c.want)
			}
			if errors.Is(got, errUnrecognised) {
				t.Errorf("classifyNew(%v) = %v: marked unrecognised", c.err, got)
			}
			if got != c.want && !errors.Is(got, c.err) {
				t.Errorf("classifyNew(%v) = %v: drops tableflip's error, with its detail", c.err, got)
			}
			if !strings.HasPrefix(got.Error(), "handoff: ") {
				t.Errorf("classifyNew(%v) = %q: no package prefix", c.err, got)
			}
		})
	}
	t.Run("marker without descriptors says so", func(t *testing.T) {
		got := classifyNew(errors.New("can't decode names from parent process: EOF")).Error()
		for _, want := range []string{tableflipMarker, "descriptors", "EOF"} {
			if !strings.Contains(got, want) {
				t.Errorf("%q does not mention %q", got, want)
			}
		}
	})
	for _, text := range []string{
		"tableflip: only one Upgrader allowed",
		"can't decode names from parent: EOF",
		"tableflip: platform does not support graceful restart", // the text without the sentinel
	} {
		t.Run("unrecognised/"+text, func(t *testing.T) {
			orig := errors.New(text)
			expectUnrecognised(t, classifyNew(orig), orig)
		})
	}
}

// expectUnrecognised checks that got marks orig as an unrecognised
// tableflip error, and keeps it, text and all.
func expectUnrecognised(t *testing.T, got, orig error) {
	t.Helper()
	if !errors.Is(got, errUnrecognised) {
		t.Errorf("%q classified as %v, want it marked unrecognised", orig, got)
	}
	if !errors.Is(got, orig) {
		t.Errorf("%q classified as %v, which does not wrap it", orig, got)
	}
	if !strings.Contains(got.Error(), orig.Error()) || !strings.Contains(got.Error(), "unrecognised tableflip error") {
		t.Errorf("%q classified as %q, which does not say it is unrecognised and quote it", orig, got)
	}
	for _, s := range []error{control.ErrStopped, control.ErrUpgraded, control.ErrNotReady, errParentNotExited, errInProgress, ErrSingleton, ErrNotSupported} {
		if errors.Is(got, s) {
			t.Errorf("%q classified as %v, which matches %v", orig, got, s)
		}
	}
}

// childFields shows what classify compares of a ChildError.
func childFields(e *control.ChildError) string {
	return fmt.Sprintf("Reason %v, PID %d, ExitStatus %d, Signal %d (%v), Timeout %v, Err %v",
		e.Reason, e.PID, e.ExitStatus, int(e.Signal), e.Signal, e.Timeout, e.Err)
}

//go:build unix

package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/proc"
)

var isLinux = runtime.GOOS == "linux"

// TestErrorsSurviveTheWire sends every kind of outcome a Handler can
// return through a real socket and checks that Client.Reload returns the
// same: same type, same fields, same errors.Is answers, same text.
func TestErrorsSurviveTheWire(t *testing.T) {
	zone := time.FixedZone("X", 5*3600+1800)
	until := time.Date(2026, 12, 1, 10, 30, 15, 500_000_000, zone)
	child := func(r Reason) *ChildError {
		return &ChildError{Reason: r, PID: 4242, ExitStatus: 3, Signal: syscall.Signal(11),
			Timeout: 1500 * time.Millisecond, Stderr: "line one\npanic: bad config",
			Err: fmt.Errorf("wrapped: %w", os.ErrNotExist)}
	}
	sentinels := []error{ErrNotReady, ErrStopped, ErrUpgraded, ErrChildFailed, ErrBackoff, context.DeadlineExceeded, context.Canceled}
	type tc struct {
		name string
		err  error
		is   []error
	}
	var cases []tc
	for r := range reasonCodes {
		cases = append(cases, tc{"child " + r.String(), child(r), []error{ErrChildFailed}})
	}
	cases = append(cases,
		tc{"ok", nil, nil},
		tc{"child without cause or output", &ChildError{Reason: ReasonTimedOut, PID: 9, Timeout: time.Second}, []error{ErrChildFailed}},
		tc{"backoff after a child failure", &BackoffError{Until: until, Failures: 3, Last: child(ReasonExited)}, []error{ErrBackoff, ErrChildFailed}},
		tc{"backoff after another failure", &BackoffError{Until: until, Failures: 4, Last: errors.New("fork: resource temporarily unavailable")}, []error{ErrBackoff}},
		tc{"backoff without last", &BackoffError{Until: until, Failures: 5}, []error{ErrBackoff}},
		tc{"wrapped backoff", fmt.Errorf("upgrade: %w", &BackoffError{Until: until, Failures: 3, Last: child(ReasonCrashed)}), []error{ErrBackoff, ErrChildFailed}},
		tc{"wrapped child", fmt.Errorf("upgrade: %w", child(ReasonCrashed)), []error{ErrChildFailed}},
		tc{"stopped", ErrStopped, []error{ErrStopped}},
		tc{"stopped, wrapped", fmt.Errorf("upgrade: shutting down: %w", ErrStopped), []error{ErrStopped}},
		tc{"upgraded", ErrUpgraded, []error{ErrUpgraded}},
		tc{"not ready", ErrNotReady, []error{ErrNotReady}},
		tc{"bare backoff sentinel", ErrBackoff, []error{ErrBackoff}},
		tc{"deadline", fmt.Errorf("waiting for the previous generation: %w", context.DeadlineExceeded), []error{context.DeadlineExceeded}},
		tc{"internal", errors.New("disk on fire"), nil},
	)
	h := &fakeHandler{}
	ts := serve(t, h, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.mu.Lock()
			h.reload = func(context.Context, bool) error { return c.err }
			h.mu.Unlock()
			got := ts.client().Reload(timeout(t, 10*time.Second))
			if c.err == nil {
				if got != nil {
					t.Fatalf("Reload = %v; want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatal("Reload = nil")
			}
			for _, s := range sentinels {
				want := errors.Is(c.err, s)
				if errors.Is(got, s) != want {
					t.Errorf("errors.Is(got, %v) = %v; the handler's error says %v", s, !want, want)
				}
			}
			for _, s := range c.is {
				if !errors.Is(got, s) {
					t.Errorf("errors.Is(got, %v) = false", s)
				}
			}
			if errors.Is(got, ErrForwarded) {
				t.Error("Reload returned ErrForwarded")
			}
			var wantCE, gotCE *ChildError
			var wantBE, gotBE *BackoffError
			switch {
			case errors.As(c.err, &wantBE):
				if !errors.As(got, &gotBE) {
					t.Fatalf("got %T (%v); want a *BackoffError", got, got)
				}
				if !gotBE.Until.Equal(wantBE.Until) || gotBE.Failures != wantBE.Failures {
					t.Errorf("got until %v, %d failures; want %v, %d", gotBE.Until, gotBE.Failures, wantBE.Until, wantBE.Failures)
				}
				if gotBE.Error() != wantBE.Error() {
					t.Errorf("text:\n got %s\nwant %s", gotBE.Error(), wantBE.Error())
				}
				if (gotBE.Last == nil) != (wantBE.Last == nil) {
					t.Fatalf("Last = %v; want %v", gotBE.Last, wantBE.Last)
				}
				if errors.As(wantBE.Last, &wantCE) {
					if !errors.As(gotBE.Last, &gotCE) {
						t.Fatalf("Last is %T; want a *ChildError", gotBE.Last)
					}
					sameChild(t, gotCE, wantCE)
				}
			case errors.As(c.err, &wantCE):
				if !errors.As(got, &gotCE) {
					t.Fatalf("got %T (%v); want a *ChildError", got, got)
				}
				sameChild(t, gotCE, wantCE)
			case len(c.is) > 0:
				if got.Error() != c.err.Error() {
					t.Errorf("text %q; want %q", got.Error(), c.err.Error())
				}
			default:
				if !strings.Contains(got.Error(), c.err.Error()) {
					t.Errorf("text %q; want it to say %q", got.Error(), c.err.Error())
				}
			}
		})
	}
}

func sameChild(t *testing.T, got, want *ChildError) {
	t.Helper()
	if got.Reason != want.Reason || got.PID != want.PID || got.ExitStatus != want.ExitStatus ||
		got.Signal != want.Signal || got.Timeout != want.Timeout || got.Stderr != want.Stderr {
		t.Errorf("got  %+v\nwant %+v", *got, *want)
	}
	switch {
	case want.Err == nil && got.Err != nil:
		t.Errorf("Err = %v; want nil", got.Err)
	case want.Err != nil && (got.Err == nil || got.Err.Error() != want.Err.Error()):
		t.Errorf("Err = %v; want the text %q", got.Err, want.Err.Error())
	}
	if got.Error() != want.Error() {
		t.Errorf("text:\n got %s\nwant %s", got.Error(), want.Error())
	}
}

func TestReloadIsForwardedToTheNewGeneration(t *testing.T) {
	h := &fakeHandler{}
	n := 0
	h.reload = func(context.Context, bool) error {
		if n++; n <= 2 {
			return fmt.Errorf("upgrade: %w (pid 77)", ErrForwarded)
		}
		return nil
	}
	ts := serve(t, h, nil)
	if err := ts.client().Reload(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Reload = %v", err)
	}
	if r, _, _ := h.counts(); r != 3 {
		t.Fatalf("%d requests reached the service; want 3 (2 forwarded)", r)
	}

	h.mu.Lock()
	h.reload = func(context.Context, bool) error { return ErrForwarded }
	h.reloads = 0
	h.mu.Unlock()
	err := ts.client().Reload(timeout(t, 10*time.Second))
	if err == nil || errors.Is(err, ErrForwarded) || !strings.Contains(err.Error(), "passed on") {
		t.Fatalf("Reload, always forwarded = %v; want a plain error saying so", err)
	}
	if r, _, _ := h.counts(); r != 1+maxForwards {
		t.Fatalf("%d requests sent; want %d", r, 1+maxForwards)
	}
}

func TestReloadCarriesHurryAndTheDeadline(t *testing.T) {
	h := &fakeHandler{}
	deadlines := make(chan time.Time, 1)
	h.reload = func(ctx context.Context, hurry bool) error {
		d, _ := ctx.Deadline()
		deadlines <- d
		return nil
	}
	ts := serve(t, h, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	if err := ts.client().Reload(ctx, Hurry()); err != nil {
		t.Fatal(err)
	}
	if got := <-deadlines; got.After(want) || want.Sub(got) > time.Millisecond {
		t.Errorf("the handler's deadline is %v; the client's %v", got, want)
	}
	if err := ts.client().Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := time.Until(<-deadlines); got < 59*time.Minute || got > time.Hour {
		t.Errorf("without a deadline in ctx, the handler's deadline is %v away; want an hour", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.hurries) != 2 || !h.hurries[0] || h.hurries[1] {
		t.Errorf("hurry as the handler saw it: %v; want [true false]", h.hurries)
	}
}

func TestStatus(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 0, 0, 123_000_000, time.UTC)
	want := Status{PID: 42, Generation: 3, State: StateServing, LastUpgrade: "ok", LastUpgradeAt: at,
		Failures: 2, BackoffUntil: time.Now().Add(time.Hour).Truncate(time.Millisecond)}
	h := &fakeHandler{status: want}
	ts := serve(t, h, nil)
	got, err := ts.client().Status(timeout(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != want.PID || got.Generation != want.Generation || got.State != want.State || got.LastUpgrade != want.LastUpgrade ||
		!got.LastUpgradeAt.Equal(want.LastUpgradeAt) || got.Failures != want.Failures || !got.BackoffUntil.Equal(want.BackoffUntil) {
		t.Fatalf("Status =\n %+v\nwant\n %+v", got, want)
	}

	// A back-off that has lapsed is not reported.
	h.mu.Lock()
	h.status.BackoffUntil = time.Now().Add(-time.Second)
	h.mu.Unlock()
	if got, err = ts.client().Status(timeout(t, 10*time.Second)); err != nil || !got.BackoffUntil.IsZero() {
		t.Fatalf("Status = %+v, %v; want no back-off", got, err)
	}
}

// unusedPID returns a PID no process has.
func unusedPID(t *testing.T) int {
	for pid := 1 << 22; pid > 1000; pid-- {
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			return pid
		}
	}
	t.Skip("no unused pid found")
	return 0
}

func TestStopWaitsUntilTheProcessIsGone(t *testing.T) {
	h := &fakeHandler{status: Status{PID: unusedPID(t), State: StateStopping}}
	ts := serve(t, h, nil)
	if err := ts.client().Stop(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if _, s, _ := h.counts(); s != 1 {
		t.Fatalf("Handler.Stop called %d times", s)
	}

	// A process that does not go away: this one.
	h.mu.Lock()
	h.status.PID = os.Getpid()
	h.mu.Unlock()
	if err := ts.client().Stop(timeout(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop of a process that stays = %v; want DeadlineExceeded", err)
	}

	h.mu.Lock()
	h.status.PID = 0
	h.mu.Unlock()
	if err := ts.client().Stop(timeout(t, 10*time.Second)); err == nil || !strings.Contains(err.Error(), "did not say its pid") {
		t.Fatalf("Stop without a pid = %v", err)
	}
}

// TestStopReachesTheServingGeneration: a stop that reaches a generation
// that has handed over is sent again, and stops the serving one.
func TestStopReachesTheServingGeneration(t *testing.T) {
	draining := Status{PID: os.Getpid(), Generation: 1, State: StateDraining}
	serving := Status{PID: unusedPID(t), Generation: 2, State: StateStopping}
	// Each request looks at the status twice: before acting, and in the
	// answer.
	h := &fakeHandler{next: []Status{draining, draining}, status: serving}
	ts := serve(t, h, nil)
	if err := ts.client().Stop(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if _, s, _ := h.counts(); s != 1 {
		t.Fatalf("Handler.Stop called %d times; want once, by the serving generation", s)
	}

	h.mu.Lock()
	h.status, h.stops = draining, 0
	h.mu.Unlock()
	if err := ts.client().Stop(timeout(t, 10*time.Second)); !errors.Is(err, ErrUpgraded) {
		t.Fatalf("Stop, never reaching a serving generation = %v; want ErrUpgraded", err)
	}
	if _, s, st := h.counts(); s != 0 {
		t.Fatalf("a draining generation was stopped (%d, %d)", s, st)
	}
}

// TestReloadReachesTheServingGeneration: a reload that reaches a
// generation that has handed over (its queue answers ErrUpgraded) is sent
// again, and carried out by the serving one; it fails with ErrUpgraded
// only if it never reaches one.
func TestReloadReachesTheServingGeneration(t *testing.T) {
	h := &fakeHandler{}
	n := 0
	h.reload = func(context.Context, bool) error {
		if n++; n <= 2 {
			return ErrUpgraded
		}
		return nil
	}
	ts := serve(t, h, nil)
	if err := ts.client().Reload(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Reload = %v", err)
	}
	if r, _, _ := h.counts(); r != 3 {
		t.Fatalf("%d requests reached the service; want 3 (2 to draining generations)", r)
	}

	h.mu.Lock()
	h.reload = func(context.Context, bool) error { return ErrUpgraded }
	h.reloads = 0
	h.mu.Unlock()
	if err := ts.client().Reload(timeout(t, 10*time.Second)); !errors.Is(err, ErrUpgraded) {
		t.Fatalf("Reload, never reaching a serving generation = %v; want ErrUpgraded", err)
	}
	if r, _, _ := h.counts(); r != 1+maxForwards {
		t.Fatalf("%d requests sent; want %d", r, 1+maxForwards)
	}
}

func TestNoService(t *testing.T) {
	sock := t.TempDir() + "/none.sock"
	_, err := Client{Socket: sock}.Status(timeout(t, 10*time.Second))
	if err == nil || !strings.Contains(err.Error(), "no service is listening") {
		t.Fatalf("Status of nothing = %v", err)
	}
	if _, err := (Client{}).Status(context.Background()); err == nil || !strings.Contains(err.Error(), "Socket is empty") {
		t.Fatalf("zero Client: %v", err)
	}
}

func TestClientTrustsOnlyKnownServers(t *testing.T) {
	const me, other, nobody = 1000, 1001, 65534
	owner := func(uid int, err error) func(string) (int, error) {
		return func(string) (int, error) { return uid, err }
	}
	notPrivate := errors.New("proc: /tmp (dtrwxrwxrwx) is writable by users other than its owner")
	for _, tc := range []struct {
		name     string
		uid      int // the server's
		client   int
		socket   string
		owner    func(string) (int, error)
		rootOnly bool // the socket is behind a directory only root may enter
		err      string
	}{
		{"our own user", me, me, "/run/app/s", owner(-1, notPrivate), false, ""},
		{"root", 0, me, "/tmp/s", owner(-1, notPrivate), false, ""},
		{"the socket's owner, in a private directory", other, me, "/run/app/s", owner(other, nil), false, ""},
		{"someone else", other, me, "/run/app/s", owner(2000, nil), false, "answered by uid 1001, which is neither ours (uid 1000), root, nor the socket's owner (uid 2000)"},
		{"the owner of a socket in a shared directory", other, me, "/tmp/s", owner(-1, notPrivate), false, "the socket's owner cannot vouch for it: proc: /tmp"},
		{"abstract socket", other, me, "@ctl", owner(other, nil), false, "abstract socket has no owner"},
		// systemd 257's id-mapped runtime directory of a DynamicUser=
		// service, behind /run/private (0700): the socket seems nobody's.
		{"root, behind a root-only directory", other, 0, "/run/app/s", owner(nobody, nil), true, ""},
		{"root, no root-only directory", other, 0, "/run/app/s", owner(nobody, nil), false, "answered by uid 1001, which is neither ours (uid 0), root, nor the socket's owner (uid 65534)"},
		{"not root, behind a root-only directory", other, me, "/run/app/s", owner(nobody, nil), true, "answered by uid 1001, which is neither ours (uid 1000), root, nor the socket's owner (uid 65534)"},
		{"root, a shared directory", other, 0, "/tmp/s", owner(-1, notPrivate), true, "the socket's owner cannot vouch for it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.socket == "@ctl" && !isLinux {
				t.Skip("abstract sockets are Linux only")
			}
			err := trustServer(tc.uid, tc.client, tc.socket, tc.owner, func(string) bool { return tc.rootOnly })
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("trustServer = %v; want %q", err, tc.err)
			}
		})
	}
}

// TestClientRefusesAStranger runs the check end to end, pretending that
// the server runs as another user: nothing is sent to it.
func TestClientRefusesAStranger(t *testing.T) {
	h := &fakeHandler{}
	ts := serve(t, h, nil)
	stranger := os.Geteuid() + 4242
	serverCred = func(syscall.Conn) (proc.Cred, error) { return proc.Cred{UID: stranger}, nil }
	t.Cleanup(func() {
		serverCred, socketOwner, behindRootOnly = proc.PeerCred, proc.PrivateOwner, proc.BehindRootOnly
	})

	socketOwner = func(string) (int, error) { return os.Geteuid(), nil }
	// t.TempDir is 0700: for a test run as root, the socket is behind a
	// root-only directory, which would vouch for any server.
	behindRootOnly = func(string) bool { return false }
	err := ts.client().Stop(timeout(t, 10*time.Second))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("answered by uid %d", stranger)) || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("Stop via a stranger's server = %v", err)
	}
	// Idle, the accept loop holds the one token it waits in Accept with.
	waitFor(t, "the connection to end", func() bool { ts.mu.Lock(); defer ts.mu.Unlock(); return len(ts.sem) == 1 })
	if _, s, _ := h.counts(); s != 0 {
		t.Fatal("the stop reached the server")
	}

	// The socket's owner (in a private directory) is trusted.
	socketOwner = func(string) (int, error) { return stranger, nil }
	if _, err := ts.client().Status(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("Status via the socket owner's server = %v", err)
	}
}

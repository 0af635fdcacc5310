//go:build unix

package control

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/proc"
)

// TestRequestsPastTheirDeadlineAreNotCarriedOut is review M2: a stop that
// waited in the backlog until its client gave up must not stop the
// service when it is finally read.
func TestRequestsPastTheirDeadlineAreNotCarriedOut(t *testing.T) {
	ln, sock := listen(t)
	h := &fakeHandler{}
	// Nothing accepts yet: the request waits in the backlog.
	for _, call := range []func(context.Context) error{
		Client{Socket: sock}.Stop,
		func(ctx context.Context) error { return Client{Socket: sock}.Reload(ctx) },
	} {
		if err := call(timeout(t, 100*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("request to a service that does not accept = %v; want DeadlineExceeded", err)
		}
	}
	// One that is still open, to read the answer.
	c := raw(t, sock, request("stop", time.Now().Add(50*time.Millisecond)))
	time.Sleep(100 * time.Millisecond)

	ts := serveOn(t, h, ln, sock, nil)
	answer := readAnswer(t, c, 5*time.Second)
	if !strings.Contains(answer, `"code":"expired"`) || !strings.Contains(answer, "was not carried out") {
		t.Fatalf("answer %q; want expired", answer)
	}
	waitFor(t, "three expired requests", func() bool {
		return strings.Count(ts.log.String(), "dropped a request that arrived after its deadline") == 3
	})
	if r, s, _ := h.counts(); r != 0 || s != 0 {
		t.Fatalf("expired requests carried out: %d reloads, %d stops", r, s)
	}
}

// TestRequestsWhoseRequesterLeftAreNotCarriedOut: a request whose client
// closed the connection before the service read it is dropped, even
// before its deadline.
func TestRequestsWhoseRequesterLeftAreNotCarriedOut(t *testing.T) {
	ln, sock := listen(t)
	h := &fakeHandler{}
	for _, verb := range []string{"stop", "reload"} {
		c := raw(t, sock, request(verb, time.Now().Add(time.Minute)))
		c.Close()
	}
	ts := serveOn(t, h, ln, sock, nil)
	waitFor(t, "two dropped requests", func() bool {
		return strings.Count(ts.log.String(), "dropped a request whose requester had gone away") == 2
	})
	if r, s, _ := h.counts(); r != 0 || s != 0 {
		t.Fatalf("abandoned requests carried out: %d reloads, %d stops", r, s)
	}
}

// TestReloadIsGivenUpWhenTheRequesterLeaves: the Handler's ctx is
// cancelled when the client closes its end during the reload.
func TestReloadIsGivenUpWhenTheRequesterLeaves(t *testing.T) {
	h := &fakeHandler{}
	started := make(chan struct{})
	causes := make(chan error, 1)
	h.reload = func(ctx context.Context, bool bool) error {
		close(started)
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}
	ts := serve(t, h, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ts.client().Reload(ctx) }()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Reload after cancel = %v", err)
	}
	select {
	case cause := <-causes:
		if !errors.Is(cause, errRequesterGone) {
			t.Fatalf("the handler's ctx ended with %v; want errRequesterGone", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's ctx was not cancelled")
	}
	waitFor(t, "the log line", func() bool { return ts.logged("the requester of a reload went away") })
}

func TestRefusedPeersGetNothingButTheRefusal(t *testing.T) {
	h := &fakeHandler{status: Status{PID: 1, State: StateServing}}
	stranger := os.Geteuid() + 4242
	ts := serve(t, h, func(s *Server) {
		s.peerCred = func(syscall.Conn) (proc.Cred, error) { return proc.Cred{UID: stranger, PID: 99}, nil }
	})
	for range 20 {
		_, err := ts.client().Status(timeout(t, 10*time.Second))
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "peer runs as uid") {
			t.Fatalf("a stranger's status = %v; want a refusal", err)
		}
	}
	// The refusal comes at once, before anything is read.
	c := raw(t, ts.sock, "")
	begin := time.Now()
	answer := readAnswer(t, c, 5*time.Second)
	if !strings.Contains(answer, `"code":"refused"`) || strings.Contains(answer, "status") || time.Since(begin) > time.Second {
		t.Fatalf("answer %q after %v; want a refusal without status, at once", answer, time.Since(begin))
	}
	if _, _, st := h.counts(); st != 0 {
		t.Fatalf("the handler was asked for its status %d times", st)
	}
	// 21 refusals within a second: one log line.
	if n := strings.Count(ts.log.String(), "refused a peer"); n != 1 {
		t.Fatalf("%d refusal lines logged; want 1:\n%s", n, ts.log.String())
	}
}

func TestAdmit(t *testing.T) {
	for _, tc := range []struct {
		uid, me int
		ok      bool
	}{{1000, 1000, true}, {0, 1000, true}, {0, 0, true}, {1001, 1000, false}, {1000, 0, false}} {
		if err := admit(tc.uid, tc.me); (err == nil) != tc.ok {
			t.Errorf("admit(%d, %d) = %v", tc.uid, tc.me, err)
		}
	}
}

func TestMalformedRequests(t *testing.T) {
	h := &fakeHandler{status: Status{PID: 1, State: StateServing}}
	ts := serve(t, h, nil)
	future := time.Now().Add(time.Minute)
	for _, tc := range []struct {
		name, in, want string
		closeWrite     bool
	}{
		{"garbage", "hello\n", "malformed", false},
		{"unknown verb", `{"verb":"rm -rf","deadline_unix_ms":1}` + "\n", "unknown verb", false},
		{"unknown field", `{"verb":"status","sudo":true}` + "\n", "unknown field", false},
		{"key case", `{"verb":"status","Verb":"stop"}` + "\n", `unknown field \"Verb\"`, false},
		{"oversized", strings.Repeat("a", 10000) + "\n", "longer than 4096 bytes", false},
		{"no newline", strings.TrimSuffix(request("status", future), "\n"), "reading the request: EOF", true},
		{"silent", "", "reading the request", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := raw(t, ts.sock, tc.in)
			if tc.closeWrite {
				c.(*net.UnixConn).CloseWrite()
			}
			answer := readAnswer(t, c, readTimeout+5*time.Second)
			if !strings.Contains(answer, `"ok":false`) || !strings.Contains(answer, tc.want) || !strings.Contains(answer, `"status":{"pid":1`) {
				t.Fatalf("answer %q; want a refusal saying %q, with the status", answer, tc.want)
			}
		})
	}
	if r, s, _ := h.counts(); r != 0 || s != 0 {
		t.Fatalf("malformed requests carried out: %d reloads, %d stops", r, s)
	}
	if _, err := ts.client().Status(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("status after bad input: %v", err)
	}
}

// TestConnectionsAreCapped: beyond maxConns, connections wait in the
// backlog and are served when a slot frees.
func TestConnectionsAreCapped(t *testing.T) {
	h := &fakeHandler{}
	ts := serve(t, h, nil)
	for range maxConns + 8 {
		raw(t, ts.sock, "") // silent: holds a slot for readTimeout
	}
	slots := func() int { ts.mu.Lock(); defer ts.mu.Unlock(); return len(ts.reading) }
	waitFor(t, "every slot to be taken", func() bool { return slots() == maxConns })
	time.Sleep(100 * time.Millisecond)
	if n := slots(); n != maxConns {
		t.Fatalf("%d connections served at once; want %d", n, maxConns)
	}
	begin := time.Now()
	if _, err := ts.client().Status(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("status behind %d silent connections: %v", maxConns+8, err)
	}
	if waited := time.Since(begin); waited < readTimeout/2 {
		t.Errorf("status answered after %v; it should have waited for a slot", waited)
	}
}

// flakyListener fails Accept with err the first fails times, and records
// when Accept was called.
type flakyListener struct {
	net.Listener
	err   error
	mu    sync.Mutex
	fails int
	calls []time.Time
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls = append(l.calls, time.Now())
	fail := l.fails > 0
	if fail {
		l.fails--
	}
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", l.err)}
	}
	return l.Listener.Accept()
}

// TestAcceptRetriesTemporaryErrors is review M1: with descriptors
// exhausted, the control socket must come back once they are available.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	ln, sock := listen(t)
	fl := &flakyListener{Listener: ln, err: syscall.EMFILE, fails: 4}
	ts := serveOn(t, &fakeHandler{}, fl, sock, nil)
	if _, err := ts.client().Status(timeout(t, 10*time.Second)); err != nil {
		t.Fatalf("status after EMFILE: %v", err)
	}
	fl.mu.Lock()
	calls := fl.calls
	fl.mu.Unlock()
	if len(calls) < 5 {
		t.Fatalf("%d Accept calls; want at least 5", len(calls))
	}
	want := acceptDelayMin
	for i := 1; i < 5; i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < want || gap > want+time.Second {
			t.Errorf("retry %d after %v; want %v", i, gap, want)
		}
		want *= 2
	}
	if !ts.logged("accept failed; retrying") || !ts.logged("too many open files") {
		t.Errorf("the retries are not logged:\n%s", ts.log.String())
	}
	select {
	case err := <-ts.done:
		t.Fatalf("Serve returned %v", err)
	default:
	}
}

func TestAcceptDelayIsCapped(t *testing.T) {
	var d time.Duration
	var got []time.Duration
	for range 12 {
		d = nextAcceptDelay(d)
		got = append(got, d)
	}
	if got[0] != 5*time.Millisecond || got[1] != 10*time.Millisecond || got[7] != 640*time.Millisecond || got[8] != time.Second || got[11] != time.Second {
		t.Fatalf("delays %v", got)
	}
}

func TestServeReturnsOtherAcceptErrors(t *testing.T) {
	ln, _ := listen(t)
	defer ln.Close()
	s := &Server{Handler: &fakeHandler{}}
	err := s.Serve(&flakyListener{Listener: ln, err: syscall.EINVAL, fails: 1})
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Serve = %v; want EINVAL", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestClose: Close interrupts connections still reading, waits for a
// reload in progress, and is idempotent; Serve after Close returns at once.
func TestClose(t *testing.T) {
	h := &fakeHandler{}
	started, release := make(chan struct{}), make(chan struct{})
	h.reload = func(context.Context, bool) error { close(started); <-release; return nil }
	ln, sock := listen(t)
	s := &Server{Handler: h}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	reloaded := make(chan error, 1)
	go func() { reloaded <- Client{Socket: sock}.Reload(timeout(t, 10*time.Second)) }()
	<-started
	silent := raw(t, sock, "")
	waitFor(t, "the silent connection", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.reading) == 1 })

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	begin := time.Now()
	answer := readAnswer(t, silent, 5*time.Second)
	if !strings.Contains(answer, "stopped answering") || time.Since(begin) > readTimeout/2 {
		t.Fatalf("the silent connection got %q after %v; want an answer at Close", answer, time.Since(begin))
	}
	select {
	case <-closed:
		t.Fatal("Close returned while a reload was in progress")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-reloaded; err != nil {
		t.Fatalf("the reload in progress: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	ln2, _ := listen(t)
	if err := s.Serve(ln2); err != nil {
		t.Fatalf("Serve after Close = %v", err)
	}
	if _, err := ln2.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve after Close left its listener open: %v", err)
	}
}

// TestStopAccepting: Serve returns, the request in progress is answered,
// and nobody accepts any more.
func TestStopAccepting(t *testing.T) {
	h := &fakeHandler{}
	started, release := make(chan struct{}), make(chan struct{})
	h.reload = func(context.Context, bool) error { close(started); <-release; return nil }
	ts := serve(t, h, nil)
	reloaded := make(chan error, 1)
	go func() { reloaded <- ts.client().Reload(timeout(t, 10*time.Second)) }()
	<-started
	ts.StopAccepting()
	ts.StopAccepting()
	select {
	case err := <-ts.done:
		ts.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after StopAccepting")
	}
	if _, err := ts.client().Status(timeout(t, time.Second)); err == nil || !strings.Contains(err.Error(), "no service is listening") {
		t.Fatalf("status after StopAccepting = %v", err)
	}
	close(release)
	if err := <-reloaded; err != nil {
		t.Fatalf("the reload in progress: %v", err)
	}
}

func TestServeWithoutHandlerPanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "control: Server.Handler is nil") {
			t.Fatalf("recovered %v", r)
		}
	}()
	new(Server).Serve(nil)
}

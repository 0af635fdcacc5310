package drain

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeGRPC behaves like a grpc.Server in what matters to a drain:
//
//   - Its accept loop (Serve) hands each connection to a goroutine of its
//     own, which first looks whether the server is stopping and, if so,
//     closes the connection unanswered (grpc-go's handleRawConn does);
//     otherwise it greets the client with "hello", as an HTTP/2 server
//     sends its SETTINGS.
//   - Serve ends with nil if the server is stopping when Accept fails, and
//     with Accept's error otherwise.
//   - GracefulStop marks the server stopping, then closes its listener,
//     waits for the accept loop and the connection goroutines, says
//     "goaway" on every connection, waits for its RPCs and closes.
//   - Stop closes everything and makes GracefulStop return.
type fakeGRPC struct {
	// hold, if set, is waited on by each connection goroutine before it
	// looks at quit: a goroutine the scheduler has not run yet.
	hold chan struct{}
	// closeGate, if set, is waited on by GracefulStop between marking the
	// server stopping and closing its listener.
	closeGate chan struct{}

	ln       *Listener
	quit     chan struct{} // closed when GracefulStop or Stop begins
	quitOnce sync.Once
	stopped  chan struct{} // closed by Stop
	stopOnce sync.Once
	relOnce  sync.Once
	mu       sync.Mutex
	conns    []net.Conn
	accepted int
	serveErr error
	wg       sync.WaitGroup // the accept loop and the connection goroutines
	rpcs     sync.WaitGroup
}

// startFake serves ln with f, and stops f at cleanup.
func startFake(t *testing.T, f *fakeGRPC, ln *Listener) {
	t.Helper()
	f.ln = ln
	f.quit = make(chan struct{})
	f.stopped = make(chan struct{})
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				f.mu.Lock()
				if !isClosed(f.quit) {
					f.serveErr = err
				}
				f.mu.Unlock()
				return
			}
			f.mu.Lock()
			f.accepted++
			f.mu.Unlock()
			f.wg.Go(func() { f.handle(c) })
		}
	})
	t.Cleanup(func() {
		f.release()
		f.Stop()
		f.wg.Wait()
		f.rpcs.Wait()
	})
}

// release lets the connection goroutines run.
func (f *fakeGRPC) release() {
	if f.hold != nil {
		f.relOnce.Do(func() { close(f.hold) })
	}
}

func (f *fakeGRPC) handle(c net.Conn) {
	if f.hold != nil {
		<-f.hold
	}
	if isClosed(f.quit) {
		c.Close()
		return
	}
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
	io.WriteString(c, "hello\n")
}

// rpc runs a stream that ends when wrapUp closes, if it does.
func (f *fakeGRPC) rpc(d time.Duration, wrapUp <-chan struct{}) {
	f.rpcs.Go(func() {
		select {
		case <-time.After(d):
		case <-wrapUp:
		case <-f.stopped:
		}
	})
}

func (f *fakeGRPC) closeConns() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

func (f *fakeGRPC) GracefulStop() {
	f.quitOnce.Do(func() { close(f.quit) })
	if f.closeGate != nil {
		<-f.closeGate
	}
	f.ln.Close()
	f.wg.Wait()
	f.mu.Lock()
	for _, c := range f.conns {
		io.WriteString(c, "goaway\n")
	}
	f.mu.Unlock()
	f.rpcs.Wait()
	f.closeConns()
}

func (f *fakeGRPC) Stop() {
	f.quitOnce.Do(func() { close(f.quit) })
	f.stopOnce.Do(func() { close(f.stopped) })
	f.ln.Close()
	f.closeConns()
}

// newFakeGRPC serves a fresh listener with a fakeGRPC that has two
// clients connected and greeted.
func newFakeGRPC(t *testing.T) (*fakeGRPC, *Listener) {
	f := &fakeGRPC{}
	ln := listen(t)
	startFake(t, f, ln)
	for range 2 {
		_, r := dialLine(t, ln.Addr().String())
		if l, err := r.ReadString('\n'); l != "hello\n" {
			t.Fatalf("greeting %q, %v", l, err)
		}
	}
	return f, ln
}

// within waits up to 5 s for c to close.
func within(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestStopperGraceful(t *testing.T) {
	s, ln := newFakeGRPC(t)
	st := &Stopper{Server: s, Listener: ln}
	s.rpc(100*time.Millisecond, nil)
	s.rpc(time.Hour, st.WrapUp()) // a stream that ends when told to
	got := <-drainIn(st, 5*time.Second)
	if got.err != nil || got.r.Name != "grpc" || got.r.Open != 2 || got.r.Ended != 2 || got.r.Cut != 0 {
		t.Fatalf("Drain = %v, %v", got.r, got.err)
	}
	if got.r.Duration < 90*time.Millisecond || got.r.Duration > time.Second {
		t.Fatalf("drain took %v, want the 100ms RPC", got.r.Duration)
	}
	if s.serveErr != nil {
		t.Fatalf("Serve ended with %v, want nil", s.serveErr)
	}
}

func TestStopperStopsAtDeadline(t *testing.T) {
	s, ln := newFakeGRPC(t)
	st := &Stopper{Server: s, Listener: ln, Name: "rpc"}
	s.rpc(time.Hour, nil) // ignores WrapUp
	start := time.Now()
	got := <-drainIn(st, 300*time.Millisecond)
	took := time.Since(start)
	if !errors.Is(got.err, context.DeadlineExceeded) || got.r.Cut != 2 || got.r.Ended != 0 {
		t.Fatalf("Drain = %v, %v; want 2 cut", got.r, got.err)
	}
	if took < 290*time.Millisecond || took > 600*time.Millisecond {
		t.Fatalf("stopped after %v, want at the 300ms deadline", took)
	}
}

func TestStopperWithoutConns(t *testing.T) {
	s, _ := newFakeGRPC(t)
	s.rpc(time.Hour, nil)
	got := <-drainIn(&Stopper{Server: s}, 100*time.Millisecond)
	if !errors.Is(got.err, context.DeadlineExceeded) || got.r.Cut != 1 {
		t.Fatalf("Drain = %v, %v; want Stop reported as 1 cut", got.r, got.err)
	}
}

// TestStopperServesConnectionAcceptedJustBefore holds a connection
// between the server's Accept and its connection goroutine (as a busy
// scheduler does) while the drain begins. Drain must wait until the server
// has taken it up before GracefulStop, so that the client is greeted and
// then told to go away, instead of finding its connection closed before a
// word, which fails the RPCs a gRPC client has waiting for it.
func TestStopperServesConnectionAcceptedJustBefore(t *testing.T) {
	f := &fakeGRPC{hold: make(chan struct{})}
	ln := listen(t)
	startFake(t, f, ln)
	_, r := dialLine(t, ln.Addr().String())
	for deadline := time.Now().Add(5 * time.Second); ln.Conns() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server never accepted the connection")
		}
	}
	done := drainIn(&Stopper{Server: f, Listener: ln}, 5*time.Second)
	// Long enough for Drain to reach GracefulStop if it did not wait.
	time.Sleep(100 * time.Millisecond)
	f.release()
	if lines := readLines(r); len(lines) != 2 || lines[0] != "hello\n" || lines[1] != "goaway\n" {
		t.Errorf("client read %q, want hello, goaway: its connection was closed unanswered", lines)
	}
	got := <-done
	if got.err != nil || got.r.Open != 1 || got.r.Ended != 1 {
		t.Fatalf("Drain = %v, %v", got.r, got.err)
	}
}

// TestStopperStopsAcceptingBeforeGracefulStop connects while GracefulStop
// has marked the server stopping but not yet closed its listener (the
// order grpc-go's GracefulStop has). The connection must wait in the
// kernel for the next generation, which shares the socket, not be taken
// by this one only to be closed; and Serve must still end with nil.
func TestStopperStopsAcceptingBeforeGracefulStop(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The next generation's listener: the same socket, another fd.
	file, err := inner.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	next, err := net.FileListener(file)
	file.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	f := &fakeGRPC{closeGate: make(chan struct{})}
	ln := &Listener{Listener: inner}
	startFake(t, f, ln)
	done := drainIn(&Stopper{Server: f, Listener: ln}, 5*time.Second)
	within(t, f.quit, "GracefulStop")
	c, _ := dialLine(t, inner.Addr().String())
	// Only this generation accepts for now: give it the time to take the
	// connection, if it still accepts.
	for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		f.mu.Lock()
		accepted := f.accepted
		f.mu.Unlock()
		if accepted != 0 {
			t.Fatal("the draining generation accepted a connection made during its drain")
		}
	}
	next.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
	nc, err := next.Accept()
	if err != nil {
		t.Errorf("the next generation did not get the connection made during the drain: %v", err)
	} else {
		nc.Close()
	}
	close(f.closeGate)
	got := <-done
	c.Close()
	if got.err != nil {
		t.Fatalf("Drain = %v, %v", got.r, got.err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.serveErr != nil {
		t.Errorf("Serve ended with %v before GracefulStop; want nil", f.serveErr)
	}
}

// TestStopperDoesNotWaitLongForUntouchedConns checks that a connection
// the server accepted and then left alone delays GracefulStop by at most
// handoffWait.
func TestStopperDoesNotWaitLongForUntouchedConns(t *testing.T) {
	f := &fakeGRPC{hold: make(chan struct{})}
	ln := listen(t)
	startFake(t, f, ln)
	dialLine(t, ln.Addr().String())
	for deadline := time.Now().Add(5 * time.Second); ln.Conns() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server never accepted the connection")
		}
	}
	start := time.Now()
	done := drainIn(&Stopper{Server: f, Listener: ln}, 10*time.Second)
	within(t, f.quit, "GracefulStop")
	took := time.Since(start)
	f.release()
	if got := <-done; got.err != nil {
		t.Fatalf("Drain = %v, %v", got.r, got.err)
	}
	if took < handoffWait-50*time.Millisecond || took > handoffWait+500*time.Millisecond {
		t.Errorf("GracefulStop began %v after Drain, want about %v", took, handoffWait)
	}
}

// slowAccept returns each connection its listener accepts only once gate
// is closed, after closing got: a goroutine preempted between the kernel's
// accept and Listener.Accept recording the connection.
type slowAccept struct {
	net.Listener
	got, gate chan struct{}
	once      sync.Once
}

func (l *slowAccept) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.once.Do(func() { close(l.got) })
		<-l.gate
	}
	return c, err
}

// TestStopperWaitsForAcceptInProgress begins the drain while the server's
// Accept has a connection from the kernel but has not yet recorded it: the
// drain must wait for that connection too.
func TestStopperWaitsForAcceptInProgress(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowAccept{Listener: inner, got: make(chan struct{}), gate: make(chan struct{})}
	f := &fakeGRPC{}
	ln := &Listener{Listener: slow}
	startFake(t, f, ln)
	t.Cleanup(func() {
		select {
		case <-slow.gate:
		default:
			close(slow.gate)
		}
	})
	_, r := dialLine(t, inner.Addr().String())
	within(t, slow.got, "the kernel's accept")
	done := drainIn(&Stopper{Server: f, Listener: ln}, 5*time.Second)
	// Long enough for Drain to reach GracefulStop if it did not wait.
	time.Sleep(100 * time.Millisecond)
	close(slow.gate)
	if lines := readLines(r); len(lines) != 2 || lines[0] != "hello\n" || lines[1] != "goaway\n" {
		t.Errorf("client read %q, want hello, goaway: its connection was closed unanswered", lines)
	}
	if got := <-done; got.err != nil || got.r.Ended != 1 {
		t.Fatalf("Drain = %v, %v", got.r, got.err)
	}
}

// readLines reads lines from r until the connection ends.
func readLines(r *bufio.Reader) []string {
	var lines []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return lines
		}
		lines = append(lines, l)
	}
}

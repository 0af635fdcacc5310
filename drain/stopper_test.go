package drain

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeGRPC behaves like a grpc.Server: GracefulStop closes its listener and
// waits for its RPCs; Stop closes everything and makes GracefulStop return.
type fakeGRPC struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   []net.Conn
	rpcs    sync.WaitGroup
	stopped chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func (s *fakeGRPC) serve() {
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	})
}

// rpc runs a stream that ends when wrapUp closes, if it does.
func (s *fakeGRPC) rpc(d time.Duration, wrapUp <-chan struct{}) {
	s.rpcs.Add(1)
	go func() {
		defer s.rpcs.Done()
		select {
		case <-time.After(d):
		case <-wrapUp:
		case <-s.stopped:
		}
	}()
}

func (s *fakeGRPC) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

func (s *fakeGRPC) GracefulStop() {
	s.ln.Close()
	s.wg.Wait()
	s.rpcs.Wait()
	s.closeConns()
}

func (s *fakeGRPC) Stop() {
	s.once.Do(func() { close(s.stopped) })
	s.ln.Close()
	s.closeConns()
}

func newFakeGRPC(t *testing.T) (*fakeGRPC, *Listener) {
	ln := listen(t)
	s := &fakeGRPC{ln: ln, stopped: make(chan struct{})}
	s.serve()
	t.Cleanup(func() { s.Stop(); s.wg.Wait(); s.rpcs.Wait() })
	for range 2 {
		c, _ := dialLine(t, ln.Addr().String())
		_ = c
	}
	for ln.Conns() != 2 {
		time.Sleep(time.Millisecond)
	}
	return s, ln
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

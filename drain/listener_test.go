package drain

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineServer serves a goodbye-aware line echo through ln: every line is
// echoed; when its connection's turn in the drain comes it sends "BYE" and
// keeps echoing until the client closes, then closes.
func lineServer(t *testing.T, ln *Listener) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { echo(c, ln.WrapUpConn(c)) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

func echo(c net.Conn, wrapUp <-chan struct{}) {
	defer c.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		r := bufio.NewReader(c)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			lines <- l
		}
	}()
	defer func() {
		for range lines { // let the reader end
		}
	}()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return
			}
			if _, err := io.WriteString(c, l); err != nil {
				return
			}
		case <-wrapUp:
			wrapUp = nil
			if _, err := io.WriteString(c, "BYE\n"); err != nil {
				return
			}
		}
	}
}

func listen(t *testing.T) *Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &Listener{Listener: inner}
}

func dialLine(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func drainIn(d Drainer, timeout time.Duration) <-chan struct {
	r   Report
	err error
} {
	out := make(chan struct {
		r   Report
		err error
	}, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		r, err := d.Drain(ctx)
		out <- struct {
			r   Report
			err error
		}{r, err}
	}()
	return out
}

func TestListenerDrainsWhenClientsLeave(t *testing.T) {
	ln := listen(t)
	lineServer(t, ln)
	addr := ln.Addr().String()
	c, r := dialLine(t, addr)
	io.WriteString(c, "hello\n")
	if l, _ := r.ReadString('\n'); l != "hello\n" {
		t.Fatalf("echo %q", l)
	}
	for ln.Conns() != 1 {
		time.Sleep(time.Millisecond)
	}
	res := drainIn(ln, 10*time.Second)
	// The server says goodbye and still answers what was on its way.
	if l, _ := r.ReadString('\n'); l != "BYE\n" {
		t.Fatalf("got %q, want BYE", l)
	}
	io.WriteString(c, "last\n")
	if l, _ := r.ReadString('\n'); l != "last\n" {
		t.Fatalf("echo after BYE %q", l)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case <-res:
		t.Fatal("drain ended while the client was still connected")
	default:
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after our EOF the server ended with %v, want EOF", err)
	}
	got := <-res
	if got.err != nil || got.r.Open != 1 || got.r.Ended != 1 || got.r.Cut != 0 || got.r.Name != "tcp" {
		t.Fatalf("Drain = %v, %v; want 1 open, 1 ended", got.r, got.err)
	}
	if got.r.LastEnded < 100*time.Millisecond || got.r.LastEnded > got.r.Duration {
		t.Fatalf("LastEnded %v, Duration %v", got.r.LastEnded, got.r.Duration)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepts after the drain")
	}
}

func TestListenerCutsAtDeadline(t *testing.T) {
	ln := listen(t)
	lineServer(t, ln)
	const n = 3
	readers := make([]*bufio.Reader, n)
	for i := range n {
		c, r := dialLine(t, ln.Addr().String())
		io.WriteString(c, "x\n")
		r.ReadString('\n')
		readers[i] = r
	}
	start := time.Now()
	got := <-drainIn(ln, 300*time.Millisecond) // the clients never leave
	took := time.Since(start)
	if !errors.Is(got.err, context.DeadlineExceeded) || got.r.Cut != n || got.r.Ended != 0 || got.r.Open != n {
		t.Fatalf("Drain = %v, %v; want %d cut, DeadlineExceeded", got.r, got.err, n)
	}
	if !strings.Contains(got.err.Error(), "3 connection(s) cut") {
		t.Fatalf("error %q does not say how many were cut", got.err)
	}
	if took < 290*time.Millisecond || took > 500*time.Millisecond {
		t.Fatalf("cut after %v, want at the 300ms deadline", took)
	}
	for _, r := range readers {
		r.ReadString('\n') // BYE
		if _, err := r.ReadByte(); err == nil {
			t.Fatal("a cut connection is still open")
		}
	}
}

func TestListenerDrainWithoutConnections(t *testing.T) {
	ln := listen(t)
	lineServer(t, ln)
	got := <-drainIn(ln, 5*time.Second)
	if got.err != nil || got.r.Open != 0 || got.r.Duration > 100*time.Millisecond {
		t.Fatalf("Drain = %v, %v", got.r, got.err)
	}
}

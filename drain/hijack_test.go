package drain

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// hijackHandler takes over the connection and runs the goodbye-aware line
// echo on it; with ignore set, it never wraps up.
func hijackHandler(wg *sync.WaitGroup, ignore bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		wg.Add(1)
		defer wg.Done()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: lines\r\nConnection: Upgrade\r\n\r\n")
		_ = brw
		wrapUp := WrapUp(r.Context())
		if ignore {
			wrapUp = nil
		}
		echo(c, wrapUp)
	})
}

func dialHijack(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, r := dialLine(t, addr)
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: lines\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "hi\n")
	if l, _ := r.ReadString('\n'); l != "hi\n" {
		t.Fatalf("echo %q", l)
	}
	return c, r
}

func TestHijackedConnectionToldToWrapUpAndWaitedFor(t *testing.T) {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	h := &HTTP{Server: &http.Server{Handler: hijackHandler(&handlers, false)}}
	addr, served := serve(t, h)
	c, r := dialHijack(t, addr)
	res := drainIn(h, 10*time.Second)
	if l, _ := r.ReadString('\n'); l != "BYE\n" {
		t.Fatalf("got %q, want BYE: the handler was not told to wrap up", l)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case got := <-res:
		t.Fatalf("drain ended (%v) while the hijacked connection was open", got.r)
	default:
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("server ended the connection with %v, want EOF", err)
	}
	got := <-res
	if got.err != nil || got.r.Open != 1 || got.r.Ended != 1 || got.r.Cut != 0 {
		t.Fatalf("Drain = %v, %v; want 1 open, 1 ended", got.r, got.err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
}

func TestHijackedConnectionCutAtDeadline(t *testing.T) {
	var handlers sync.WaitGroup
	defer handlers.Wait()
	h := &HTTP{Server: &http.Server{Handler: hijackHandler(&handlers, true)}}
	addr, _ := serve(t, h)
	_, r1 := dialHijack(t, addr)
	_, r2 := dialHijack(t, addr)
	start := time.Now()
	got := <-drainIn(h, 300*time.Millisecond)
	took := time.Since(start)
	if got.r.Cut != 2 || got.r.Open != 2 || got.r.Ended != 0 || got.err == nil {
		t.Fatalf("Drain = %v, %v; want 2 cut", got.r, got.err)
	}
	if took < 290*time.Millisecond || took > 600*time.Millisecond {
		t.Fatalf("cut after %v, want at the 300ms deadline", took)
	}
	for _, r := range []*bufio.Reader{r1, r2} {
		if _, err := r.ReadByte(); err == nil {
			t.Fatal("cut connection still open")
		}
	}
}

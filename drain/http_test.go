package drain

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve starts h on a loopback listener and returns its address and a
// channel with Serve's result.
func serve(t *testing.T, h *HTTP) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var serveErr error
	done := make(chan struct{})
	go func() { serveErr = h.Serve(ln); close(done) }()
	t.Cleanup(func() {
		h.Server.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	result := make(chan error, 1)
	go func() {
		select {
		case <-done:
			result <- serveErr
		case <-time.After(10 * time.Second):
			result <- errors.New("Serve did not return within 10s")
		}
	}()
	return ln.Addr().String(), result
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done(): // the connection was cut
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "line %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	})
	return mux
}

// client is a raw HTTP/1.1 client on one connection that never retries.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *client) get(path string) *http.Response {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		c.t.Fatalf("write %s: %v", path, err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("read %s: %v", path, err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		c.t.Fatalf("body %s: %v", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("%s: status %d", path, resp.StatusCode)
	}
	return resp
}

// closedByServer waits for the server to close the connection.
func (c *client) closedByServer() bool {
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return errors.Is(err, io.EOF)
}

// drainResult is what a Drain returned.
type drainResult struct {
	r   Report
	err error
}

// drainAsync drains d within timeout in a goroutine of its own.
func drainAsync(d Drainer, timeout time.Duration) <-chan drainResult {
	out := make(chan drainResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		r, err := d.Drain(ctx)
		out <- drainResult{r, err}
	}()
	return out
}

func TestKeepAliveConnectionGetsConnectionCloseThenEnds(t *testing.T) {
	h := &HTTP{Server: &http.Server{Handler: handler()}, IdleTimeout: 5 * time.Second}
	addr, served := serve(t, h)
	c := dial(t, addr)
	if resp := c.get("/"); resp.Close {
		t.Fatal("response before the drain says Connection: close")
	}
	res := drainAsync(h, 10*time.Second)
	time.Sleep(50 * time.Millisecond) // let the drain begin

	// The client reuses its keep-alive connection during the drain: it is
	// answered, told to close, and only then closed.
	if resp := c.get("/"); !resp.Close {
		t.Fatal("response during the drain lacks Connection: close")
	}
	if !c.closedByServer() {
		t.Fatal("server kept the connection after Connection: close")
	}
	r := <-res
	if r.err != nil || r.r.Open != 1 || r.r.Ended != 1 || r.r.Cut != 0 {
		t.Fatalf("Drain = %+v, %v; want 1 open, 1 ended, 0 cut, nil", r.r, r.err)
	}
	if r.r.Duration > 2*time.Second {
		t.Fatalf("drain took %v; it should end right after the last response, not wait for IdleTimeout", r.r.Duration)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
	// Accepting has stopped.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepts after the drain")
	}
}

func TestResponseInFlightCarriesConnectionClose(t *testing.T) {
	h := &HTTP{Server: &http.Server{Handler: handler()}, IdleTimeout: 5 * time.Second}
	addr, _ := serve(t, h)
	c := dial(t, addr)
	got := make(chan *http.Response, 1)
	go func() {
		fmt.Fprintf(c.conn, "GET /?sleep=300ms HTTP/1.1\r\nHost: test\r\n\r\n")
		resp, err := http.ReadResponse(c.r, nil)
		if err != nil {
			got <- nil
			return
		}
		io.Copy(io.Discard, resp.Body)
		got <- resp
	}()
	time.Sleep(100 * time.Millisecond)
	res := drainAsync(h, 10*time.Second)
	resp := <-got
	if resp == nil || resp.StatusCode != 200 {
		t.Fatal("slow request failed during the drain")
	}
	if !resp.Close {
		t.Fatal("slow response written during the drain lacks Connection: close")
	}
	r := <-res
	if r.err != nil || r.r.Ended != 1 || r.r.Cut != 0 {
		t.Fatalf("Drain = %+v, %v", r.r, r.err)
	}
	if r.r.Duration > time.Second {
		t.Fatalf("drain took %v after a 300ms request; the connection should close with the response", r.r.Duration)
	}
}

func TestStreamingThroughTheWrapperFlushes(t *testing.T) {
	h := &HTTP{Server: &http.Server{Handler: handler()}}
	addr, _ := serve(t, h)
	c := dial(t, addr)
	fmt.Fprintf(c.conn, "GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("stream not chunked (Flush lost in the wrapper): %v", resp.TransferEncoding)
	}
	b, _ := io.ReadAll(resp.Body)
	if strings.Count(string(b), "\n") != 3 {
		t.Fatalf("stream body %q", b)
	}
}

func TestIdleConnectionClosedAfterIdleTimeout(t *testing.T) {
	h := &HTTP{Server: &http.Server{Handler: handler()}, IdleTimeout: 200 * time.Millisecond}
	addr, _ := serve(t, h)
	c := dial(t, addr)
	c.get("/")
	start := time.Now()
	res := drainAsync(h, 10*time.Second)
	if !c.closedByServer() {
		t.Fatal("idle connection not closed")
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("idle connection closed after %v, before IdleTimeout", waited)
	}
	r := <-res
	if r.err != nil || r.r.Ended != 1 || r.r.Cut != 0 {
		t.Fatalf("Drain = %+v, %v", r.r, r.err)
	}
}

func TestDeadlineCutsAndReports(t *testing.T) {
	h := &HTTP{Server: &http.Server{Handler: handler()}}
	addr, _ := serve(t, h)
	c := dial(t, addr)
	fmt.Fprintf(c.conn, "GET /?sleep=3s HTTP/1.1\r\nHost: test\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	r := <-drainAsync(h, 300*time.Millisecond)
	took := time.Since(start)
	if !errors.Is(r.err, context.DeadlineExceeded) || r.r.Cut != 1 {
		t.Fatalf("Drain = %+v, %v; want 1 cut and DeadlineExceeded", r.r, r.err)
	}
	if took < 250*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("cut after %v, want at the 300ms deadline", took)
	}
	if _, err := http.ReadResponse(c.r, nil); err == nil {
		t.Fatal("cut request still got a response")
	}
}

func TestDrainWithoutConnectionsIsImmediate(t *testing.T) {
	h := &HTTP{Server: &http.Server{Handler: handler()}}
	serve(t, h)
	r := <-drainAsync(h, 5*time.Second)
	if r.err != nil || r.r.Open != 0 || r.r.Duration > time.Second {
		t.Fatalf("Drain = %+v, %v", r.r, r.err)
	}
}

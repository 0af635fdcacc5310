//go:build unix

package control

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeHandler records what it is asked. reload, when set, decides each
// Reload's outcome.
type fakeHandler struct {
	mu     sync.Mutex
	status Status
	// next, if not empty, is what the next Status calls return, in turn,
	// before status.
	next    []Status
	reload  func(ctx context.Context, hurry bool) error
	reloads int
	hurries []bool
	stops   int
	statuss int
}

func (h *fakeHandler) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.statuss++
	if len(h.next) > 0 {
		st := h.next[0]
		h.next = h.next[1:]
		return st
	}
	return h.status
}

func (h *fakeHandler) Reload(ctx context.Context, hurry bool) error {
	h.mu.Lock()
	h.reloads++
	h.hurries = append(h.hurries, hurry)
	f := h.reload
	h.mu.Unlock()
	if f == nil {
		return nil
	}
	return f(ctx, hurry)
}

func (h *fakeHandler) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stops++
}

func (h *fakeHandler) counts() (reloads, stops, statuses int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reloads, h.stops, h.statuss
}

// logBuffer collects a Server's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listen returns a unix listener on a socket in a temporary directory.
func listen(t *testing.T) (net.Listener, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	return ln, sock
}

type testServer struct {
	*Server
	sock string
	log  *logBuffer
	done chan error // Serve's result
}

// serve runs a Server for h until the test ends. setup, if not nil,
// changes the Server before it starts.
func serve(t *testing.T, h Handler, setup func(*Server)) *testServer {
	t.Helper()
	ln, sock := listen(t)
	return serveOn(t, h, ln, sock, setup)
}

func serveOn(t *testing.T, h Handler, ln net.Listener, sock string, setup func(*Server)) *testServer {
	t.Helper()
	ts := &testServer{Server: &Server{Handler: h}, sock: sock, log: &logBuffer{}, done: make(chan error, 1)}
	ts.Logger = slogFor(ts.log)
	if setup != nil {
		setup(ts.Server)
	}
	go func() { ts.done <- ts.Serve(ln) }()
	t.Cleanup(func() {
		if err := ts.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return ts
}

func slogFor(w *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (ts *testServer) logged(s string) bool { return strings.Contains(ts.log.String(), s) }

func (ts *testServer) client() Client { return Client{Socket: ts.sock} }

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// raw connects to sock and writes in (if not empty), for requests our
// Client would never send.
func raw(t *testing.T, sock, in string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if in != "" {
		if _, err := c.Write([]byte(in)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// readAnswer reads one answer line from c, within d.
func readAnswer(t *testing.T, c net.Conn, d time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var b bytes.Buffer
	buf := make([]byte, 512)
	for !bytes.Contains(b.Bytes(), []byte("\n")) {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

func request(verb string, deadline time.Time) string {
	return `{"verb":"` + verb + `","deadline_unix_ms":` + strconv.FormatInt(deadline.UnixMilli(), 10) + "}\n"
}

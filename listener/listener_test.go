package listener

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func listen(t *testing.T, s *Set, name, network, addr string) net.Listener {
	t.Helper()
	ln, err := s.Listen(ctx(t), name, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// fakeHandoff plays the previous generation: it hands over duplicates of the
// sockets recorded with AddListener and AddPacketConn, as tableflip does
// across exec, keeping listeners and datagram sockets apart as it does.
type fakeHandoff struct{ files, packets map[string]*os.File }

type filer interface{ File() (*os.File, error) }

func (h *fakeHandoff) AddListener(name string, ln net.Listener) error {
	return h.add(&h.files, name, ln)
}

func (h *fakeHandoff) AddPacketConn(name string, pc net.PacketConn) error {
	return h.add(&h.packets, name, pc)
}

func (h *fakeHandoff) add(m *map[string]*os.File, name string, c any) error {
	f, err := c.(filer).File()
	if err != nil {
		return err
	}
	if *m == nil {
		*m = map[string]*os.File{}
	}
	(*m)[name] = f
	return nil
}

func (h *fakeHandoff) Listener(name string) (net.Listener, error) {
	f := h.files[name]
	if f == nil {
		return nil, nil
	}
	return net.FileListener(f)
}

func (h *fakeHandoff) PacketConn(name string) (net.PacketConn, error) {
	f := h.packets[name]
	if f == nil {
		return nil, nil
	}
	return net.FilePacketConn(f)
}

func TestBadInput(t *testing.T) {
	busy := listen(t, &Set{}, "busy", "tcp", "127.0.0.1:0")
	for _, tc := range []struct {
		name, lname, network, addr string
		want                       error
	}{
		{"bad name", "a:b", "tcp", "127.0.0.1:0", ErrBadName},
		{"empty name", "", "tcp", "127.0.0.1:0", ErrBadName},
		{"unsupported network", "x", "udp", "127.0.0.1:0", ErrUnsupportedNetwork},
		{"missing port", "x", "tcp", "127.0.0.1", nil},
		{"port out of range", "x", "tcp", "127.0.0.1:99999", nil},
		{"address in use", "x", "tcp", busy.Addr().String(), syscall.EADDRINUSE},
		{"empty unix path", "x", "unix", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := (&Set{}).Listen(ctx(t), tc.lname, tc.network, tc.addr)
			if err == nil {
				ln.Close()
				t.Fatal("Listen succeeded, want an error")
			}
			var le *Error
			if !errors.As(err, &le) || le.Name != tc.lname || le.Addr != tc.addr {
				t.Fatalf("error %v is not a *listener.Error naming %q %q", err, tc.lname, tc.addr)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v does not wrap %v", err, tc.want)
			}
			t.Log(err)
		})
	}
}

func TestDuplicateName(t *testing.T) {
	var s Set
	listen(t, &s, "http", "tcp", "127.0.0.1:0")
	if _, err := s.Listen(ctx(t), "http", "tcp", "127.0.0.1:0"); !errors.Is(err, ErrDuplicateName) {
		t.Fatalf("second Listen(http) = %v, want ErrDuplicateName", err)
	}
}

func TestInheritByNameNotAddressText(t *testing.T) {
	h := &fakeHandoff{}
	old := listen(t, &Set{Handoff: h}, "http", "tcp", "127.0.0.1:0")
	port := old.Addr().(*net.TCPAddr).Port

	next := &Set{Handoff: h}
	// Another spelling of the same address is the same listener.
	ln := listen(t, next, "http", "tcp", net.JoinHostPort("localhost", itoa(port)))
	if next.Source("http") != "inherited" {
		t.Fatal("listener was bound anew, want inherited")
	}
	if ln.Addr().String() != old.Addr().String() {
		t.Fatalf("inherited %v, want %v", ln.Addr(), old.Addr())
	}
	// A connection queued on the socket is accepted through the inherited fd.
	old.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ac.Close()
}

func TestAddressChangeBindsAnew(t *testing.T) {
	h := &fakeHandoff{}
	listen(t, &Set{Handoff: h}, "http", "tcp", "127.0.0.1:0")
	next := &Set{Handoff: h}
	ln := listen(t, next, "http", "tcp", "127.0.0.2:0")
	if next.Source("http") == "inherited" {
		t.Fatal("listener on a changed address was inherited")
	}
	if got := ln.Addr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("bound %v, want 127.0.0.2", ln.Addr())
	}
}

func TestUnixStaleSocketDoesNotBlockColdStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	// A crashed process leaves its socket file behind.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale file missing: %v", err)
	}
	var s Set
	ln := listen(t, &s, "api", "unix", path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial after cold start over a stale file: %v", err)
	}
	c.Close()
	_ = ln
}

func TestUnixLiveSocketIsNeverStolen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	live, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go func() {
		for {
			c, err := live.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, err = (&Set{}).Listen(ctx(t), "api", "unix", path)
	if !errors.Is(err, ErrLiveSocket) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Listen on a live socket = %v, want ErrLiveSocket", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the live socket was disturbed: %v", err)
	}
	c.Close()
}

func TestUnixPathThatIsNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := (&Set{}).Listen(ctx(t), "api", "unix", path)
	if !errors.Is(err, ErrNotSocket) {
		t.Fatalf("Listen over a regular file = %v, want ErrNotSocket", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "data" {
		t.Fatal("the regular file was touched")
	}
}

func TestUnixCloseKeepsFileUnlinkRemovesIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	h := &fakeHandoff{}
	s := &Set{Handoff: h}
	listen(t, s, "api", "unix", path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed the socket file the next generation needs: %v", err)
	}
	// The next generation inherits it and, stopping for good, unlinks it.
	next := &Set{Handoff: h}
	listen(t, next, "api", "unix", path)
	if next.Source("api") != "inherited" {
		t.Fatal("unix listener not inherited")
	}
	if err := next.Unlink(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Unlink left the file: %v", err)
	}
}

func TestUnlinkSparesAReplacedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	var s Set
	listen(t, &s, "api", "unix", path)
	// Someone else removed our file and created theirs at the same path.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := s.Unlink(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Unlink removed a file that is not ours: %v", err)
	}
}

func itoa(i int) string { return (&net.TCPAddr{Port: i}).String()[1:] }

// systemdFile returns a descriptor for ln as systemd would pass it.
func systemdFile(t *testing.T, ln net.Listener) *os.File {
	t.Helper()
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSocketsFromSystemd(t *testing.T) {
	a, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	old, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	s := &Set{Systemd: map[string][]*os.File{
		"http":    {systemdFile(t, b), systemdFile(t, a)}, // e.g. two ListenStream= lines
		"retired": {systemdFile(t, old)},
	}}
	ln := listen(t, s, "http", "tcp", a.Addr().String())
	if s.Source("http") != "systemd" || ln.Addr().String() != a.Addr().String() {
		t.Fatalf("http: source %q, address %v; want systemd's socket at %v", s.Source("http"), ln.Addr(), a.Addr())
	}
	// An address systemd did not pass is bound anew.
	listen(t, s, "admin", "tcp", "127.0.0.1:0")
	if s.Source("admin") != "bound" {
		t.Fatalf("admin: source %q", s.Source("admin"))
	}
	// What Listen did not take is left in the map for its owner: the
	// 127.0.0.2 one under "http", and "retired".
	if len(s.Systemd) != 2 || len(s.Systemd["http"]) != 1 || len(s.Systemd["retired"]) != 1 {
		t.Fatalf("unused systemd sockets %v", s.Systemd)
	}
}

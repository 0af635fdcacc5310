//go:build unix

package listener

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func listenPacket(t *testing.T, s *Set, name, network, addr string) net.PacketConn {
	t.Helper()
	pc, err := s.ListenPacket(ctx(t), name, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// roundTrip sends a datagram to pc's address and reads it from pc.
func roundTrip(t *testing.T, pc net.PacketConn) {
	t.Helper()
	addr := pc.LocalAddr()
	c, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		t.Fatalf("dialing %v: %v", addr, err)
	}
	defer c.Close()
	want := "ping " + strconv.Itoa(os.Getpid())
	if _, err := c.Write([]byte(want)); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer pc.SetReadDeadline(time.Time{})
	buf := make([]byte, 64)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != want {
		t.Fatalf("read %q, %v from %v; want %q", buf[:n], err, addr, want)
	}
}

func TestPacketBadInput(t *testing.T) {
	busy := listenPacket(t, &Set{}, "busy", "udp", "127.0.0.1:0")
	for _, tc := range []struct {
		name, lname, network, addr string
		want                       error
	}{
		{"bad name", "a:b", "udp", "127.0.0.1:0", ErrBadName},
		{"stream network", "x", "tcp", "127.0.0.1:0", ErrUnsupportedNetwork},
		{"unix stream network", "x", "unix", "/tmp/x.sock", ErrUnsupportedNetwork},
		{"no network", "x", "", "127.0.0.1:0", ErrUnsupportedNetwork},
		{"missing port", "x", "udp", "127.0.0.1", nil},
		{"address in use", "x", "udp", busy.LocalAddr().String(), syscall.EADDRINUSE},
		{"empty unixgram path", "x", "unixgram", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := (&Set{}).ListenPacket(ctx(t), tc.lname, tc.network, tc.addr)
			if err == nil {
				pc.Close()
				t.Fatal("ListenPacket succeeded, want an error")
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

func TestPacketBindAndOneNamespace(t *testing.T) {
	var s Set
	pc := listenPacket(t, &s, "dns", "udp", "127.0.0.1:0")
	if s.Source("dns") != "bound" {
		t.Fatalf("source %q, want bound", s.Source("dns"))
	}
	roundTrip(t, pc)
	listen(t, &s, "http", "tcp", "127.0.0.1:0")
	// A name is a stream or a datagram socket, not both.
	if _, err := s.Listen(ctx(t), "dns", "tcp", "127.0.0.1:0"); !errors.Is(err, ErrDuplicateName) {
		t.Fatalf("Listen(dns) after ListenPacket(dns) = %v, want ErrDuplicateName", err)
	}
	if _, err := s.ListenPacket(ctx(t), "http", "udp", "127.0.0.1:0"); !errors.Is(err, ErrDuplicateName) {
		t.Fatalf("ListenPacket(http) after Listen(http) = %v, want ErrDuplicateName", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Set.Close = %v, want net.ErrClosed", err)
	}
}

func TestPacketInheritByNameNotAddressText(t *testing.T) {
	h := &fakeHandoff{}
	old := listenPacket(t, &Set{Handoff: h}, "dns", "udp", "127.0.0.1:0")
	port := old.LocalAddr().(*net.UDPAddr).Port
	path := filepath.Join(t.TempDir(), "log.sock")
	oldLog := listenPacket(t, &Set{Handoff: h}, "log", "unixgram", path)

	next := &Set{Handoff: h}
	pc := listenPacket(t, next, "dns", "udp", net.JoinHostPort("localhost", strconv.Itoa(port)))
	log := listenPacket(t, next, "log", "unixgram", path)
	for _, name := range []string{"dns", "log"} {
		if next.Source(name) != "inherited" {
			t.Fatalf("%s: source %q, want inherited", name, next.Source(name))
		}
	}
	// Datagrams to the old sockets arrive through the inherited ones.
	old.Close()
	oldLog.Close()
	roundTrip(t, pc)
	roundTrip(t, log)
}

func TestPacketAddressChangeBindsAnew(t *testing.T) {
	h := &fakeHandoff{}
	listenPacket(t, &Set{Handoff: h}, "dns", "udp", "127.0.0.1:0")
	next := &Set{Handoff: h}
	pc := listenPacket(t, next, "dns", "udp", "127.0.0.2:0")
	if next.Source("dns") != "bound" {
		t.Fatalf("a datagram socket moved to another address: source %q, want bound", next.Source("dns"))
	}
	if got := pc.LocalAddr().(*net.UDPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("bound %v, want 127.0.0.2", pc.LocalAddr())
	}
}

// deadUnixgram leaves a unixgram socket file at path with nobody bound to
// it, as a crashed process does (the kernel never removes the file).
func deadUnixgram(t *testing.T, path string) {
	t.Helper()
	dead, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale file missing: %v", err)
	}
}

func TestUnixgramUnlinkDiscipline(t *testing.T) {
	t.Run("stale file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.sock")
		deadUnixgram(t, path)
		roundTrip(t, listenPacket(t, &Set{}, "log", "unixgram", path))
	})
	t.Run("live datagram socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.sock")
		live, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		_, err = (&Set{}).ListenPacket(ctx(t), "log", "unixgram", path)
		if !errors.Is(err, ErrLiveSocket) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("ListenPacket on a live unixgram socket = %v, want ErrLiveSocket", err)
		}
		roundTrip(t, live)
	})
	t.Run("live stream socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.sock")
		live, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer live.Close()
		_, err = (&Set{}).ListenPacket(ctx(t), "log", "unixgram", path)
		if !errors.Is(err, ErrLiveSocket) {
			t.Fatalf("ListenPacket on a live unix stream socket = %v, want ErrLiveSocket", err)
		}
		t.Log(err)
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("the live socket was disturbed: %v", err)
		}
		c.Close()
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.sock")
		if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := (&Set{}).ListenPacket(ctx(t), "log", "unixgram", path); !errors.Is(err, ErrNotSocket) {
			t.Fatalf("ListenPacket over a regular file = %v, want ErrNotSocket", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "data" {
			t.Fatal("the regular file was touched")
		}
	})
	t.Run("close keeps the file, unlink removes it", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.sock")
		h := &fakeHandoff{}
		s := &Set{Handoff: h}
		listenPacket(t, s, "log", "unixgram", path)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("Close removed the socket file the next generation needs: %v", err)
		}
		next := &Set{Handoff: h}
		listenPacket(t, next, "log", "unixgram", path)
		if next.Source("log") != "inherited" {
			t.Fatalf("source %q, want inherited", next.Source("log"))
		}
		if err := next.Unlink(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Unlink left the file: %v", err)
		}
	})
	t.Run("unlink spares a replaced file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "log.sock")
		var s Set
		listenPacket(t, &s, "log", "unixgram", path)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		other, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
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
	})
}

// Sockets systemd passed by name are taken by the call of their kind only:
// net.FilePacketConn and net.FileListener both accept a unix socket of
// either type.
func TestPacketSocketsFromSystemd(t *testing.T) {
	dir := t.TempDir()
	a, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	gramPath, streamPath := filepath.Join(dir, "gram.sock"), filepath.Join(dir, "stream.sock")
	gram, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: gramPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer gram.Close()
	stream, err := net.Listen("unix", streamPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	file := func(c filer) *os.File {
		f, err := c.File()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	s := &Set{Systemd: map[string][]*os.File{
		"dns":  {file(b.(filer)), file(a.(filer))}, // two ListenDatagram= lines
		"log":  {file(gram)},
		"web":  {file(gram)},                       // a datagram socket offered to Listen
		"sink": {file(stream.(*net.UnixListener))}, // a stream socket offered to ListenPacket
	}}
	port := a.LocalAddr().(*net.UDPAddr).Port
	dns := listenPacket(t, s, "dns", "udp", net.JoinHostPort("localhost", strconv.Itoa(port)))
	if s.Source("dns") != "systemd" || dns.LocalAddr().String() != a.LocalAddr().String() {
		t.Fatalf("dns: source %q, address %v; want systemd's socket at %v", s.Source("dns"), dns.LocalAddr(), a.LocalAddr())
	}
	log := listenPacket(t, s, "log", "unixgram", gramPath)
	if s.Source("log") != "systemd" {
		t.Fatalf("log: source %q, want systemd", s.Source("log"))
	}
	roundTrip(t, log)

	// Of the wrong type, they are not taken: binding finds the path in
	// use by a live socket, and the descriptors stay in the map.
	if ln, err := s.Listen(ctx(t), "web", "unix", gramPath); !errors.Is(err, ErrLiveSocket) {
		if err == nil {
			ln.Close()
		}
		t.Fatalf("Listen(web) on systemd's unixgram socket = %v (source %q), want ErrLiveSocket", err, s.Source("web"))
	}
	if pc, err := s.ListenPacket(ctx(t), "sink", "unixgram", streamPath); !errors.Is(err, ErrLiveSocket) {
		if err == nil {
			pc.Close()
		}
		t.Fatalf("ListenPacket(sink) on systemd's unix stream socket = %v (source %q), want ErrLiveSocket", err, s.Source("sink"))
	}
	if len(s.Systemd) != 3 || len(s.Systemd["dns"]) != 1 || len(s.Systemd["web"]) != 1 || len(s.Systemd["sink"]) != 1 {
		t.Fatalf("unused systemd sockets %v; want the 127.0.0.2 one under dns, web and sink", s.Systemd)
	}
	for _, files := range s.Systemd {
		for _, f := range files {
			f.Close()
		}
	}
}

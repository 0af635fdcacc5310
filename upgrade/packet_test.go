//go:build unix

package upgrade

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/drain"
)

// gate returns a gated conn on a fresh loopback socket, its ready channel,
// and a client socket that sends to it.
func gate(t *testing.T) (*gatedPacketConn, chan struct{}, net.PacketConn) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); client.Close() })
	ready := make(chan struct{})
	g := &gatedPacketConn{PacketConn: pc, sc: pc.(syscall.Conn), ready: ready,
		closed: make(chan struct{}), moved: make(chan struct{})}
	return g, ready, client
}

type readResult struct {
	n   int
	err error
	at  time.Time
}

func readAsync(c net.PacketConn) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		n, _, err := c.ReadFrom(make([]byte, 64))
		out <- readResult{n, err, time.Now()}
	}()
	return out
}

func TestPacketGateHoldsReadsUntilReady(t *testing.T) {
	g, ready, client := gate(t)
	if _, err := client.WriteTo([]byte("query"), g.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	got := readAsync(g)
	select {
	case r := <-got:
		t.Fatalf("ReadFrom returned %v, %v before the gate opened", r.n, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(ready)
	select {
	case r := <-got:
		if r.err != nil || r.n != len("query") {
			t.Fatalf("ReadFrom after the gate opened = %d, %v; want the queued datagram", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom still blocked 5s after the gate opened")
	}
	// The wrapper gives the socket's descriptor.
	raw, err := g.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Control(func(uintptr) {}); err != nil {
		t.Fatal(err)
	}
}

func TestPacketGateHonoursCloseAndDeadlines(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		g, _, _ := gate(t)
		got := readAsync(g)
		time.Sleep(50 * time.Millisecond)
		g.Close()
		select {
		case r := <-got:
			var op *net.OpError
			if !errors.Is(r.err, net.ErrClosed) || !errors.As(r.err, &op) {
				t.Fatalf("ReadFrom on a gated conn closed meanwhile = %v, want a *net.OpError wrapping net.ErrClosed", r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("ReadFrom still blocked 5s after Close")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		g, _, _ := gate(t)
		begin := time.Now()
		g.SetReadDeadline(begin.Add(100 * time.Millisecond))
		r := <-readAsync(g)
		var ne net.Error
		if !errors.Is(r.err, os.ErrDeadlineExceeded) || !errors.As(r.err, &ne) || !ne.Timeout() {
			t.Fatalf("ReadFrom past its deadline = %v, want a timeout wrapping os.ErrDeadlineExceeded", r.err)
		}
		if took := r.at.Sub(begin); took < 100*time.Millisecond || took > 3*time.Second {
			t.Fatalf("ReadFrom returned after %v, want about 100ms", took)
		}
		// A deadline already past fails at once; one set while waiting is
		// seen; removing it waits again.
		if _, _, err := g.ReadFrom(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("ReadFrom with a past deadline = %v", err)
		}
		g.SetDeadline(time.Time{})
		got := readAsync(g)
		time.Sleep(50 * time.Millisecond)
		g.SetReadDeadline(time.Now())
		select {
		case r := <-got:
			if !errors.Is(r.err, os.ErrDeadlineExceeded) {
				t.Fatalf("ReadFrom after SetReadDeadline(now) = %v", r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a deadline set while ReadFrom waited at the gate was not seen")
		}
	})
}

// The process test: a server (packetServerMain) with a udp and a unixgram
// socket, upgraded while clients send. The server answers every datagram
// with its PID and the inode of the socket it read it from.
const (
	envPacketServer = "HITLESS_TEST_PACKET_SERVER" // "1": play packetServerMain
	packetHold      = "hold"                       // mode: wait for the file "release" before Ready
)

// init, not TestMain (process_test.go), picks the role: it runs first, and
// the role is this file's own.
func init() {
	if os.Getenv(envPacketServer) == "1" {
		os.Exit(packetServerMain())
	}
}

func packetServerMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	pidFile := os.Getenv(envPIDFile)
	dir := filepath.Dir(pidFile)
	mode, _ := os.ReadFile(os.Getenv(envMode))
	upg, err := New(Options{PIDFile: pidFile, UpgradeTimeout: 20 * time.Second, DrainTimeout: 5 * time.Second, Logger: log,
		FDStore: os.Getenv(envFDStore) == "1"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer upg.Stop()
	ctx := context.Background()
	udp, err := upg.ListenPacket(ctx, "dns", "udp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	gram, err := upg.ListenPacket(ctx, "log", "unixgram", filepath.Join(dir, "log.sock"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := writeFileAtomic(filepath.Join(dir, "udp.addr"), udp.LocalAddr().String()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &echoServer{}
	for _, c := range []net.PacketConn{udp, gram} {
		srv.wg.Add(1)
		go srv.serve(c)
	}
	if strings.TrimSpace(string(mode)) == packetHold && upg.h.HasParent() {
		// Up, reading (held at the gate), and not ready until told.
		if err := writeFileAtomic(filepath.Join(dir, "held"), strconv.Itoa(os.Getpid())); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for end := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "release")); err == nil {
				break
			}
			if time.Now().After(end) {
				fmt.Fprintln(os.Stderr, "test server: not released within 20s")
				return 1
			}
		}
	}
	defer handleTestSignals(upg, log)()
	if err := upg.Run(ctx, srv); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// handleTestSignals upgrades on SIGHUP and stops on SIGTERM, logging a
// failed upgrade, until the returned function is called.
func handleTestSignals(upg *Upgrader, log *slog.Logger) (stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGTERM {
				upg.Stop()
				continue
			}
			uctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := upg.Upgrade(uctx)
			cancel()
			if err != nil {
				log.Error("upgrade failed", "err", err)
			}
		}
	}()
	return func() { signal.Stop(sigs) }
}

func writeFileAtomic(path, content string) error {
	if err := os.WriteFile(path+".tmp", []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// echoServer answers each datagram with "pid=P ino=I payload", and drains
// by stopping its reads (the socket stays open for the next generation).
type echoServer struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.PacketConn
	done  bool
}

func (s *echoServer) serve(c net.PacketConn) {
	defer s.wg.Done()
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	ino := socketInode(c)
	buf := make([]byte, 512)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			s.mu.Lock()
			done := s.done
			s.mu.Unlock()
			if done || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.WriteTo(fmt.Appendf(nil, "pid=%d ino=%d %s", os.Getpid(), ino, buf[:n]), from)
	}
}

func (s *echoServer) Drain(ctx context.Context) (drain.Report, error) {
	s.mu.Lock()
	s.done = true
	for _, c := range s.conns {
		c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	s.wg.Wait()
	return drain.Report{Name: "echo"}, nil
}

// socketInode is the inode of c's socket, through its syscall.Conn.
func socketInode(c net.PacketConn) uint64 {
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0
	}
	var st syscall.Stat_t
	raw.Control(func(fd uintptr) { syscall.Fstat(int(fd), &st) })
	return st.Ino
}

// answer is what the server said to one datagram.
type answer struct {
	pid int
	ino uint64
}

// packetClient sends to both of the server's sockets and collects answers.
type packetClient struct {
	t         *testing.T
	udp, gram net.PacketConn
	udpTo     net.Addr
	gramTo    net.Addr
}

func newPacketClient(t *testing.T, dir string) *packetClient {
	t.Helper()
	addr, err := os.ReadFile(filepath.Join(dir, "udp.addr"))
	if err != nil {
		t.Fatal(err)
	}
	udpTo, err := net.ResolveUDPAddr("udp", string(addr))
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gram, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "client.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close(); gram.Close() })
	return &packetClient{t: t, udp: udp, gram: gram, udpTo: udpTo,
		gramTo: &net.UnixAddr{Name: filepath.Join(dir, "log.sock"), Net: "unixgram"}}
}

// exchange sends n datagrams to each socket, a few milliseconds apart, and
// returns the answers by socket ("udp", "unixgram"), failing the test for
// any datagram not answered within 5s.
func (c *packetClient) exchange(n int) map[string][]answer {
	c.t.Helper()
	out := map[string][]answer{}
	for _, s := range []struct {
		name string
		conn net.PacketConn
		to   net.Addr
	}{{"udp", c.udp, c.udpTo}, {"unixgram", c.gram, c.gramTo}} {
		for i := range n {
			if _, err := s.conn.WriteTo([]byte("q"+strconv.Itoa(i)), s.to); err != nil {
				c.t.Fatalf("%s: sending: %v", s.name, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		buf := make([]byte, 512)
		for range n {
			s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, _, err := s.conn.ReadFrom(buf)
			if err != nil {
				c.t.Fatalf("%s: %d of %d datagrams answered: %v", s.name, len(out[s.name]), n, err)
			}
			var a answer
			if _, err := fmt.Sscanf(string(buf[:m]), "pid=%d ino=%d", &a.pid, &a.ino); err != nil {
				c.t.Fatalf("%s: answer %q: %v", s.name, buf[:m], err)
			}
			out[s.name] = append(out[s.name], a)
		}
	}
	return out
}

// TestPacketSocketsInheritedAndGated upgrades a server with a udp and a
// unixgram socket: the new generation reads the same sockets (same inode),
// and reads nothing before it is ready, even when it has been up and
// reading for a while: only the old one answers until then.
func TestPacketSocketsInheritedAndGated(t *testing.T) {
	ts := startTestServer(t, "udp", envPacketServer+"=1")
	first := ts.PID()
	c := newPacketClient(t, ts.dir)
	before := c.exchange(5)

	ts.setMode(packetHold)
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	held := waitFile(t, filepath.Join(ts.dir, "held"))
	second, _ := strconv.Atoi(held)
	// The new generation is up, its reads are held: every datagram is the
	// old generation's.
	during := c.exchange(20)
	for name, as := range during {
		early := 0
		for _, a := range as {
			if a.pid != first {
				early++
			}
		}
		if early > 0 {
			t.Errorf("%s: %d of %d datagrams were answered by pid %d before it was ready (the serving one is %d)", name, early, len(as), second, first)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if err := writeFileAtomic(filepath.Join(ts.dir, "release"), ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if pid, err := ts.WaitPIDChange(ctx, first); err != nil || pid != second {
		t.Fatalf("new generation: pid %d, %v; want %d", pid, err, second)
	}
	if _, err := ts.WaitExit(ctx, first); err != nil {
		t.Fatal(err)
	}
	after := c.exchange(5)
	for name, as := range after {
		for _, a := range as {
			if a.pid != second {
				t.Fatalf("%s: answered by %d after the upgrade, want %d", name, a.pid, second)
			}
			if a.ino != before[name][0].ino {
				t.Fatalf("%s: new generation reads socket inode %d, the old one read %d", name, a.ino, before[name][0].ino)
			}
		}
	}
	t.Logf("generations %d -> %d; socket inodes udp %d, unixgram %d", first, second, before["udp"][0].ino, before["unixgram"][0].ino)
	status, err := ts.Stop(ctx)
	if err != nil || status.ExitStatus() != 0 {
		t.Fatalf("stop: status %v, err %v; want exit 0", status, err)
	}
	if _, err := os.Lstat(filepath.Join(ts.dir, "log.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unixgram socket file left after stop: %v", err)
	}
}

// waitFile waits up to 20s for path to exist and returns its content.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil {
			return string(b)
		}
	}
	t.Fatalf("%s did not appear within 20s", path)
	return ""
}

//go:build unix

package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// packetDirEnv is the directory of TestPacketConnsHandedOver: its unixgram
// socket, and one JSON report per generation.
const packetDirEnv = "HITLESS_HANDOFF_TEST_PACKET_DIR"

func init() { roles["packet"] = packetRole }

// packetReport is what one generation of the packet role saw.
type packetReport struct {
	Gen    int               `json:"gen"`
	PID    int               `json:"pid"`
	Inodes map[string]uint64 `json:"inodes"` // socket inode by name
	Read   map[string]string `json:"read"`   // datagram read, by name
	Err    string            `json:"err"`
}

// packetRole is two generations. The first binds a udp and a unixgram
// socket, hands them over, queues a datagram on each, and starts the
// second, which takes both, reads the queued datagrams, and stops without
// an upgrade, as a service that stops for good does.
func packetRole() int {
	dir := os.Getenv(packetDirEnv)
	rep := packetReport{PID: os.Getpid(), Inodes: map[string]uint64{}, Read: map[string]string{}}
	write := func() int {
		b, _ := json.Marshal(rep)
		if err := writeWhole(filepath.Join(dir, fmt.Sprintf("gen%d.json", rep.Gen)), b); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if rep.Err != "" {
			return 1
		}
		return 0
	}
	// The socket file is "log" in the working directory, where a
	// datagram socket keyed as tableflip keys its own ("unixgram" and the
	// path) would be removed by it.
	if err := os.Chdir(dir); err != nil {
		rep.Err = err.Error()
		return write()
	}
	h, err := New(Options{ReadyTimeout: 10 * time.Second})
	if err != nil {
		rep.Err = err.Error()
		return write()
	}
	defer h.Close()
	rep.Gen = h.Generation()
	conns := map[string]net.PacketConn{}
	if !h.HasParent() {
		var udp, gram net.PacketConn
		udp, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err == nil {
			conns["dns"] = udp
			gram, err = net.ListenPacket("unixgram", filepath.Join(dir, "log"))
		}
		if err == nil {
			conns["log"] = gram
		}
		for name, c := range conns {
			if err == nil {
				err = h.AddPacketConn(name, c)
			}
			if err == nil {
				err = queueDatagram(c, "for the next generation: "+name)
			}
		}
		if err == nil {
			err = h.Ready()
		}
		if err == nil {
			_, err = h.Start()
		}
	} else {
		for _, name := range []string{"dns", "log"} {
			c, perr := h.PacketConn(name)
			if perr == nil && c == nil {
				perr = fmt.Errorf("nothing handed over under %q", name)
			}
			if err = perr; err != nil {
				break
			}
			conns[name] = c
			buf := make([]byte, 128)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, rerr := c.ReadFrom(buf)
			if err = rerr; err != nil {
				break
			}
			rep.Read[name] = string(buf[:n])
		}
		if err == nil {
			err = h.Ready()
		}
	}
	for name, c := range conns {
		rep.Inodes[name] = inodeOf(c)
		c.Close()
	}
	if err != nil {
		rep.Err = err.Error()
	}
	return write()
}

// queueDatagram sends text to c's own address, to be read by whoever
// reads c's socket.
func queueDatagram(c net.PacketConn, text string) error {
	a := c.LocalAddr()
	s, err := net.Dial(a.Network(), a.String())
	if err != nil {
		return err
	}
	defer s.Close()
	_, err = s.Write([]byte(text))
	return err
}

func inodeOf(c net.PacketConn) uint64 {
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0
	}
	var st syscall.Stat_t
	raw.Control(func(fd uintptr) { syscall.Fstat(int(fd), &st) })
	return st.Ino
}

// TestPacketConnsHandedOver: datagram sockets pass through real tableflip
// to the next generation, which reads what was queued on them, and the
// handoff never removes a unixgram socket's file (that is Set.Unlink's to
// decide), neither when a generation takes it nor when it stops.
func TestPacketConnsHandedOver(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := os.Create(filepath.Join(dir, "output"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := roleCmd(ctx, "packet", packetDirEnv+"="+dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		rep1, _ := os.ReadFile(filepath.Join(dir, "gen1.json"))
		rep2, _ := os.ReadFile(filepath.Join(dir, "gen2.json"))
		t.Fatalf("first generation: %v; its report: %s; the second's: %s\n%s", err, rep1, rep2, b)
	}
	var gens [2]packetReport
	for i := range gens {
		path := filepath.Join(dir, fmt.Sprintf("gen%d.json", i+1))
		var b []byte
		for end := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if b, err = os.ReadFile(path); err == nil || time.Now().After(end) {
				break
			}
		}
		if err != nil {
			out, _ := os.ReadFile(out.Name())
			t.Fatalf("generation %d wrote no report: %v\n%s", i+1, err, out)
		}
		if err := json.Unmarshal(b, &gens[i]); err != nil {
			t.Fatal(err)
		}
		if gens[i].Err != "" {
			t.Fatalf("generation %d: %s", i+1, gens[i].Err)
		}
	}
	// The second one has closed its handoff when it wrote its report; its
	// tableflip removes what it would remove moments later, so wait for
	// the process to be gone.
	for end := time.Now().Add(10 * time.Second); syscall.Kill(gens[1].PID, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("second generation %d still runs 10s after its report", gens[1].PID)
		}
	}
	for _, name := range []string{"dns", "log"} {
		if gens[0].Inodes[name] == 0 || gens[1].Inodes[name] != gens[0].Inodes[name] {
			t.Errorf("%s: socket inode %d in the second generation, %d in the first; want the same socket", name, gens[1].Inodes[name], gens[0].Inodes[name])
		}
		if want := "for the next generation: " + name; gens[1].Read[name] != want {
			t.Errorf("%s: the second generation read %q, want %q", name, gens[1].Read[name], want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "log")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = errors.New("removed")
		}
		t.Errorf("unixgram socket file after both generations ended: %v", err)
	}
}

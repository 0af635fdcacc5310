//go:build unix

package drain

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The routed test protocol: a datagram is "owner|flow|payload", owner in
// hexadecimal (empty: none), flow empty for none. Every generation answers
// "name payload".
func testClassify(d []byte) Route {
	parts := bytes.SplitN(d, []byte("|"), 3)
	if len(parts) != 3 {
		return Route{}
	}
	var r Route
	if b, err := hex.DecodeString(string(parts[0])); err == nil && len(b) == len(r.Owner) {
		copy(r.Owner[:], b)
	}
	if len(parts[1]) > 0 {
		r.Flow = parts[1]
	}
	return r
}

func seqpacketFiles(t testing.TB) (a, b *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fds[0])
	syscall.CloseOnExec(fds[1])
	return os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
}

// serveRouter answers every datagram r reads with "name payload" until r
// is closed; the returned function waits for that.
func serveRouter(t *testing.T, r *Router, name string) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := r.ReadFrom(buf)
			if err != nil {
				return
			}
			parts := strings.SplitN(string(buf[:n]), "|", 3)
			if _, err := r.WriteTo([]byte(name+" "+parts[len(parts)-1]), from); err != nil {
				t.Errorf("%s: answer: %v", name, err)
			}
		}
	}()
	t.Cleanup(func() { r.Close(); <-done })
	return func() { <-done }
}

// routedClient sends datagrams to a shared socket and says who answered.
type routedClient struct {
	t    *testing.T
	conn *net.UDPConn
	to   net.Addr
	n    int
}

func newRoutedClient(t *testing.T, to net.Addr) *routedClient {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &routedClient{t: t, conn: c, to: to}
}

// ask sends one datagram of owner and flow and returns the name of the
// generation that answered, or "" if none did within a second.
func (c *routedClient) ask(owner *RouterID, flow string) string {
	c.t.Helper()
	c.n++
	o := ""
	if owner != nil {
		o = hex.EncodeToString(owner[:])
	}
	payload := fmt.Sprintf("m%d", c.n)
	if _, err := c.conn.WriteTo([]byte(o+"|"+flow+"|"+payload), c.to); err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	c.conn.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			return ""
		}
		name, got, _ := strings.Cut(string(buf[:n]), " ")
		if got == payload {
			return name
		}
		// A late answer to an earlier datagram: that one was asked about already.
	}
}

// twoGenerations returns an old Router and a new one on one socket, the
// new one connected to the old one as upgrade connects them.
func twoGenerations(t testing.TB, handedOver bool) (old, new *Router, addr net.Addr) {
	t.Helper()
	a, b := listenShared(t, "udp")
	ours, theirs := seqpacketFiles(t)
	old, err := NewRouter(a, testClassify, RouterOptions{Name: "old", Successor: ours, HandedOver: func() bool { return handedOver }})
	if err != nil {
		t.Fatal(err)
	}
	new, err = NewRouter(b, testClassify, RouterOptions{Name: "new", Predecessor: theirs})
	if err != nil {
		t.Fatal(err)
	}
	return old, new, a.LocalAddr()
}

// TestRouterHandsOver: before the handover only the old generation reads;
// after it, the new one reads, and passes the old one every datagram its
// connections name and every datagram of a flow the old one began, while
// the old one drains; once the old one is gone, the new one keeps all.
func TestRouterHandsOver(t *testing.T) {
	old, new, addr := twoGenerations(t, true)
	serveRouter(t, old, "old")
	serveRouter(t, new, "new")
	c := newRoutedClient(t, addr)
	oldID, newID := old.ID(), new.ID()

	for i := range 10 {
		for _, d := range []struct {
			owner *RouterID
			flow  string
		}{{nil, ""}, {&newID, ""}, {nil, "pinned"}} {
			if got := c.ask(d.owner, d.flow); got != "old" {
				t.Fatalf("before the handover, datagram %d (owner %v, flow %q) answered by %q, want old", i, d.owner, d.flow, got)
			}
		}
	}

	release := make(chan struct{})
	old.Shutdown = func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { _, err := old.Drain(ctx); drained <- err }()

	// The first datagram read by the new generation tells that it reads.
	deadline := time.Now().Add(5 * time.Second)
	for c.ask(nil, "") != "new" {
		if time.Now().After(deadline) {
			t.Fatal("the new generation did not start reading within 5 s of the drain")
		}
	}
	for i := range 50 {
		for _, d := range []struct {
			owner *RouterID
			flow  string
			want  string
		}{
			{&oldID, "", "old"},                // a connection of the old generation
			{nil, "pinned", "old"},             // a flow it began before the handover
			{&oldID, "fresh-but-named", "old"}, // a flow it gave an ID to
			{nil, "", "new"},                   // names nobody
			{&newID, "", "new"},
			{nil, fmt.Sprintf("fresh%d", i), "new"}, // a flow begun after the handover
		} {
			if got := c.ask(d.owner, d.flow); got != d.want {
				t.Fatalf("during the drain, datagram %d (owner %v, flow %q) answered by %q, want %q", i, d.owner, d.flow, got, d.want)
			}
		}
	}
	if got := c.ask(nil, "fresh3"); got != "new" {
		t.Fatalf("a flow the new generation began went to %q", got)
	}
	if s := new.Stats(); s.Forwarded < 150 || s.Dropped != 0 {
		t.Errorf("new generation's stats %+v: want >= 150 forwarded, none dropped", s)
	}
	if s := old.Stats(); s.Received < 150 {
		t.Errorf("old generation's stats %+v: want >= 150 received", s)
	}

	close(release)
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	// The old generation has gone: nothing is passed to it any more.
	deadline = time.Now().Add(5 * time.Second)
	for c.ask(&oldID, "") != "new" {
		if time.Now().After(deadline) {
			t.Fatal("datagrams naming the old generation still went nowhere 5 s after it closed")
		}
	}
	if got := c.ask(nil, "pinned"); got != "new" {
		t.Fatalf("a flow of the gone generation answered by %q, want new", got)
	}
}

// TestRouterStopReadsOn: at a stop (no newer generation took over) the
// Router reads the socket on while Shutdown drains, since nobody else will.
func TestRouterStopReadsOn(t *testing.T) {
	old, new, addr := twoGenerations(t, false)
	serveRouter(t, old, "old")
	serveRouter(t, new, "new")
	c := newRoutedClient(t, addr)
	release := make(chan struct{})
	old.Shutdown = func(ctx context.Context) error { <-release; return nil }
	drained := make(chan error, 1)
	go func() { _, err := old.Drain(context.Background()); drained <- err }()
	for range 20 {
		if got := c.ask(nil, ""); got != "old" {
			t.Fatalf("while stopping, a datagram answered by %q, want old", got)
		}
	}
	close(release)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
}

// TestRouterPredecessorGone: a previous generation that dies before it
// hands over leaves the socket to the new one at once.
func TestRouterPredecessorGone(t *testing.T) {
	old, new, addr := twoGenerations(t, true)
	serveRouter(t, new, "new")
	c := newRoutedClient(t, addr)
	old.Close() // without Drain: as if it died
	deadline := time.Now().Add(5 * time.Second)
	for c.ask(nil, "") != "new" {
		if time.Now().After(deadline) {
			t.Fatal("the new generation did not read within 5 s of the previous one's death")
		}
	}
}

// TestRouterChannelMessages: the channel's datagram encoding survives
// both address families, and anything else is refused.
func TestRouterChannelMessages(t *testing.T) {
	for _, from := range []*net.UDPAddr{
		{IP: net.IPv4(192, 0, 2, 7), Port: 443},
		{IP: net.ParseIP("2001:db8::1"), Port: 65535},
	} {
		m := appendDatagram(nil, []byte("payload"), from)
		d, got, ok := parseDatagram(m)
		if !ok || string(d) != "payload" || !got.IP.Equal(from.IP) || got.Port != from.Port {
			t.Errorf("%v: parsed %q from %v (ok %v)", from, d, got, ok)
		}
	}
	for _, m := range [][]byte{nil, {msgDatagram}, {msgDatagram, 5, 1, 2, 3, 4, 5, 0, 1}, {msgDatagram, 4, 1, 2}, {msgFlows, 4}} {
		if _, _, ok := parseDatagram(m); ok {
			t.Errorf("%v parsed as a datagram", m)
		}
	}
}

func FuzzRouterChannel(f *testing.F) {
	f.Add(appendDatagram(nil, []byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}))
	f.Add([]byte{msgFlows, 3, 'a', 'b', 'c', 0})
	f.Fuzz(func(t *testing.T, m []byte) {
		if d, from, ok := parseDatagram(m); ok {
			// Oracle: re-encoding gives back the message exactly.
			if back := appendDatagram(nil, d, from); !bytes.Equal(back, m) {
				// A 16-byte form of an IPv4-mapped address comes back as 4 bytes.
				if !(m[1] == 16 && from.IP.To4() != nil) {
					t.Fatalf("%x parsed and re-encoded as %x", m, back)
				}
			}
		}
		r := &Router{flows: make(map[string]flow)}
		r.addFlows(m)
		for k := range r.flows {
			if k == "" || len(k) > 255 {
				t.Fatalf("flow %q recorded", k)
			}
		}
	})
}

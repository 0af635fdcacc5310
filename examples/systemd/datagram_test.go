//go:build linux

package systemd_test

// Datagram sockets from a real systemd: examples/udp takes its UDP socket
// from a socket unit (ListenDatagram=) or keeps it in the fd store, and
// reloads and restarts lose no query of a client that never resends.
//
// For mutation runs (a person checking that the tests catch a weakened
// service or unit; never set in CI), HITLESS_UDP_REPLACE='old=>new'
// replaces old with new in the unit files before they are installed,
// e.g. 'hitless-udp -addr=>hitless-udp -naive -addr' (the service closes
// its socket at once when upgraded or stopped, dropping what it has read),
// ' -fdstore=>' or 'ReceiveBuffer=8M=>'.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/sdtest"
)

// udpBinary builds examples/udp into binDir once, for every test that
// needs it (the two systemds' subtests run in parallel).
var udpBinary = sync.OnceValues(func() (string, error) {
	out := filepath.Join(binDir, "hitless-udp")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return out, harness.Build(ctx, "./examples/udp", out, false, "")
})

// installUDP is install for the units of examples/udp: file is the
// service's unit file, socket its socket unit's ("" for none). The unit's
// address is a free UDP port.
func installUDP(t *testing.T, sd *sdtest.Systemd, file, socket string, edit func(string) string) *unit {
	t.Helper()
	bin, err := udpBinary()
	if err != nil {
		t.Fatalf("building examples/udp: %v", err)
	}
	u := &unit{t: t, sd: sd, name: sd.UnitName("hitless-udp"), addr: freeUDPAddr(t)}
	share := sd.SharePath()
	u.bin, u.cli = filepath.Join(share, "hitless-udp"), filepath.Join(share, "hitless")
	u.copy(bin, u.bin)
	u.copy(filepath.Join(binDir, "hitless"), u.cli)
	u.runtimeDir = "/run/" + u.name
	text := renderUDP(u, file)
	if edit != nil {
		text = edit(text)
	}
	sd.WriteUnit(u.name+".service", text)
	if socket != "" {
		sd.WriteUnit(u.name+".socket", renderUDP(u, socket))
	}
	return u
}

// mutateUDP applies HITLESS_UDP_REPLACE.
func mutateUDP(t *testing.T, s string) string {
	if r := os.Getenv("HITLESS_UDP_REPLACE"); r != "" {
		old, new, _ := strings.Cut(r, "=>")
		t.Logf("mutation: %q -> %q (%d times)", old, new, strings.Count(s, old))
		s = strings.ReplaceAll(s, old, new)
	}
	return s
}

// renderUDP adapts a unit file of examples/udp to u's paths, name and
// address, after HITLESS_UDP_REPLACE.
func renderUDP(u *unit, file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		u.t.Fatal(err)
	}
	b = []byte(mutateUDP(u.t, string(b)))
	base := strings.TrimSuffix(strings.TrimSuffix(file, ".service"), ".socket")
	r := strings.NewReplacer(
		"/usr/local/bin/hitless-udp", u.bin, // before its prefix, /usr/local/bin/hitless
		"/usr/local/bin/hitless", u.cli,
		"127.0.0.1:5300", u.addr,
		"/run/"+base+"/", u.runtimeDir+"/",
		"RuntimeDirectory="+base, "RuntimeDirectory="+u.name,
		base+".socket", u.name+".socket",
		base+".service", u.name+".service",
	)
	return r.Replace(string(b))
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// udpSocket is what /proc/net/udp says of the sockets bound to a port:
// the container shares the host's network namespace, so the host sees the
// service's sockets.
type udpSocket struct {
	inode string
	drops int // datagrams the kernel dropped, its receive buffer full
}

func udpSockets(t *testing.T, addr string) []udpSocket {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("0100007F:%04X", p)
	var out []udpSocket
	for _, l := range strings.Split(string(b), "\n")[1:] {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
		f := strings.Fields(l)
		if len(f) >= 13 && f[1] == want {
			d, _ := strconv.Atoi(f[12])
			out = append(out, udpSocket{inode: f[9], drops: d})
		}
	}
	return out
}

// oneSocket returns the only socket bound to addr, failing t if there
// are none or several.
func oneSocket(t *testing.T, addr string) udpSocket {
	t.Helper()
	s := udpSockets(t, addr)
	if len(s) != 1 {
		t.Fatalf("%d UDP sockets bound to %s, want the one: %v", len(s), addr, s)
	}
	return s[0]
}

// queries is the outcome of queryLoad.
type queries struct {
	sent, answered, lost, dups, sendErrs int
	elapsed                              time.Duration
	pids                                 map[int]int // answers per (container) pid
	errs                                 []string
}

func (q queries) String() string {
	return fmt.Sprintf("%d queries in %v (%.0f/s): %d answered, %d lost, %d answered twice, %d not sent; answers from %d processes",
		q.sent, q.elapsed.Round(time.Millisecond), float64(q.sent)/q.elapsed.Seconds(), q.answered, q.lost, q.dups, q.sendErrs, len(q.pids))
}

// queryLoad sends examples/udp's queries ("<id> <text>", answered "<id>
// <pid> <text>") from workers sockets, rate per second in all, until stop
// is called (at most 2 minutes' worth); stop then waits up to timeout for
// the answers owed, and returns the counts. A client never resends: a
// query unanswered after timeout is lost.
func queryLoad(addr string, workers int, rate float64, timeout time.Duration) (stop func() queries) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var mu sync.Mutex
	q := queries{pids: make(map[int]int)}
	pending := make(map[string]time.Time)
	note := func(format string, args ...any) {
		if len(q.errs) < 10 {
			q.errs = append(q.errs, fmt.Sprintf(format, args...))
		}
	}
	var senders, readers sync.WaitGroup
	sendersDone := make(chan struct{})
	begin := time.Now()
	for w := range workers {
		c, err := net.Dial("udp", addr)
		if err != nil {
			mu.Lock()
			note("dial %s: %v", addr, err)
			mu.Unlock()
			continue
		}
		senders.Go(func() {
			per := rate / float64(workers)
			for n := 0; n < int(per)*120 && ctx.Err() == nil; {
				due := int(time.Since(begin).Seconds()*per) + 1
				for ; n < due && ctx.Err() == nil; n++ {
					id := fmt.Sprintf("%d-%d", w, n)
					mu.Lock()
					pending[id] = time.Now()
					q.sent++
					mu.Unlock()
					c.SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := fmt.Fprintf(c, "%s q%s", id, id); err != nil {
						mu.Lock()
						delete(pending, id)
						q.sendErrs++
						note("send %s: %v", id, err)
						mu.Unlock()
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
		readers.Go(func() {
			defer c.Close()
			buf := make([]byte, 1024)
			var until time.Time // set once the senders are done
			for {
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, err := c.Read(buf)
				if err != nil {
					mu.Lock()
					if !errors.Is(err, os.ErrDeadlineExceeded) {
						note("read: %v", err)
					}
					owed := len(pending)
					mu.Unlock()
					select {
					case <-sendersDone:
						if until.IsZero() {
							until = time.Now().Add(timeout)
						}
						if owed == 0 || time.Now().After(until) {
							return
						}
					default:
					}
					continue
				}
				f := strings.SplitN(string(buf[:n]), " ", 3)
				mu.Lock()
				sentAt, ok := pending[f[0]]
				switch {
				case len(f) != 3 || f[2] != "q"+f[0]:
					note("bad answer %q", buf[:n])
				case !ok:
					q.dups++
					note("answer to %s again: %q", f[0], buf[:n])
				default:
					delete(pending, f[0])
					if time.Since(sentAt) > timeout {
						q.lost++
						note("answer to %s after %v", f[0], time.Since(sentAt).Round(time.Millisecond))
					} else {
						q.answered++
						pid, _ := strconv.Atoi(f[1])
						q.pids[pid]++
					}
				}
				mu.Unlock()
			}
		})
	}
	return func() queries {
		cancel()
		senders.Wait()
		q.elapsed = time.Since(begin)
		close(sendersDone)
		readers.Wait()
		q.lost += len(pending)
		return q
	}
}

func noQueryLost(t *testing.T, q queries) {
	t.Helper()
	t.Log(q.String())
	if q.sent == 0 || q.lost != 0 || q.dups != 0 || q.sendErrs != 0 || q.answered != q.sent {
		t.Errorf("%s: %v", q, q.errs)
	}
}

// answered asks addr once and returns the pid that answered.
func answered(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("who x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	f := strings.Fields(string(buf[:n]))
	if err != nil || len(f) != 3 {
		t.Fatalf("asking %s: %q, %v", addr, buf[:n], err)
	}
	pid, _ := strconv.Atoi(f[1])
	return pid
}

// slowQueries makes each query take 5 ms to answer (-delay), so that about
// 10 are in hand at every reload and restart at 2000/s.
func slowQueries(unit string) string {
	lines := strings.Split(unit, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "ExecStart=") {
			lines[i] = l + " -delay 5ms"
		}
	}
	return strings.Join(lines, "\n")
}

// TestDatagramSocketUnit: examples/udp takes its UDP socket from a socket
// unit (ListenDatagram=); the first query starts it, and 5 reloads and 2
// restarts under ~2000 queries/s lose none. The socket (its inode) stays
// the same throughout: systemd's, shared by every generation.
func TestDatagramSocketUnit(t *testing.T) { sdtest.Each(t, testDatagramSocketUnit) }

func testDatagramSocketUnit(t *testing.T, sd *sdtest.Systemd) {
	u := installUDP(t, sd, "hitless-udp-activated.service", "hitless-udp-activated.socket", slowQueries)
	u.mustCtl("start", u.name+".socket")
	sock := oneSocket(t, u.addr)
	// The first query starts the service.
	stop := queryLoad(u.addr, 4, 2000, 5*time.Second)
	if err := waitFor(15*time.Second, func() bool { return u.prop("ActiveState") == "active" }); err != nil {
		stop()
		t.Fatalf("service not activated: %v\n%s", err, u.sd.Journal(u.name+".service"))
	}
	time.Sleep(200 * time.Millisecond)
	prev := u.mainPID()
	gens := []int{prev}
	for i, verb := range []string{"reload", "reload", "restart", "reload", "reload", "restart", "reload"} {
		begin := time.Now()
		u.mustCtl(verb, u.name+".service")
		main := u.mainPID()
		t.Logf("%s %d: %v, MainPID %d -> %d", verb, i+1, time.Since(begin).Round(time.Millisecond), prev, main)
		if main == prev || main == 0 || u.prop("ActiveState") != "active" {
			stop()
			t.Fatalf("%s %d: MainPID %d -> %d, unit %s", verb, i+1, prev, main, u.prop("ActiveState"))
		}
		if s := oneSocket(t, u.addr); s.inode != sock.inode {
			t.Errorf("%s %d: the socket on %s is inode %s, was %s: not systemd's any more", verb, i+1, u.addr, s.inode, sock.inode)
		}
		prev = main
		gens = append(gens, main)
		time.Sleep(200 * time.Millisecond)
	}
	q := stop()
	noQueryLost(t, q)
	for _, pid := range gens {
		if q.pids[pid] == 0 {
			t.Errorf("generation %d answered no query", pid)
		}
	}
	if s := oneSocket(t, u.addr); s.drops != 0 {
		t.Errorf("the kernel dropped %d datagrams (receive buffer full)", s.drops)
	}
	if j := u.sd.Journal(u.name + ".service"); strings.Contains(j, "address already in use") {
		t.Fatalf("the service bound its own socket instead of taking systemd's:\n%s", j)
	}
	u.mustCtl("stop", u.name+".service", u.name+".socket")
}

// TestDatagramFDStore: without a socket unit, examples/udp keeps the UDP
// socket it bound in systemd's fd store (-fdstore), and a restart between
// two reloads loses no query under ~2000 queries/s: the socket outlives
// the processes, and what arrives while none runs waits in it.
func TestDatagramFDStore(t *testing.T) { sdtest.Each(t, testDatagramFDStore) }

func testDatagramFDStore(t *testing.T, sd *sdtest.Systemd) {
	u := installUDP(t, sd, "hitless-udp.service", "", slowQueries)
	u.mustCtl("start", u.name+".service")
	sock := oneSocket(t, u.addr)
	stop := queryLoad(u.addr, 4, 2000, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	prev := u.mainPID()
	for i, verb := range []string{"reload", "restart", "reload"} {
		begin := time.Now()
		u.mustCtl(verb, u.name+".service")
		main := u.mainPID()
		t.Logf("%s %d: %v, MainPID %d -> %d", verb, i+1, time.Since(begin).Round(time.Millisecond), prev, main)
		if main == prev || main == 0 || u.prop("ActiveState") != "active" {
			stop()
			t.Fatalf("%s %d: MainPID %d -> %d, unit %s", verb, i+1, prev, main, u.prop("ActiveState"))
		}
		if pid := answered(t, u.addr); pid != main {
			t.Errorf("%s %d: pid %d answered, want MainPID %d", verb, i+1, pid, main)
		}
		if s := oneSocket(t, u.addr); s.inode != sock.inode {
			t.Errorf("%s %d: the socket on %s is inode %s, was %s: not the stored one", verb, i+1, u.addr, s.inode, sock.inode)
			sock = s
		}
		prev = main
		time.Sleep(200 * time.Millisecond)
	}
	noQueryLost(t, stop())
	if s := oneSocket(t, u.addr); s.drops != 0 {
		t.Errorf("the kernel dropped %d datagrams (receive buffer full)", s.drops)
	}
	t.Logf("NFileDescriptorStore=%s", u.prop("NFileDescriptorStore"))
	u.mustCtl("stop", u.name+".service")
}

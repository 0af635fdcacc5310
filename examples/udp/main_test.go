//go:build unix

package main

// These tests build this program (with -race) and upgrade it 20 times
// while clients send it datagrams, counting every one that goes
// unanswered (UDP) or never reaches the sink's log (unixgram). The
// clients never resend: one datagram lost anywhere is one counted.
//
// HITLESS_UDP_NAIVE=1 runs the server with -naive (it closes its sockets
// at once when upgraded, dropping what it has read): the mutation run,
// in which both tests must fail and say how many datagrams were lost.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
)

var binary string // built once in TestMain

func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./examples/udp", true, &binary)) }

const (
	upgrades = 20
	// handling is each datagram's handling time (-delay): at the rates
	// below, about 10 datagrams are being handled at every upgrade, which
	// a drain must let finish.
	handling = 5 * time.Millisecond
	// answerTimeout is how long a client waits for an answer before it
	// counts the request as lost; it does not resend.
	answerTimeout = 3 * time.Second
)

type server struct {
	*harness.Server
	dir, log string
}

// start runs the server with args (plus -naive with HITLESS_UDP_NAIVE=1).
func start(t *testing.T, args ...string) *server {
	t.Helper()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "udp.pid")
	// A drain takes milliseconds here; -drain-timeout bounds what a stuck
	// one costs (and cuts it, which fails the test: exit status 1).
	args = append([]string{"-pidfile", pidFile, "-delay", handling.String(), "-drain-timeout", "5s", "-read-buffer", "4194304"}, args...)
	if os.Getenv("HITLESS_UDP_NAIVE") == "1" {
		t.Log("mutation: the server runs with -naive")
		args = append(args, "-naive")
	}
	s, logPath := harness.StartT(t, harness.Config{Binary: binary, Args: args, PIDFile: pidFile})
	return &server{Server: s, dir: dir, log: logPath}
}

// freeUDPAddr returns a loopback UDP address nobody is bound to.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// upgradeTimes upgrades s n times, 100 ms apart, and returns the pids of
// every generation, the first included; it stops the load and fails t on
// the first failed upgrade.
func upgradeTimes(t *testing.T, s *server, n int, stopLoad func()) (pids []int, took []time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pids = []int{s.PID()}
	for i := range n {
		u, err := s.Upgrade(ctx)
		if err != nil {
			stopLoad()
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		if u.OldReaped && (!u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0) {
			t.Errorf("upgrade %d: old generation ended with %v, want exit status 0", i+1, u.OldStatus)
		}
		pids = append(pids, u.New)
		took = append(took, u.OldExited.Sub(u.Signalled))
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(took)
	return pids, took
}

// stop stops s with SIGTERM and checks that it drained cleanly.
func (s *server) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if st, err := s.Stop(ctx); err != nil || st.ExitStatus() != 0 {
		t.Errorf("stop: %v, %v; want exit status 0", st, err)
	}
}

// pace calls send(i) for i = 0, 1, ... at rate per second until ctx is
// done, max calls are made or send returns false, and returns how many it
// made. It sends in bursts every 2 ms to keep up the rate whatever the
// timer's resolution.
func pace(ctx context.Context, rate float64, max int, send func(i int) bool) int {
	begin := time.Now()
	n := 0
	for n < max && ctx.Err() == nil {
		due := min(int(time.Since(begin).Seconds()*rate)+1, max)
		for ; n < due && ctx.Err() == nil; n++ {
			if !send(n) {
				return n + 1
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return n
}

// udpLoad counts the requests of udpClients.
type udpLoad struct {
	mu       sync.Mutex
	pending  map[string]time.Time // id -> when sent, until answered
	sent     int
	answered int
	late     int         // answered after answerTimeout: counted as lost too
	dups     int         // answers to a request already answered (or never sent)
	bad      int         // answers that do not echo the request's text
	sendErrs int         // requests that could not be sent
	pids     map[int]int // answers per generation
	errs     []string
	elapsed  time.Duration // of the sending
}

func (l *udpLoad) note(format string, args ...any) {
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

// udpClients sends from workers sockets, rate datagrams per second in
// all, until ctx is done (at most a minute's worth), then waits up to
// answerTimeout for the answers still owed.
func udpClients(ctx context.Context, t *testing.T, addr string, workers int, rate float64) *udpLoad {
	l := &udpLoad{pending: make(map[string]time.Time), pids: make(map[int]int)}
	var wg sync.WaitGroup
	var sendersDone atomic.Bool
	var senders sync.WaitGroup
	begin := time.Now()
	for w := range workers {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Error(err)
			continue
		}
		c.(*net.UDPConn).SetReadBuffer(4 << 20)
		senders.Add(1)
		wg.Go(func() {
			defer senders.Done()
			pace(ctx, rate/float64(workers), int(rate/float64(workers))*60, func(i int) bool {
				id := fmt.Sprintf("%d-%d", w, i)
				l.mu.Lock()
				l.pending[id] = time.Now()
				l.sent++
				l.mu.Unlock()
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := fmt.Fprintf(c, "%s text-of-%s", id, id); err != nil {
					l.mu.Lock()
					delete(l.pending, id)
					l.sendErrs++
					l.note("send %s: %v", id, err)
					l.mu.Unlock()
				}
				return true
			})
		})
		wg.Go(func() {
			defer c.Close()
			l.read(c, &sendersDone)
		})
	}
	senders.Wait()
	l.elapsed = time.Since(begin)
	sendersDone.Store(true)
	wg.Wait()
	return l
}

// read takes the answers on c until the senders are done and nothing is
// owed any more or answerTimeout has passed since.
func (l *udpLoad) read(c net.Conn, sendersDone *atomic.Bool) {
	buf := make([]byte, 2048)
	var doneAt time.Time
	for {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				l.mu.Lock()
				l.note("read on %v: %v", c.LocalAddr(), err)
				l.mu.Unlock()
			}
			if sendersDone.Load() {
				if doneAt.IsZero() {
					doneAt = time.Now()
				}
				l.mu.Lock()
				owed := len(l.pending)
				l.mu.Unlock()
				if owed == 0 || time.Since(doneAt) > answerTimeout {
					return
				}
			}
			continue
		}
		f := strings.SplitN(string(buf[:n]), " ", 3)
		l.mu.Lock()
		switch sentAt, ok := l.pending[f[0]]; {
		case len(f) != 3 || f[2] != "text-of-"+f[0]:
			l.bad++
			l.note("bad answer %q", buf[:n])
		case !ok:
			l.dups++
			l.note("answer to %s again (or to a request never sent): %q", f[0], buf[:n])
		default:
			delete(l.pending, f[0])
			if time.Since(sentAt) > answerTimeout {
				l.late++
				l.note("answer to %s after %v", f[0], time.Since(sentAt).Round(time.Millisecond))
			} else {
				l.answered++
			}
			pid, _ := strconv.Atoi(f[1])
			l.pids[pid]++
		}
		l.mu.Unlock()
	}
}

// TestUDPThroughUpgrades: at ~2000 requests/s from 4 sockets, through 20
// upgrades, every request is answered exactly once, and every generation
// answers some.
func TestUDPThroughUpgrades(t *testing.T) {
	const rate = 2000
	addr := freeUDPAddr(t)
	s := start(t, "-addr", addr)
	loadCtx, stopLoad := context.WithTimeout(context.Background(), time.Minute)
	defer stopLoad()
	res := make(chan *udpLoad, 1)
	go func() { res <- udpClients(loadCtx, t, addr, 4, rate) }()
	time.Sleep(300 * time.Millisecond)
	pids, took := upgradeTimes(t, s, upgrades, func() { stopLoad(); <-res })
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	l := <-res
	lost := len(l.pending) + l.late
	t.Logf("%d upgrades (SIGHUP to old generation gone: median %v, max %v); %d requests in %v (%.0f/s) from 4 sockets: "+
		"%d answered, %d lost (%d never answered, %d after %v), %d answered twice, %d bad, %d not sent; answers from %d generations",
		upgrades, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
		l.sent, l.elapsed.Round(time.Millisecond), float64(l.sent)/l.elapsed.Seconds(),
		l.answered, lost, len(l.pending), l.late, answerTimeout, l.dups, l.bad, l.sendErrs, len(l.pids))
	if lost != 0 || l.dups != 0 || l.bad != 0 || l.sendErrs != 0 {
		t.Errorf("%d requests lost, %d answered twice, %d bad answers, %d not sent: %v", lost, l.dups, l.bad, l.sendErrs, l.errs)
	}
	if rate := float64(l.sent) / l.elapsed.Seconds(); rate < 1500 {
		t.Errorf("sent %.0f requests/s, want about 2000", rate)
	}
	for i, pid := range pids {
		if l.pids[pid] == 0 {
			t.Errorf("generation %d (pid %d) answered nothing", i, pid)
		}
	}
	s.stop(t)
	checkReports(t, s, "udp", upgrades+1, l.sent, l.sent)
}

// TestSinkThroughUpgrades: numbered datagrams sent to the unixgram sink
// throughout 20 upgrades each land in its log exactly once.
//
// A unix datagram socket does not drop what its receive queue cannot take:
// the sender blocks until a reader makes room (net.unix.max_dgram_qlen).
// So nothing here is lost to a full queue, and the rate is what the server
// takes; a datagram is either still queued, read by a generation, or lost
// because a generation read it and did not write it (which the naive
// mode does at every upgrade). A send that blocks for 5 s (nobody reading)
// fails the test as "not sent", apart from the lost count.
func TestSinkThroughUpgrades(t *testing.T) {
	const rate = 2000
	s0 := t.TempDir()
	sock, logFile := filepath.Join(s0, "sink.sock"), filepath.Join(s0, "sink.log")
	s := start(t, "-addr", "", "-sink", sock, "-sink-log", logFile)

	loadCtx, stopLoad := context.WithTimeout(context.Background(), time.Minute)
	defer stopLoad()
	type result struct {
		sent, unsent int
		elapsed      time.Duration
		errs         []string
	}
	res := make(chan result, 1)
	go func() {
		var r result
		c, err := net.Dial("unixgram", sock)
		if err != nil {
			r.errs = append(r.errs, err.Error())
			res <- r
			return
		}
		defer c.Close()
		begin := time.Now()
		r.sent = pace(loadCtx, rate, rate*60, func(i int) bool {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintf(c, "seq %d\n", i); err != nil {
				// Nobody read for 5 s: the sink is stuck; more sends
				// would only wait as long.
				r.unsent++
				r.errs = append(r.errs, fmt.Sprintf("seq %d: %v", i, err))
				return false
			}
			return true
		})
		r.elapsed = time.Since(begin)
		res <- r
	}()
	time.Sleep(300 * time.Millisecond)
	_, took := upgradeTimes(t, s, upgrades, func() { stopLoad(); <-res })
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	r := <-res

	// The last datagrams are still being handled: wait for them (bounded),
	// then stop the server, which writes every line it has read.
	var lines map[int]int
	var dups, malformed int
	count := func() int {
		b, _ := os.ReadFile(logFile)
		lines, dups, malformed = make(map[int]int), 0, 0
		for l := range bytes.Lines(b) {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(string(l), "seq "), "\n"))
			if err != nil {
				malformed++
				continue
			}
			if lines[n]++; lines[n] == 2 {
				dups++
			}
		}
		return len(lines)
	}
	for deadline := time.Now().Add(5 * time.Second); count() < r.sent-r.unsent && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	s.stop(t)
	count()
	var lost []int
	for i := range r.sent {
		if lines[i] == 0 {
			lost = append(lost, i)
		}
	}
	t.Logf("%d upgrades (SIGHUP to old generation gone: median %v, max %v); %d datagrams sent in %v (%.0f/s), %d not sent; "+
		"the log holds %d of them: %d lost, %d twice, %d malformed lines",
		upgrades, took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond),
		r.sent, r.elapsed.Round(time.Millisecond), float64(r.sent)/r.elapsed.Seconds(), r.unsent,
		len(lines), len(lost)-r.unsent, dups, malformed)
	if len(lost) > r.unsent || dups != 0 || malformed != 0 || r.unsent != 0 {
		t.Errorf("%d datagrams lost (first: %v), %d logged twice, %d malformed lines, %d not sent %v",
			len(lost)-r.unsent, lost[:min(len(lost), 10)], dups, malformed, r.unsent, r.errs)
	}
	if rate := float64(r.sent) / r.elapsed.Seconds(); rate < 1500 {
		t.Errorf("sent %.0f datagrams/s, want about 2000", rate)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sink's socket file is still there after the stop: %v", err)
	}
	checkReports(t, s, "sink", upgrades+1, r.sent-r.unsent, 0)
}

// reports reads the drain reports of server name (udp or sink) from the
// log, logs the first and the last, and returns their sums of the
// counters named (e.g. "datagrams": report.datagrams=N); a counter no
// report has is absent from sums.
func reports(t *testing.T, path, name string, counters ...string) (n int, sums map[string]int) {
	t.Helper()
	b, _ := os.ReadFile(path)
	sums = make(map[string]int)
	var first, last string
	for l := range strings.Lines(string(b)) {
		i := strings.Index(l, "report.name="+name+" ")
		if i < 0 || !strings.Contains(l, "drain report") {
			continue
		}
		n++
		if first == "" {
			first = strings.TrimSpace(l[i:])
		}
		last = strings.TrimSpace(l[i:])
		for _, f := range strings.Fields(l[i:]) {
			for _, c := range counters {
				if v, ok := strings.CutPrefix(f, "report."+c+"="); ok {
					x, _ := strconv.Atoi(v)
					sums[c] += x
				}
			}
		}
	}
	t.Logf("%d drain reports of %s; first and last:\n%s\n%s", n, name, first, last)
	return n, sums
}

// checkReports checks that the drain reports of every generation (those
// of the upgrades and the stop's) count, in all, want datagrams read
// and answers written (the UDP server's; the sink writes none).
func checkReports(t *testing.T, s *server, name string, generations, datagrams, answers int) {
	t.Helper()
	n, sums := reports(t, s.log, name, "datagrams", "answers")
	if n != generations {
		t.Errorf("%d drain reports of %s, want one per generation: %d", n, name, generations)
	}
	if got, ok := sums["datagrams"]; ok && got != datagrams {
		t.Errorf("the drain reports of %s count %d datagrams read, want %d", name, got, datagrams)
	}
	if got, ok := sums["answers"]; ok && got != answers {
		t.Errorf("the drain reports of %s count %d answers, want %d", name, got, answers)
	}
}

// TestStopAnswersWhatWasRead: a stop lets a datagram read before it be
// handled and answered (the drain waits for its 500 ms), and exits 0.
func TestStopAnswersWhatWasRead(t *testing.T) {
	addr := freeUDPAddr(t)
	s := start(t, "-addr", addr, "-delay", "500ms")
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("1 hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // read, and being handled
	pid := s.PID()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if want := fmt.Sprintf("1 %d hello", pid); err != nil || string(buf[:n]) != want {
		t.Errorf("after SIGTERM, got %q, %v; want %q", buf[:n], err, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if st, err := s.WaitExit(ctx, pid); err != nil || st.ExitStatus() != 0 {
		t.Errorf("exit: %v, %v; want exit status 0", st, err)
	}
}

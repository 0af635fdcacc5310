package upgrade

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSystemd receives notify messages as systemd does: with the sender's
// credentials (SO_PASSCRED), closing attached descriptors once read (which
// releases a BARRIER).
type fakeSystemd struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
	done chan struct{}
}

type notifyMsg struct {
	at    time.Time
	pid   int
	text  string
	socks []string // local addresses of attached sockets
}

func startFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := conn.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	f := &fakeSystemd{path: path, conn: conn, done: make(chan struct{})}
	go f.run()
	t.Cleanup(func() { conn.Close(); <-f.done })
	return f
}

func (f *fakeSystemd) run() {
	defer close(f.done)
	buf, oob := make([]byte, 4096), make([]byte, 4096)
	for {
		n, oobn, _, _, err := f.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		m := notifyMsg{at: time.Now(), text: string(buf[:n])}
		cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, c := range cmsgs {
			if cred, err := unix.ParseUnixCredentials(&c); err == nil {
				m.pid = int(cred.Pid)
			}
			if fds, err := unix.ParseUnixRights(&c); err == nil {
				for _, fd := range fds {
					if sa, err := unix.Getsockname(fd); err == nil {
						if in, ok := sa.(*unix.SockaddrInet4); ok {
							m.socks = append(m.socks, net.JoinHostPort(net.IP(in.Addr[:]).String(), strconv.Itoa(in.Port)))
						}
					}
					unix.Close(fd)
				}
			}
		}
		f.mu.Lock()
		f.msgs = append(f.msgs, m)
		f.mu.Unlock()
	}
}

func (f *fakeSystemd) messages() []notifyMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]notifyMsg(nil), f.msgs...)
}

// TestSystemdIsToldTheTruth checks, across upgrades and a stop, what a
// generation tells systemd and when: the main PID moves to each new
// generation (claimed by it and handed over by its predecessor, with a
// barrier), a reload is announced and concluded, watchdog pings come from
// the current main process without a gap, and the stop is announced.
func TestSystemdIsToldTheTruth(t *testing.T) {
	sd := startFakeSystemd(t)
	const watchdog = 300 * time.Millisecond
	ts := startTestServer(t, "tcp", "NOTIFY_SOCKET="+sd.path,
		"WATCHDOG_USEC="+strconv.Itoa(int(watchdog.Microseconds())), "WATCHDOG_PID=1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pids := []int{ts.PID()}
	for range 3 {
		up, err := ts.Upgrade(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r := ts.nextResult(); r.Err != "" {
			t.Fatal(r.Err)
		}
		pids = append(pids, up.New)
		time.Sleep(2 * watchdog)
	}
	last := pids[len(pids)-1]
	// WATCHDOG_PID names the serving generation, not the first one.
	resp, err := http.Get("http://" + ts.addr + "/?env=WATCHDOG_PID")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("X-Env"), strconv.Quote(strconv.Itoa(last)); got != want {
		t.Errorf("WATCHDOG_PID in generation %d is %s, want %s", last, got, want)
	}
	if _, err := ts.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := sd.messages()
	has := func(pid int, parts ...string) bool {
		for _, m := range msgs {
			if m.pid != pid {
				continue
			}
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(m.text, p)
			}
			if ok {
				return true
			}
		}
		return false
	}
	if !has(pids[0], "READY=1", "STATUS=serving, generation 1") {
		t.Error("first generation did not report READY=1 with its status")
	}
	for i := 1; i < len(pids); i++ {
		old, new := pids[i-1], pids[i]
		if !has(old, "RELOADING=1", "MONOTONIC_USEC=", "STATUS=upgrading to generation "+strconv.Itoa(i+1)) {
			t.Errorf("generation %d did not announce the reload", i)
		}
		if !has(new, "MAINPID="+strconv.Itoa(new), "READY=1", "STATUS=serving, generation "+strconv.Itoa(i+1)) {
			t.Errorf("generation %d (pid %d) did not claim the main PID", i+1, new)
		}
		if !has(old, "MAINPID="+strconv.Itoa(new), "READY=1") || !has(old, "BARRIER=1") {
			t.Errorf("generation %d did not hand the main PID to %d with a barrier", i, new)
		}
	}
	if !has(last, "STOPPING=1") || !has(last, "EXTEND_TIMEOUT_USEC=", "STATUS=stopping: draining, ") {
		t.Error("the last generation did not announce its stop")
	}
	// Watchdog: pings from the generation that is main at that moment,
	// never further apart than WATCHDOG_USEC.
	var prev time.Time
	pings := 0
	for _, m := range msgs {
		if m.text != "WATCHDOG=1" {
			continue
		}
		pings++
		if !prev.IsZero() && m.at.Sub(prev) > watchdog {
			t.Errorf("watchdog gap of %v at %v (limit %v)", m.at.Sub(prev), m.at.Format(time.StampMilli), watchdog)
		}
		prev = m.at
	}
	if pings < 10 {
		t.Errorf("only %d watchdog pings", pings)
	}
	for _, p := range pids {
		if !has(p, "WATCHDOG=1") {
			t.Errorf("generation pid %d never pinged the watchdog", p)
		}
	}

}

func TestFDStoreKeepsTheListeners(t *testing.T) {
	sd := startFakeSystemd(t)
	ts := startTestServer(t, "tcp", "NOTIFY_SOCKET="+sd.path, envFDStore+"=1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ts.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	ts.nextResult()
	stored := 0
	for _, m := range sd.messages() {
		if m.text == "FDSTORE=1\nFDNAME=http" {
			if len(m.socks) != 1 || m.socks[0] != ts.addr {
				t.Fatalf("FDSTORE for http carried %v, want the socket at %s", m.socks, ts.addr)
			}
			stored++
		}
	}
	if stored < 2 {
		t.Fatalf("the http socket was stored %d times, want once per generation", stored)
	}
}

// TestRefusedSignalIsAnswered: a SIGHUP that the crash-loop back-off
// refuses is answered to systemd as a failed upgrade is: RELOADING=1 with
// MONOTONIC_USEC=, then READY=1 with the reason. Under Type=notify-reload
// systemd sent that SIGHUP and waits for the answer; without it the
// reload hung until TimeoutStartSec= and then failed as timed out
// (measured on systemd 257: examples/systemd TestNotifyReload).
func TestRefusedSignalIsAnswered(t *testing.T) {
	sd := startFakeSystemd(t)
	ts := startTestServer(t, "tcp", "NOTIFY_SOCKET="+sd.path, envCrashLp+"=1", envSignals+"=library")
	pid := ts.PID()
	ts.setMode("exit")
	// The messages pid sent, from the first one containing after on.
	since := func(after string) []string {
		var texts []string
		for _, m := range sd.messages() {
			if m.pid == pid && (len(texts) > 0 || strings.Contains(m.text, after)) {
				texts = append(texts, m.text)
			}
		}
		return texts
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s; messages: %q", what, since(""))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("the failed upgrade", func() bool { return len(since("STATUS=upgrade failed")) > 0 })
	// Within the back-off (1 s in the test server).
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("the refusal", func() bool { return len(since("STATUS=upgrade refused")) > 0 })
	after := since("STATUS=upgrade failed")
	var reloading, refused int = -1, -1
	for i, m := range after {
		switch {
		case strings.Contains(m, "RELOADING=1") && strings.Contains(m, "MONOTONIC_USEC="):
			reloading = i
		case strings.Contains(m, "READY=1") && strings.Contains(m, "STATUS=upgrade refused: 1 failed in a row"):
			refused = i
		}
	}
	if reloading < 1 || refused <= reloading {
		t.Fatalf("after the failure, want RELOADING=1 with MONOTONIC_USEC=, then READY=1 with the refusal; got %q", after)
	}
}

// TestHandOverResetsTheWatchdog: just before it hands the main PID over,
// the old generation pings the watchdog. Under NotifyAccess=main systemd
// refuses the new generation's pings until it is the main process, and
// the old one stops pinging once it has handed over: without this ping,
// generations that each live shorter than the ping interval let the
// watchdog fire (seen on systemd 257: examples/systemd TestNotifyAccess).
func TestHandOverResetsTheWatchdog(t *testing.T) {
	sd := startFakeSystemd(t)
	// A long period: the periodic pings come only as each generation
	// becomes ready, never during an upgrade.
	ts := startTestServer(t, "tcp", "NOTIFY_SOCKET="+sd.path, "WATCHDOG_USEC=60000000", "WATCHDOG_PID=1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 2 {
		old := ts.PID()
		up, err := ts.Upgrade(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r := ts.nextResult(); r.Err != "" {
			t.Fatal(r.Err)
		}
		// From old: RELOADING=1, then WATCHDOG=1, then the hand-over.
		step := 0
		for _, m := range sd.messages() {
			if m.pid != old {
				continue
			}
			switch {
			case step == 0 && strings.Contains(m.text, "RELOADING=1"):
				step = 1
			case step == 1 && m.text == "WATCHDOG=1":
				step = 2
			case step == 2 && strings.Contains(m.text, "MAINPID="+strconv.Itoa(up.New)):
				step = 3
			}
		}
		if step != 3 {
			t.Fatalf("upgrade %d: generation pid %d did not ping the watchdog between announcing the reload and handing over to %d (step %d)", i+1, old, up.New, step)
		}
	}
}

//go:build linux

package systemd_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitlessgo/hitless/internal/loadgen"
	"github.com/hitlessgo/hitless/internal/sdtest"
)

// TestCrashLosesNoQueuedConnection: with the listening socket in systemd's
// fd store, a SIGKILL of the only generation loses no connection that was
// waiting to be accepted. The main process (an upgraded generation, not
// systemd's child) is stopped (SIGSTOP), so that 20 requests, each on its
// own connection, wait in the socket's accept queue (the test checks the
// queue's length), then killed (SIGKILL). systemd restarts the unit, the new
// process takes the socket back from the store, and every one of the 20
// must be answered 200 by it. Keep-alive and new-connection load runs
// throughout: nothing may be refused, and the only failures allowed are
// requests on the connections the killed process had accepted, read from
// its descriptors while it was stopped.
//
// TestRestartAndCrashLoseNoConnection kills the main process too, but
// counts only refused connections: a queued connection lost with the
// socket (it would be reset, not refused) would pass it.
func TestCrashLosesNoQueuedConnection(t *testing.T) { sdtest.Each(t, testCrashLosesNoQueuedConnection) }

func testCrashLosesNoQueuedConnection(t *testing.T, sd *sdtest.Systemd) {
	const queued = 20
	u := install(t, sd, "hitless-http.service", nil)
	u.mustCtl("start", u.name+".service")
	first := u.mainPID()
	u.mustCtl("reload", u.name+".service")
	main := u.mainPID()
	if main == first {
		t.Fatalf("reload: MainPID still %d", main)
	}
	if err := waitFor(15*time.Second, func() bool { _, err := u.sd.HostPID(first); return err != nil }); err != nil {
		t.Fatalf("the first generation (pid %d) still runs after the reload: %v", first, err)
	}
	host, err := u.sd.HostPID(main)
	if err != nil {
		t.Fatal(err)
	}

	stop := sync.OnceValue(load(t, u.addr,
		loadgen.Config{Kind: loadgen.KeepAlive, Workers: 2, Pace: time.Millisecond},
		loadgen.Config{Kind: loadgen.NewConn, Workers: 2, Pace: time.Millisecond}))
	defer stop() // after a t.Fatal
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(host, syscall.SIGSTOP); err != nil {
		stop()
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			syscall.Kill(host, syscall.SIGCONT)
		}
	}()
	if err := waitFor(5*time.Second, func() bool { return procState(host) == 'T' }); err != nil {
		stop()
		t.Fatalf("pid %d (host %d) not stopped: %v", main, host, err)
	}
	held := heldConns(host, u.addr)

	// The queued requests: written at once, answered once a process
	// accepts them.
	type answer struct {
		port, code, pid int
		err             error
	}
	answers := make(chan answer, queued)
	for range queued {
		c, err := net.DialTimeout("tcp", u.addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial while the main process is stopped: %v", err)
		}
		defer c.Close()
		a := answer{port: c.LocalAddr().(*net.TCPAddr).Port}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", u.addr); err != nil {
			t.Fatal(err)
		}
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				resp.Body.Close()
				a.code = resp.StatusCode
				a.pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
			}
			a.err = err
			answers <- a
		}()
	}
	// They wait in the accept queue (and the load's new connections with
	// them), not in the stopped process.
	if err := waitFor(2*time.Second, func() bool { return acceptQueue(u.addr) >= queued }); err != nil {
		t.Errorf("the accept queue holds %d connections, want at least %d: %v", acceptQueue(u.addr), queued, err)
	}
	t.Logf("main process %d (host %d) stopped holding %d connection(s); accept queue: %d", main, host, len(held), acceptQueue(u.addr))

	begin := time.Now()
	if err := syscall.Kill(host, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	var next int
	if err := waitFor(15*time.Second, func() bool {
		next = u.mainPID()
		return next != 0 && next != main && u.prop("ActiveState") == "active"
	}); err != nil {
		stop()
		t.Fatalf("not restarted after the SIGKILL: %v\n%s", err, u.sd.Journal(u.name+".service"))
	}
	t.Logf("restarted as pid %d %v after the SIGKILL", next, time.Since(begin).Round(time.Millisecond))

	for range queued {
		a := <-answers
		if a.err != nil || a.code != 200 || a.pid != next {
			t.Errorf("queued request on port %d: status %d from pid %d (%v), want 200 from the restarted process %d", a.port, a.code, a.pid, a.err, next)
		}
	}
	time.Sleep(300 * time.Millisecond)
	var failed int64
	for _, r := range stop() {
		if r.Failures[loadgen.Refused] != 0 || r.OK == 0 {
			t.Errorf("%s: %s", r.Kind, r.String())
		}
		if int64(len(r.Errors)) != r.Failed() {
			t.Errorf("%s: %d failures, %d described: cannot tell whose they were", r.Kind, r.Failed(), len(r.Errors))
		}
		for _, e := range r.Errors {
			if port, ok := loadgen.ClientPort(e); !ok || !held[port] {
				t.Errorf("%s: a request not held by the killed process failed: %s (it held %v)", r.Kind, e, held)
				continue
			}
			failed++
		}
	}
	t.Logf("%d load request(s) failed on the connections the killed process held", failed)
	if n := u.prop("NRestarts"); n != "1" {
		t.Errorf("NRestarts = %s, want 1", n)
	}
}

// procState is the state letter of a host process, 0 if it is gone.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if f := strings.Fields(string(b[i+1:])); i >= 0 && len(f) > 0 && len(f[0]) == 1 {
		return f[0][0]
	}
	return 0
}

// heldConns returns the client ports of the TCP connections to addr's port
// that host process pid holds, copying each of its sockets with
// pidfd_getfd(2) (the test runs as root) to ask for its addresses.
func heldConns(pid int, addr string) map[int]bool {
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	held := map[int]bool{}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return held
	}
	defer unix.Close(pidfd)
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fd, err := strconv.Atoi(e.Name())
		if !strings.HasPrefix(target, "socket:") || err != nil {
			continue
		}
		dup, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			continue
		}
		local, lerr := unix.Getsockname(dup)
		peer, perr := unix.Getpeername(dup)
		unix.Close(dup)
		l, lok := local.(*unix.SockaddrInet4)
		r, rok := peer.(*unix.SockaddrInet4)
		if lerr == nil && perr == nil && lok && rok && l.Port == port {
			held[r.Port] = true
		}
	}
	return held
}

// acceptQueue is the number of connections waiting to be accepted on the
// listening socket at addr (rx_queue of its LISTEN entry in /proc/net/tcp).
func acceptQueue(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		// sl local_address rem_address st tx_queue:rx_queue ...
		if len(fl) < 5 || fl[3] != "0A" || !strings.HasSuffix(fl[1], fmt.Sprintf(":%04X", port)) {
			continue
		}
		_, rx, _ := strings.Cut(fl[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			return -1
		}
		return int(n)
	}
	return -1
}

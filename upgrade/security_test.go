//go:build unix

package upgrade

// Tests for the findings of the security review of 2026-12-01 that belong
// to this package (M3, M4, M5, L5, L6, L9). Each says what it shows; each
// fails with the behaviour the review found.
//
// Tests that need a second user run it with setpriv (util-linux) as uid
// 65534 when they run as root, and skip otherwise, unless
// HITLESS_REQUIRE_PRIVDROP=1 (CI), which makes them fail instead.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/harness"
)

const (
	envRequirePrivdrop = "HITLESS_REQUIRE_PRIVDROP"
	envVictimLog       = "HITLESS_TEST_VICTIM_LOG"       // where the victim records the signals it gets
	envReplacePath     = "HITLESS_TEST_REPLACE_PATH"     // the file the replacer keeps replacing
	envReplaceWith     = "HITLESS_TEST_REPLACE_WITH"     // with this content
	otherUID           = 65534                           // nobody
	secret             = "postgres://app:hunter2@db/app" // what the "secret" mode prints
)

// needPrivilege skips t (or fails it, with HITLESS_REQUIRE_PRIVDROP=1)
// unless it runs as root.
func needPrivilege(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(envRequirePrivdrop) == "1" {
		t.Fatalf("%s=1, but this test runs as uid %d, not root: %s needs root", envRequirePrivdrop, os.Geteuid(), what)
	}
	t.Skipf("%s needs root (uid %d here); CI runs it as root with %s=1", what, os.Geteuid(), envRequirePrivdrop)
}

// asOtherUser returns the command prefix that runs a program as uid 65534,
// skipping t (or failing it, see needPrivilege) where that is impossible.
func asOtherUser(t *testing.T) []string {
	t.Helper()
	needPrivilege(t, "running a process as another user")
	p, err := exec.LookPath("setpriv")
	if err != nil {
		if os.Getenv(envRequirePrivdrop) == "1" {
			t.Fatalf("%s=1, but setpriv (util-linux) is not installed", envRequirePrivdrop)
		}
		t.Skip("setpriv (util-linux) is not installed; it runs a process as another user")
	}
	return []string{p, "--reuid=" + strconv.Itoa(otherUID), "--regid=" + strconv.Itoa(otherUID), "--clear-groups", "--"}
}

// victimMain is a process that must not be signalled: it records every
// signal it gets, one name a line, and waits to be killed.
func victimMain() int {
	f, err := os.OpenFile(os.Getenv(envVictimLog), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	fmt.Println("ready")
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case sig := <-sigs:
			// The runtime's own preemption signal, and our children.
			if sig == syscall.SIGURG || sig == syscall.SIGCHLD {
				continue
			}
			fmt.Fprintln(f, sig)
		case <-deadline:
			return 0
		}
	}
}

// pidReplacerMain is another user who can write the PID file's directory:
// it keeps replacing the PID file with one of its own, as fast as it can,
// until it is killed (at most 30 s). Each round is two system calls: link
// one of two prepared files under a temporary name, and rename that over
// the PID file. So the PID file holds what the service wrote only for
// moments. (Two files, since a rename between two links to the same file
// does nothing.)
func pidReplacerMain() int {
	path, content := os.Getenv(envReplacePath), os.Getenv(envReplaceWith)
	dir := filepath.Dir(path)
	var sources, tmps [2]string
	for i := range sources {
		sources[i] = filepath.Join(dir, ".planted"+strconv.Itoa(i))
		tmps[i] = filepath.Join(dir, ".planting"+strconv.Itoa(i))
		if err := os.WriteFile(sources[i], []byte(content), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	announced := false
	for i, end := 0, time.Now().Add(30*time.Second); time.Now().Before(end); i++ {
		err := os.Link(sources[i%2], tmps[i%2])
		if err == nil || errors.Is(err, os.ErrExist) {
			err = os.Rename(tmps[i%2], path)
		}
		if err != nil {
			time.Sleep(time.Millisecond)
			continue
		}
		if !announced {
			fmt.Println("planted")
			announced = true
		}
	}
	return 0
}

// startHelper starts the test binary in role, with prefix (setpriv, or
// nothing) in front, and waits until it prints its first line. It is
// killed at cleanup.
func startHelper(t *testing.T, bin string, prefix []string, role string, env ...string) *exec.Cmd {
	t.Helper()
	args := append(append([]string(nil), prefix...), bin, "-test.run=^$")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), append([]string{envRole + "=" + role, "GORACE=atexit_sleep_ms=0"}, env...)...)
	cmd.Stderr = os.Stderr
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	first, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		defer r.Close()
		_, err := bufio.NewReader(r).ReadString('\n')
		first <- err
		io.Copy(io.Discard, r) // until the helper exits
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		<-done
	})
	select {
	case err := <-first:
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start within 20 s", role)
	}
	return cmd
}

// stillRunning reports whether pid runs (a zombie does not, on Linux).
func stillRunning(pid int) bool {
	if runtime.GOOS == "linux" {
		return processAlive(pid)
	}
	return syscall.Kill(pid, 0) == nil
}

// waitLog waits until the log at path has a line holding every one of
// parts, and returns when it saw it.
func waitLog(t *testing.T, path string, within time.Duration, parts ...string) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q in the log within %v", parts, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLogMatch waits until a line of the log at path matches re, and
// returns its first group.
func waitLogMatch(t *testing.T, path string, within time.Duration, re string) string {
	t.Helper()
	r := regexp.MustCompile(re)
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(path)
		if m := r.FindSubmatch(b); m != nil {
			return string(m[1])
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %q in the log within %v", re, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// notifyCollector is a NOTIFY_SOCKET that keeps what it is told (see
// fakeSystemd in notify_linux_test.go for one that also knows the sender).
type notifyCollector struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	done chan struct{}
}

func startNotifyCollector(t *testing.T) *notifyCollector {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	c := &notifyCollector{path: path, conn: conn, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		buf, oob := make([]byte, 4096), make([]byte, 4096)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			// Descriptors attached (BARRIER=1) are closed, which is the
			// answer the sender waits for.
			if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range cmsgs {
					if fds, err := unix.ParseUnixRights(&m); err == nil {
						for _, fd := range fds {
							unix.Close(fd)
						}
					}
				}
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, string(buf[:n]))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-c.done })
	return c
}

func (c *notifyCollector) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.msgs...)
}

// waitMessage waits for a message holding want and returns it.
func (c *notifyCollector) waitMessage(t *testing.T, want string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, m := range c.messages() {
			if strings.Contains(m, want) {
				return m
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("systemd was not told %q within %v; it was told %q", want, within, c.messages())
	return ""
}

// --- M3: the PID file ----------------------------------------------------

// TestUnsafeDir: the rule New enforces for the PID file's directory (and
// warns by for the control socket's): every entry on the way, through
// symbolic links, owned by root or us, and every directory writable only by
// its owner, unless sticky.
func TestUnsafeDir(t *testing.T) {
	base := t.TempDir()
	mkdir := func(t *testing.T, mode os.FileMode, parts ...string) string {
		t.Helper()
		p := filepath.Join(append([]string{base}, parts...)...)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		root   bool // needs root (chown)
		setup  func(t *testing.T) string
		unsafe string // substring of the error; "" means safe
	}{
		{"private", false, func(t *testing.T) string { return mkdir(t, 0o755, "private") }, ""},
		{"world-writable", false, func(t *testing.T) string { return mkdir(t, 0o777, "world") }, "writable by its group or others and not sticky"},
		{"group-writable", false, func(t *testing.T) string { return mkdir(t, 0o775, "group") }, "writable by its group or others and not sticky"},
		{"sticky", false, func(t *testing.T) string { return mkdir(t, 0o777|os.ModeSticky, "sticky") }, ""},
		{"private-under-world-writable", false, func(t *testing.T) string {
			mkdir(t, 0o777, "wparent")
			return mkdir(t, 0o755, "wparent", "child")
		}, "wparent (drwxrwxrwx)"},
		{"symlink-to-world-writable", false, func(t *testing.T) string {
			target := mkdir(t, 0o777, "wtarget")
			link := filepath.Join(base, "link-to-wtarget")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "wtarget (drwxrwxrwx)"},
		{"dotdot-after-symlink", false, func(t *testing.T) string {
			// The kernel resolves ".." after "up" from where up leads
			// (base/far/away), not lexically (base/private2).
			mkdir(t, 0o777, "far", "wdot")
			mkdir(t, 0o755, "private2", "wdot")
			if err := os.Symlink("../far/away", filepath.Join(base, "private2", "up")); err != nil {
				t.Fatal(err)
			}
			mkdir(t, 0o755, "far", "away")
			if err := os.Chmod(filepath.Join(base, "far"), 0o755); err != nil {
				t.Fatal(err)
			}
			return base + "/private2/up/../wdot"
		}, "far/wdot (drwxrwxrwx)"},
		{"owned-by-another-user", true, func(t *testing.T) string {
			p := mkdir(t, 0o755, "theirs")
			if err := os.Chown(p, otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
			return p
		}, "owned by uid 65534"},
		{"their-symlink-in-sticky-dir", true, func(t *testing.T) string {
			sticky := mkdir(t, 0o777|os.ModeSticky, "sticky2")
			target := mkdir(t, 0o755, "mine")
			link := filepath.Join(sticky, "link")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(link, otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
			return link
		}, "link is owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				needPrivilege(t, "chown to another user")
			}
			err := unsafeDir(tc.setup(t))
			switch {
			case tc.unsafe == "" && err != nil:
				t.Fatalf("unsafeDir: %v; want nil", err)
			case tc.unsafe != "" && (err == nil || !strings.Contains(err.Error(), tc.unsafe)):
				t.Fatalf("unsafeDir: %v; want an error with %q", err, tc.unsafe)
			}
		})
	}
}

// startServerWithPIDFile is startTestServer with the PID file elsewhere.
func startServerWithPIDFile(t *testing.T, pidFile string, env ...string) *harness.Server {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s, _ := harness.StartT(t, harness.Config{
		Binary: self, Args: []string{"-test.run=^$"}, PIDFile: pidFile,
		Env: append([]string{envRole + "=server", envNetwork + "=tcp", envAddr + "=127.0.0.1:0",
			envPIDFile + "=" + pidFile, envMode + "=" + filepath.Join(t.TempDir(), "none")}, env...),
	})
	return s
}

// TestNewRefusesPIDFileOthersCanReplace: New fails, naming the directory,
// when other users could replace the PID file; a sticky directory is
// fine.
func TestNewRefusesPIDFileOthersCanReplace(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=server", envNetwork+"=tcp", envAddr+"=127.0.0.1:0",
		envPIDFile+"="+filepath.Join(dir, "app.pid"), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("server with its PID file in a 0777 directory: %v, want exit 1; output:\n%s", err, out)
	}
	want := "upgrade: PID file " + filepath.Join(dir, "app.pid") + " cannot be used: refused, since other users could replace it: " + dir + " (drwxrwxrwx) is writable by its group or others and not sticky"
	if !strings.Contains(string(out), want) {
		t.Fatalf("output lacks %q:\n%s", want, out)
	}
	if _, err := os.Lstat(filepath.Join(dir, "app.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused PID file was written: %v", err)
	}

	sticky := filepath.Join(t.TempDir(), "sticky")
	if err := os.Mkdir(sticky, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	s := startServerWithPIDFile(t, filepath.Join(sticky, "app.pid"))
	if _, err := s.Stop(ctx); err != nil {
		t.Fatalf("server with its PID file in a sticky directory: %v", err)
	}
}

// plantAtPIDFile replaces the server's PID file, by rename as another user
// with write access to its directory would, with what create makes at tmp.
func plantAtPIDFile(t *testing.T, pidFile string, create func(tmp string) error) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(pidFile), ".planted")
	if err := create(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, pidFile); err != nil {
		t.Fatal(err)
	}
}

// TestPIDFileFIFODoesNotHangStop: a FIFO at the PID file's path when the
// service stops is left alone, and the stop does not wait for a writer
// (the review: the stopping process hung in open until someone opened the
// FIFO).
func TestPIDFileFIFODoesNotHangStop(t *testing.T) {
	ts := startTestServer(t, "tcp")
	pid := ts.PID()
	pidFile := filepath.Join(ts.dir, "server.pid")
	// Do not ask the harness after this: it reads the PID file plainly.
	plantAtPIDFile(t, pidFile, func(tmp string) error { return unix.Mkfifo(tmp, 0o644) })
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := ts.WaitExit(ctx, pid)
	if err != nil {
		t.Fatalf("stop with a FIFO at the PID file: %v", err)
	}
	if st.ExitStatus() != 0 {
		t.Fatalf("exit status %d, want 0", st.ExitStatus())
	}
	if fi, err := os.Lstat(pidFile); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("the planted FIFO was touched: %v %v", fi, err)
	}
	waitLog(t, ts.log, time.Second, "removing PID file", "not a small regular file")
}

// TestPIDFileSymlinkToDevZeroDoesNotGrowMemory: a symbolic link to
// /dev/zero at the PID file's path when the service stops is not read
// (the review: os.ReadFile would grow memory until the OOM killer came).
func TestPIDFileSymlinkToDevZeroDoesNotGrowMemory(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads the server's memory from /proc")
	}
	ts := startTestServer(t, "tcp")
	pid := ts.PID()
	pidFile := filepath.Join(ts.dir, "server.pid")
	before := rssKB(pid)
	plantAtPIDFile(t, pidFile, func(tmp string) error { return os.Symlink("/dev/zero", tmp) })
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The watch kills the server once it has grown by 256 MB, so that the
	// bug this guards against cannot take the machine down with it.
	const limitKB = 256 << 10
	peak := before
	deadline := time.Now().Add(15 * time.Second)
	for {
		if kb := rssKB(pid); kb > peak {
			peak = kb
		}
		if peak-before > limitKB {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the stopping server grew from %d kB to %d kB with /dev/zero at its PID file; killed it", before, peak)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err := ts.WaitExit(ctx, pid)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not exit within 15 s of SIGTERM with /dev/zero at its PID file (peak %d kB)", peak)
		}
	}
	t.Logf("memory before the stop %d kB, peak during it %d kB", before, peak)
	if target, err := os.Readlink(pidFile); err != nil || target != "/dev/zero" {
		t.Fatalf("the planted symlink was touched: %q %v", target, err)
	}
	waitLog(t, ts.log, time.Second, "removing PID file")
}

// rssKB is the resident memory of pid in kB, or 0 once it is gone.
func rssKB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// TestPIDFileReplacedByAnotherUser replays the review's M3 attack: while a
// new generation starts, another user keeps replacing the PID file with
// one naming a victim process (a root sleep 300 in the review), and a
// second upgrade request arrives, which is passed on to the new
// generation. Nothing may be signalled but our own generations, systemd
// must only ever hear our own PIDs as MAINPID, and the foreign PID file
// is not removed at the stop. The directory becomes writable after the
// generations started (New refuses such a directory, and does refuse the
// third generation, which the passed-on request starts).
func TestPIDFileReplacedByAnotherUser(t *testing.T) {
	t.Run("same-uid", func(t *testing.T) { testPIDFileReplaced(t, nil) })
	t.Run("uid-65534", func(t *testing.T) { testPIDFileReplaced(t, asOtherUser(t)) })
}

func testPIDFileReplaced(t *testing.T, as []string) {
	sd := startNotifyCollector(t)
	ts := startTestServer(t, "tcp", "NOTIFY_SOCKET="+sd.path, envSignals+"=library", envUpgradeT+"=20s")
	first := ts.PID()
	pidFile := filepath.Join(ts.dir, "server.pid")
	victimLog := filepath.Join(t.TempDir(), "victim.log")
	victim := startHelper(t, ts.bin, nil, "victim", envVictimLog+"="+victimLog).Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ts.setMode("announce-slow=1500ms")
	if err := syscall.Kill(first, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, ts.log, 20*time.Second, "test server: up, ready in")
	ts.setMode("ok")
	// Generation 2 has passed New; from now on other users may write the
	// directory (its parent, a private temporary directory, must let
	// them through).
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(ts.dir), 0o755}, {ts.dir, 0o777}} {
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	replacer := startHelper(t, ts.bin, as, "pidreplacer",
		envReplacePath+"="+pidFile, envReplaceWith+"="+strconv.Itoa(victim)+"\n")
	if os.Geteuid() == 0 {
		// Like the review's attacker, who won the race on the first try,
		// it should not wait for a core while the new generation writes
		// the PID file (two test servers and it share the machine).
		syscall.Setpriority(syscall.PRIO_PROCESS, replacer.Process.Pid, -15)
	}
	// A request that arrives while the upgrade runs: passed on to the new
	// generation (the review's code sent SIGHUP to the PID file's PID).
	if err := syscall.Kill(first, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Generation 2 says who it is in its own log line, not in the PID
	// file, nor in what systemd is told (which is under test).
	second, err := strconv.Atoi(waitLogMatch(t, ts.log, 20*time.Second, `msg=ready pid=(\d+) generation=2`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.WaitExit(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Generation 2 carries out the request passed on; generation 3 finds
	// the directory writable by others and refuses to start.
	waitLog(t, ts.log, 20*time.Second, "passed on an upgrade request", "pid="+strconv.Itoa(second))
	waitLog(t, ts.log, 20*time.Second, "refused, since other users could replace it")
	waitLog(t, ts.log, 20*time.Second, "upgrade failed; still serving", "pid="+strconv.Itoa(second))

	replacer.Process.Kill()
	replacer.Wait()
	if err := syscall.Kill(second, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.WaitExit(ctx, second); err != nil && !errors.Is(err, harness.ErrNotReaped) {
		t.Fatal(err)
	}

	// After generation 3 failed, generation 2 wrote the PID file again
	// (it names the serving generation); the replacer may have won once
	// more. Either way the stop removes only a file that names it: what
	// is left, if anything, is the replacer's, untouched.
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		t.Logf("the PID file was reclaimed by generation 2 after the failed upgrade and removed at its stop")
	} else if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(victim) {
		t.Fatalf("the PID file at the stop: %q %v; want the replacer's, naming the victim %d, or none", b, err, victim)
	} else if as != nil {
		var st syscall.Stat_t
		if err := syscall.Stat(pidFile, &st); err != nil || st.Uid != otherUID {
			t.Fatalf("the PID file is not uid %d's: uid %d, %v", otherUID, st.Uid, err)
		}
	}
	if !stillRunning(victim) {
		t.Fatalf("the victim %d is gone", victim)
	}
	if got, _ := os.ReadFile(victimLog); len(got) > 0 {
		t.Fatalf("the victim %d was signalled: %s", victim, got)
	}
	// Generation 2 claims the main PID and generation 1 hands it over, with
	// the same words: MAINPID=<second> twice, and no other PID ever.
	mainPIDs := 0
	for _, m := range sd.messages() {
		for _, line := range strings.Split(m, "\n") {
			v, ok := strings.CutPrefix(line, "MAINPID=")
			switch {
			case !ok:
			case v == strconv.Itoa(second):
				mainPIDs++
			default:
				t.Errorf("systemd was told MAINPID=%s (victim %d, generations %d and %d): %q", v, victim, first, second, m)
			}
		}
	}
	if mainPIDs < 2 {
		t.Errorf("MAINPID=%d was sent %d times; want the claim of generation 2 and the hand-over by generation 1", second, mainPIDs)
	}
}

// --- M4: the control socket's mode ----------------------------------------

// TestControlSocketModeThroughTheBoundInode: the generation that binds the
// control socket sets its mode to 0600 on the file it bound, never on what
// a symbolic link planted at the path leads to (the review: a root service
// chmod-ed the target, /etc/passwd for one). The replacement happens at the
// worst moment, right before the change of mode, through a seam; New then
// fails, since nobody would reach this generation at that path.
func TestControlSocketModeThroughTheBoundInode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replace func(t *testing.T, path, victim string) // nil: leave the socket alone
	}{
		{"bound-socket", nil},
		{"symlink-to-victim", func(t *testing.T, path, victim string) {
			mustRename(t, path, path+".moved")
			if err := os.Symlink(victim, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"relative-symlink-to-victim", func(t *testing.T, path, victim string) {
			mustRename(t, path, path+".moved")
			if err := os.Symlink("./"+filepath.Base(victim), path); err != nil {
				t.Fatal(err)
			}
		}},
		{"hard-link-to-victim", func(t *testing.T, path, victim string) {
			mustRename(t, path, path+".moved")
			if err := os.Link(victim, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"another-socket", func(t *testing.T, path, victim string) {
			mustRename(t, path, path+".moved")
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
			t.Cleanup(func() { ln.Close() })
			if err := os.Chmod(path, 0o666); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "ctl.sock")
			victim := filepath.Join(dir, "victim")
			if err := os.WriteFile(victim, []byte("root:x:0:0::/root:/bin/sh\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			testHookControlBound = func(path string) {
				if tc.replace != nil {
					tc.replace(t, path, victim)
				}
			}
			t.Cleanup(func() { testHookControlBound = nil })
			var logged strings.Builder
			u := &Upgrader{log: slog.New(slog.NewTextHandler(&syncWriter{w: &logged}, nil)), readyC: make(chan struct{})}
			c, err := u.startControl(path)
			if c != nil {
				c.close()
			}
			u.listeners.Close()

			if tc.replace == nil {
				if err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Lstat(path); err != nil || fi.Mode() != os.ModeSocket|0o600 {
					t.Fatalf("control socket: %v %v; want srw-------", fi.Mode(), err)
				}
				return
			}
			if !errors.Is(err, errSocketReplaced) {
				t.Errorf("startControl with the path replaced: %v; want errSocketReplaced", err)
			}
			if fi, err := os.Stat(victim); err != nil || fi.Mode() != 0o644 {
				t.Fatalf("the victim's mode is %v (%v); want it left at -rw-r--r--", fi.Mode(), err)
			}
			if tc.name == "another-socket" {
				if fi, err := os.Lstat(path); err != nil || fi.Mode() != os.ModeSocket|0o666 {
					t.Fatalf("the other socket's mode is %v (%v); want it left at srw-rw-rw-", fi.Mode(), err)
				}
			}
			t.Logf("startControl: %v", err)
		})
	}
}

func mustRename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

// syncWriter lets a log handler write from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestControlSocketInSharedDirectoryWarns: New warns when other users can
// replace the control socket (it still starts: the peer checks keep them
// from using or faking it).
func TestControlSocketInSharedDirectoryWarns(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(dir, "ctl.sock")
	ts := startTestServer(t, "tcp", envControl+"="+ctl)
	waitLog(t, ts.log, 5*time.Second, "other users can replace the control socket", dir+" (drwxrwxrwx) is writable by its group or others and not sticky")
	if fi, err := os.Lstat(ctl); err != nil || fi.Mode() != os.ModeSocket|0o600 {
		t.Fatalf("control socket: %v %v; want srw-------", fi, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := (control.Client{Socket: ctl}).Status(ctx); err != nil {
		t.Fatal(err)
	}
}

// --- M5: what a failing new generation wrote ------------------------------

// TestFailureOutputStaysOutOfStatus: a new generation that fails after
// writing a secret to stderr. The secret reaches whoever asked for the
// upgrade (Upgrade's error, the control client's reload error), but not
// systemd's STATUS=, which every local user can read, nor the status the
// control socket reports (`hitless status`'s last_upgrade).
func TestFailureOutputStaysOutOfStatus(t *testing.T) {
	sd := startNotifyCollector(t)
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	ts := startTestServer(t, "tcp", "NOTIFY_SOCKET="+sd.path, envControl+"="+ctl)
	ts.setMode("secret")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r := ts.nextResult()
	if !r.Failed || r.ExitStatus != 1 || !strings.Contains(r.Err, secret) {
		t.Fatalf("Upgrade returned %+v; want the new generation's exit 1 with its last output, %s", r, secret)
	}
	client := control.Client{Socket: ctl}
	err := client.Reload(ctx)
	var ce *control.ChildError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), secret) {
		t.Fatalf("reload over the control socket: %v; want a ChildError with the new generation's last output", err)
	}
	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.LastUpgrade, "exited with status 1") || strings.Contains(st.LastUpgrade, "hunter2") {
		t.Errorf("status last_upgrade = %q; want the failure without what the new generation wrote", st.LastUpgrade)
	}
	failed := sd.waitMessage(t, "STATUS=upgrade failed", 5*time.Second)
	t.Logf("systemd was told %q", failed)
	for _, m := range sd.messages() {
		if strings.Contains(m, "hunter2") {
			t.Errorf("systemd was told %q", m)
		}
	}
}

// --- L5: a stop during a slow pre-flight ----------------------------------

// TestStopEndsSlowPreflight: a stop 30 s before a pre-flight check would
// end (and as long before UpgradeTimeout) ends it at once, and the drain
// starts (the review: 7 s later, the whole check).
func TestStopEndsSlowPreflight(t *testing.T) {
	// The library's signal handler: the test server's own handles SIGTERM
	// only after the Upgrade call in progress has returned.
	ts := startTestServer(t, "tcp", envPreflt+"=30s", envUpgradeT+"=60s", envSignals+"=library")
	pid := ts.PID()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, ts.log, 10*time.Second, "test preflight: started")
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	draining := waitLog(t, ts.log, 10*time.Second, "stopping; draining")
	took := draining.Sub(stopped)
	t.Logf("the drain started %v after the stop", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("the drain started %v after the stop; want the pre-flight ended at once", took)
	}
	waitLog(t, ts.log, time.Second, "test preflight: ended early", "context canceled")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := ts.WaitExit(ctx, pid); err != nil || st.ExitStatus() != 0 {
		t.Fatalf("exit: %v %v; want status 0", st, err)
	}
}

// --- L6: silent control connections at an upgrade ------------------------

// TestSilentControlConnectionsDoNotDelayExit: control connections that
// were opened and never sent a request do not keep the old generation
// alive after it handed over (the review: it lived on for the 5 s read
// timeout, still accepting). They are answered when it exits.
func TestSilentControlConnectionsDoNotDelayExit(t *testing.T) {
	ctl := filepath.Join(t.TempDir(), "ctl.sock")
	ts := startTestServer(t, "tcp", envControl+"="+ctl, envUpgradeT+"=10s")
	first := ts.PID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The new generation takes 500 ms from its New to Ready: open the
	// silent connections in that time, so that the old generation (the
	// only one accepting) holds them at the hand-over, well within the
	// control server's 2 s read timeout.
	ts.setMode("announce-slow=500ms")
	if err := syscall.Kill(first, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, ts.log, 10*time.Second, "test server: up, ready in")
	opened := time.Now()
	var silent []net.Conn
	for range 5 {
		c, err := net.DialTimeout("unix", ctl, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	if _, err := ts.WaitPIDChange(ctx, first); err != nil {
		t.Fatal(err)
	}
	ready := time.Now()
	if _, err := ts.WaitExit(ctx, first); err != nil {
		t.Fatal(err)
	}
	exited := time.Now()
	t.Logf("silent connections opened %v before the hand-over; the old generation exited %v after it",
		ready.Sub(opened).Round(time.Millisecond), exited.Sub(ready).Round(time.Millisecond))
	if r := ts.nextResult(); r.Err != "" {
		t.Fatal(r.Err)
	}
	if lag := exited.Sub(ready); lag > time.Second {
		t.Errorf("the old generation exited %v after the hand-over, with nothing of its own to drain", lag)
	}
	for i, c := range silent {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(line, "stopped answering before the request arrived") {
			t.Errorf("silent connection %d got %q (%v); want the answer of a generation that stopped", i, line, err)
		}
	}
}

// --- L9: descriptors after failed upgrades --------------------------------

// TestFailedUpgradesKeepDescriptorsFlat: 15 new generations that exit 3
// after New leave the serving process with as many descriptors as before
// (the review: 13 became 43, two pipe ends per failure, still open 3 min
// later).
func TestFailedUpgradesKeepDescriptorsFlat(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts another process's descriptors in /proc")
	}
	ts := startTestServer(t, "tcp")
	pid := ts.PID()
	ts.setMode("exit")
	before := fdsOf(t, pid)
	for i := range 15 {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if r := ts.nextResult(); !r.Failed || r.ExitStatus != 3 {
			t.Fatalf("upgrade %d: %+v; want a new generation that exited 3", i+1, r)
		}
	}
	// Finalizers run shortly after the collection that found their files.
	var after map[string]string
	for deadline := time.Now().Add(2 * time.Second); ; {
		after = fdsOf(t, pid)
		if len(after) <= len(before)+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("descriptors of the serving process: %d before, %d after 15 failed upgrades", len(before), len(after))
	if d := len(after) - len(before); d > 2 || d < -2 {
		var extra []string
		for fd, target := range after {
			if before[fd] != target {
				extra = append(extra, fd+" -> "+target)
			}
		}
		t.Fatalf("%d descriptors before, %d after; new: %v", len(before), len(after), extra)
	}
}

// fdsOf names the open descriptors of process pid.
func fdsOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(ents))
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out[e.Name()] = target
	}
	return out
}

//go:build linux

package systemd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/sdtest"
)

// envReport is what testdata/envd says of a process (its /env, /child).
type envReport struct {
	PID     int               `json:"pid"`
	PPID    int               `json:"ppid"`
	Env     map[string]string `json:"env"`     // now
	ExecEnv map[string]string `json:"execEnv"` // as execve gave it
	Sockets []string          `json:"sockets"` // inodes of its open sockets
	PIDFDID uint64            `json:"pidfdID"`
	Sh      map[string]string `json:"sh"` // /bin/sh -c env, for /child
}

// listenVars are the variables of socket activation and the fd store,
// meant for the one process LISTEN_PID (and LISTEN_PIDFDID) names.
var listenVars = []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"}

// envd builds testdata/envd once, static, next to the other binaries.
var envd = sync.OnceValues(func() (string, error) {
	out := filepath.Join(binDir, "envd")
	root, err := harness.ModuleRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./examples/systemd/testdata/envd")
	cmd.Dir = root
	// Static: it runs in Debian 13's tree too.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building envd: %v\n%s", err, b)
	}
	return out, nil
})

// envUnit is testdata/envd under a socket unit of its own.
type envUnit struct {
	*unit
	pidfdMode string // envd -pidfdid: "", "own", "other"
	socket    bool   // under a socket unit; else the fd store
}

// installEnvd installs envd under a socket unit, or, with pidfdMode
// "fdstore", alone with its socket in the fd store.
func installEnvd(t *testing.T, sd *sdtest.Systemd, pidfdMode string) *envUnit {
	t.Helper()
	bin, err := envd()
	if err != nil {
		t.Fatal(err)
	}
	u := &unit{t: t, sd: sd, name: sd.UnitName("hitless-envd"), addr: harness.FreeAddrT(t)}
	share := sd.SharePath()
	u.bin, u.cli = filepath.Join(share, "envd"), filepath.Join(share, "hitless")
	u.copy(bin, u.bin)
	u.copy(filepath.Join(binDir, "hitless"), u.cli)
	u.runtimeDir = "/run/" + u.name
	e := &envUnit{unit: u, socket: pidfdMode != "fdstore"}
	// Under a socket unit: the service needs it. Alone: it keeps its
	// socket in the fd store.
	flag, unitSection, store := " -fdstore", "", "FileDescriptorStoreMax=4"
	if e.socket {
		e.pidfdMode = pidfdMode
		flag, store = "", ""
		if pidfdMode != "" {
			flag = " -pidfdid=" + pidfdMode
		}
		unitSection = fmt.Sprintf("[Unit]\nRequires=%[1]s.socket\nAfter=%[1]s.socket\n", u.name)
		sd.WriteUnit(u.name+".socket", fmt.Sprintf(`[Socket]
ListenStream=%s
FileDescriptorName=http
Service=%s.service
`, u.addr, u.name))
	}
	sd.WriteUnit(u.name+".service", fmt.Sprintf(`%[7]s
[Service]
Type=notify
NotifyAccess=all
RuntimeDirectory=%[1]s
RuntimeDirectoryPreserve=yes
ExecStart=%[2]s -addr %[3]s -control %[4]s/control.sock%[5]s
ExecReload=%[6]s reload -socket %[4]s/control.sock -timeout 60s
ExecStop=%[6]s stop -socket %[4]s/control.sock -timeout 30s
TimeoutStartSec=60s
TimeoutStopSec=40s
WatchdogSec=5s
%[8]s
`, u.name, u.bin, u.addr, u.runtimeDir, flag, u.cli, unitSection, store))
	return e
}

// get asks envd for path; a new connection each time, so that the process
// accepting now answers.
func (u *envUnit) get(path string) (envReport, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + u.addr + path)
	if err != nil {
		return envReport{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return envReport{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return envReport{}, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	var r envReport
	if err := json.Unmarshal(b, &r); err != nil {
		return envReport{}, fmt.Errorf("GET %s: %v: %s", path, err, b)
	}
	return r, nil
}

// listeningInode is the inode of the one socket listening on addr (IPv4
// loopback), from the kernel's table: the container shares this network
// namespace. More than one would mean that a generation bound its own
// socket next to systemd's.
func listeningInode(t *testing.T, addr string) string {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	local := fmt.Sprintf("0100007F:%04X", p)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	var inodes []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "0A" { // 0A: LISTEN
			inodes = append(inodes, f[9])
		}
	}
	if len(inodes) != 1 {
		t.Fatalf("sockets listening on %s: %v; want exactly one, systemd's", addr, inodes)
	}
	return inodes[0]
}

// socketsOf lists the socket inodes host process pid holds open.
func socketsOf(t *testing.T, pid int) []string {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			out = append(out, strings.TrimSuffix(s, "]"))
		}
	}
	return out
}

func inList(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// noListenVars fails t for every LISTEN_* variable in env.
func noListenVars(t *testing.T, who, which string, env map[string]string) {
	t.Helper()
	for _, v := range listenVars {
		if val, ok := env[v]; ok {
			t.Errorf("%s: %s=%s in its %s environment", who, v, val, which)
		}
	}
}

// TestEnvironmentOfEachGeneration: under a socket unit, the generation
// systemd starts gets LISTEN_* and serves systemd's own socket; every later
// generation serves that same socket, and neither it nor any process a
// generation starts ever sees LISTEN_*; every generation keeps
// NOTIFY_SOCKET, WATCHDOG_PID names each one itself, and MainPID follows
// each `systemctl reload`. Subtest pidfdid-own starts the first generation
// with LISTEN_PIDFDID as systemd 258 sets it (envd -pidfdid=own sets its
// real ID and executes itself again, same PID); pidfdid-other with the ID
// of another process: then the sockets are not for it, and it cannot bind
// the address systemd holds.
func TestEnvironmentOfEachGeneration(t *testing.T) {
	sdtest.Each(t, func(t *testing.T, sd *sdtest.Systemd) {
		t.Run("activated", func(t *testing.T) { testEnvAcrossGenerations(t, installEnvd(t, sd, "")) })
		t.Run("pidfdid-own", func(t *testing.T) { testEnvAcrossGenerations(t, installEnvd(t, sd, "own")) })
		t.Run("pidfdid-other", func(t *testing.T) { testPIDFDIDOfAnother(t, installEnvd(t, sd, "other")) })
		t.Run("fdstore-restart", func(t *testing.T) { testFDStoreRestart(t, installEnvd(t, sd, "fdstore")) })
	})
}

func testEnvAcrossGenerations(t *testing.T, u *envUnit) {
	svc := u.name + ".service"
	u.mustCtl("start", u.name+".socket")
	// The first connection starts the service; it waits in systemd's
	// socket until then.
	g, err := u.get("/env")
	if err != nil {
		t.Fatalf("first request: %v\n%s", err, u.sd.Journal(svc))
	}
	if err := u.sd.WaitProp(svc, "ActiveState", "active", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	inode := u.systemdSocket(t)
	u.startedBySystemd(t, g, 1)
	gens := []envReport{g}
	u.checkGeneration(t, g, 1, inode)
	for n := 2; n <= 4; n++ {
		g = u.reload(t, g, n)
		u.checkGeneration(t, g, n, inode)
		gens = append(gens, g)
	}
	u.finish(t, gens)
}

// testFDStoreRestart: the same through the fd store. The first generation
// binds the socket itself and stores it; after upgrades and a `systemctl
// restart`, systemd passes the stored socket (LISTEN_*) to the process it
// starts, which serves it, and the generations after it never see LISTEN_*.
func testFDStoreRestart(t *testing.T, u *envUnit) {
	svc := u.name + ".service"
	u.mustCtl("start", svc)
	g, err := u.get("/env")
	if err != nil {
		t.Fatal(err)
	}
	inode := listeningInode(t, u.addr)
	u.checkGeneration(t, g, 1, inode)
	noListenVars(t, "generation 1 (nothing stored yet)", "exec", g.ExecEnv)
	gens := []envReport{g}
	g = u.reload(t, g, 2)
	u.checkGeneration(t, g, 2, inode)
	gens = append(gens, g)

	before := g.PID
	u.mustCtl("restart", svc)
	if g, err = u.get("/env"); err != nil {
		t.Fatal(err)
	}
	if g.PID == before || g.PID != u.mainPID() {
		t.Fatalf("restart: answered by pid %d, MainPID %d, was %d", g.PID, u.mainPID(), before)
	}
	if got := u.systemdSocket(t); got != inode {
		t.Fatalf("the socket after the restart is %s, not the stored %s", got, inode)
	}
	u.startedBySystemd(t, g, 1)
	u.checkGeneration(t, g, 1, inode)
	gens = append(gens, g)
	for n := 2; n <= 3; n++ {
		g = u.reload(t, g, n)
		u.checkGeneration(t, g, n, inode)
		gens = append(gens, g)
	}
	u.finish(t, gens)
}

// systemdSocket returns the inode of the socket listening on the unit's
// address, and checks that systemd's PID 1 holds it (a socket unit's
// socket, or one in the fd store).
func (u *envUnit) systemdSocket(t *testing.T) string {
	t.Helper()
	inode := listeningInode(t, u.addr)
	if pid1 := socketsOf(t, u.sd.LeaderPID()); !inList(pid1, inode) {
		t.Fatalf("the socket listening on %s (inode %s) is not systemd's: PID 1 holds %v", u.addr, inode, pid1)
	}
	return inode
}

// startedBySystemd checks what systemd gave generation g at exec: LISTEN_*
// for it, with LISTEN_PIDFDID its own pidfd inode ID from systemd 258 on
// (or from envd -pidfdid=own).
func (u *envUnit) startedBySystemd(t *testing.T, g envReport, n int) {
	t.Helper()
	if g.PID != u.mainPID() {
		t.Fatalf("answered by pid %d, MainPID %d", g.PID, u.mainPID())
	}
	for v, want := range map[string]string{"LISTEN_PID": strconv.Itoa(g.PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"} {
		if got := g.ExecEnv[v]; got != want {
			t.Errorf("generation %d (pid %d) was started with %s=%q, want %q", n, g.PID, v, got, want)
		}
	}
	wantID := ""
	if u.pidfdMode == "own" || u.sd.Major() >= 258 {
		wantID = strconv.FormatUint(g.PIDFDID, 10)
	}
	if got := g.ExecEnv["LISTEN_PIDFDID"]; got != wantID || (wantID != "" && g.PIDFDID == 0) {
		t.Errorf("generation %d was started with LISTEN_PIDFDID=%q, want %q", n, got, wantID)
	}
	t.Logf("generation %d: pid %d, pidfd ID %d, started with LISTEN_PID=%s LISTEN_FDS=%s LISTEN_FDNAMES=%s LISTEN_PIDFDID=%q",
		n, g.PID, g.PIDFDID, g.ExecEnv["LISTEN_PID"], g.ExecEnv["LISTEN_FDS"], g.ExecEnv["LISTEN_FDNAMES"], g.ExecEnv["LISTEN_PIDFDID"])
}

// checkGeneration checks generation n, g, and a process it starts: no
// LISTEN_* now (nor at exec, past the first), systemd's socket inode
// served, NOTIFY_SOCKET kept, WATCHDOG_PID its own, and the child's not.
func (u *envUnit) checkGeneration(t *testing.T, g envReport, n int, inode string) {
	t.Helper()
	who := fmt.Sprintf("generation %d (pid %d)", n, g.PID)
	if n > 1 {
		noListenVars(t, who, "exec", g.ExecEnv)
	}
	noListenVars(t, who, "current", g.Env)
	if !inList(g.Sockets, inode) {
		t.Errorf("%s does not hold the socket %s: %v", who, inode, g.Sockets)
	}
	for _, env := range []map[string]string{g.Env, g.ExecEnv} {
		if env["NOTIFY_SOCKET"] == "" {
			t.Errorf("%s has no NOTIFY_SOCKET", who)
		}
	}
	if got := g.Env["WATCHDOG_PID"]; got != strconv.Itoa(g.PID) || g.Env["WATCHDOG_USEC"] != "5000000" {
		t.Errorf("%s: WATCHDOG_PID=%s WATCHDOG_USEC=%s; want its own PID and 5000000", who, got, g.Env["WATCHDOG_USEC"])
	}
	// A process the generation starts: never LISTEN_*, a WATCHDOG_PID
	// that is not its own (it must not ping).
	c, err := u.get("/child")
	if err != nil {
		t.Fatal(err)
	}
	if c.PPID != g.PID {
		t.Errorf("%s: /child ran in pid %d, child of %d", who, c.PID, c.PPID)
	}
	cwho := fmt.Sprintf("child %d of %s", c.PID, who)
	noListenVars(t, cwho, "exec", c.ExecEnv)
	noListenVars(t, cwho+" (/bin/sh)", "exec", c.Sh)
	if c.ExecEnv["WATCHDOG_PID"] == strconv.Itoa(c.PID) || c.Sh["WATCHDOG_PID"] != strconv.Itoa(g.PID) {
		t.Errorf("%s: WATCHDOG_PID=%s (sh: %s)", cwho, c.ExecEnv["WATCHDOG_PID"], c.Sh["WATCHDOG_PID"])
	}
	if n > 1 {
		t.Logf("%s: started with WATCHDOG_PID=%s, now %s; child sees %s; NOTIFY_SOCKET=%s",
			who, g.ExecEnv["WATCHDOG_PID"], g.Env["WATCHDOG_PID"], c.ExecEnv["WATCHDOG_PID"], g.Env["NOTIFY_SOCKET"])
	}
}

// reload upgrades from generation prev to n and returns the new one,
// checking that MainPID followed and that prev has exited.
func (u *envUnit) reload(t *testing.T, prev envReport, n int) envReport {
	t.Helper()
	u.mustCtl("reload", u.name+".service")
	main := u.mainPID()
	// hitless reload returns once the old generation stopped accepting:
	// the next connection is the new one's.
	g, err := u.get("/env")
	if err != nil {
		t.Fatal(err)
	}
	// Its parent is the previous generation, or, once that has exited,
	// the container's PID 1 (the subreaper).
	if main == prev.PID || g.PID != main || g.PPID != prev.PID && g.PPID != 1 {
		t.Fatalf("reload to generation %d: MainPID %d (was %d), answered by pid %d, child of %d", n, main, prev.PID, g.PID, g.PPID)
	}
	if err := waitFor(15*time.Second, func() bool { _, err := u.sd.HostPID(prev.PID); return err != nil }); err != nil {
		t.Errorf("generation %d (pid %d) still runs: %v", n-1, prev.PID, err)
	}
	return g
}

// finish checks the journal, logs what systemd shows, and stops the unit.
func (u *envUnit) finish(t *testing.T, gens []envReport) {
	t.Helper()
	svc := u.name + ".service"
	j := u.sd.Journal(svc)
	// systemd 257 and later name MAINPIDFDID= only to refuse it.
	for _, bad := range []string{"MAINPIDFDID", "address already in use", "Watchdog timeout", "extra auxiliary fds"} {
		if strings.Contains(j, bad) {
			t.Errorf("the journal says %q:\n%s", bad, j)
		}
	}
	// What systemd shows of the main process is its PID; nothing of its
	// pidfd, up to 262 at least.
	if out, err := u.sd.Ctl("show", svc); err == nil {
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(strings.ToLower(line), "pidfd") {
				t.Logf("systemctl show: %s", line)
			}
		}
	}
	pids := make([]int, len(gens))
	for i, g := range gens {
		pids[i] = g.PID
	}
	t.Logf("MainPID followed %v on %s", pids, u.sd.Version())
	units := []string{svc}
	if u.socket {
		units = append(units, u.name+".socket")
	}
	u.mustCtl(append([]string{"stop"}, units...)...)
	if st, res := u.prop("ActiveState"), u.prop("Result"); st != "inactive" || res != "success" {
		t.Errorf("after stop: %s, result %s\n%s", st, res, u.sd.Journal(svc))
	}
}

// testPIDFDIDOfAnother: LISTEN_PID names the process, LISTEN_PIDFDID
// another one (as when the PID was reused): the sockets are not taken, and
// binding the address itself fails, since systemd holds it.
func testPIDFDIDOfAnother(t *testing.T, u *envUnit) {
	svc := u.name + ".service"
	u.mustCtl("start", u.name+".socket")
	out, err := u.ctl("start", svc)
	if err == nil {
		t.Fatalf("started with the sockets of another process: %s", out)
	}
	j := u.sd.Journal(svc)
	if !strings.Contains(j, "address already in use") {
		t.Fatalf("the service did not fail to bind the address itself:\n%s", j)
	}
	if strings.Contains(j, "ErrBadEnvironment") || strings.Contains(j, "malformed") {
		t.Fatalf("a well-formed LISTEN_PIDFDID was called malformed:\n%s", j)
	}
	u.ctl("stop", u.name+".socket")
}

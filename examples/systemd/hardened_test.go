//go:build linux

package systemd_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/loadgen"
	"github.com/hitlessgo/hitless/internal/sdtest"
)

// The tests of hitless-http-hardened.service. Each runs on systemd 252 and
// 257 (sdtest.Each).
//
// The unit has PrivateTmp=yes, which hides /var/tmp, where SharePath lives:
// so the binaries are copied inside the container to /opt/<unique>/ (the
// container's throw-away overlay), which stands in for /usr/local/bin, and
// replaced there with an atomic mv for each upgrade. The service listens on
// a free privileged port of 127.0.0.1, which stands in for port 80.
//
// For mutation runs, two variables change the unit before it is installed
// (they are for a person checking that the tests catch a weakened unit,
// never set in CI):
//
//	HITLESS_HARDENED_DROP=AmbientCapabilities=,PrivateTmp=   drop lines starting with these
//	HITLESS_HARDENED_REPLACE='AF_INET6 AF_UNIX=>AF_INET6'    replace old with new

const (
	hardenedFile = "hitless-http-hardened.service"
	// capNetBindService is the capability set the unit leaves every
	// generation with, as /proc/<pid>/status prints it: bit 10.
	capNetBindService = "0000000000000400"
	// maxExposure is the highest `systemd-analyze security` score the
	// hardened unit may have (measured: 1.6 on 252 and on 257). Most
	// directives lost or weakened raise it, not all: without
	// ReadOnlyPaths=/run it stays 1.6, and only TestHardenedSandbox sees.
	maxExposure = 2.0
	// v2 is the version (X-Version) of the second binary the upgrades
	// alternate with; examples/http says "dev" unless told otherwise.
	v1, v2 = "dev", "v2"
)

// hardened is an installed instance of hitless-http-hardened.service.
type hardened struct {
	*unit
	dir  string // inside the container: the binaries
	port int    // privileged
}

// v2Binary is examples/http built to answer X-Version: v2 (notify_test.go
// builds it, once per test process).
func v2Binary() (string, error) {
	bins, err := versions()
	if err != nil {
		return "", err
	}
	return bins[1], nil
}

// installHardened installs the hardened unit with its binaries inside the
// container and a free privileged port; edit, if not nil, changes the unit
// further.
func installHardened(t *testing.T, sd *sdtest.Systemd, edit func(string) string) *hardened {
	t.Helper()
	h := &hardened{dir: "/opt/" + sd.UnitName("hitless-bin"), port: freePrivilegedPort(t)}
	// Registered before install, so that it runs after the unit is stopped.
	t.Cleanup(func() { sd.Exec("rm", "-rf", h.dir) })
	share := sd.SharePath()
	h.unit = install(t, sd, hardenedFile, func(s string) string {
		s = strings.NewReplacer(
			filepath.Join(share, "hitless-http")+" ", filepath.Join(h.dir, "hitless-http")+" ",
			filepath.Join(share, "hitless")+" ", filepath.Join(h.dir, "hitless")+" ",
			"-addr 127.0.0.1:80 ", fmt.Sprintf("-addr 127.0.0.1:%d ", h.port),
		).Replace(s)
		s = mutate(t, s)
		if edit != nil {
			s = edit(s)
		}
		return s
	})
	h.addr = fmt.Sprintf("127.0.0.1:%d", h.port)
	// PrivateTmp= hides SharePath: nothing may run from there.
	if got, want := h.prop("ExecStart"), filepath.Join(h.dir, "hitless-http")+" -addr "+h.addr+" "; !strings.Contains(got, want) {
		t.Fatalf("ExecStart=%s: the test's edits of %s did not apply (want %q in it)", got, hardenedFile, want)
	}
	for _, prop := range []string{"ExecStart", "ExecReload", "ExecStop"} {
		if got := h.prop(prop); strings.Contains(got, share) {
			t.Fatalf("%s=%s runs from %s, which the unit cannot see", prop, got, share)
		}
	}
	h.exec("mkdir", "-p", h.dir)
	h.place(h.cli, "hitless")
	h.place(h.bin, "hitless-http")
	return h
}

// mutate applies HITLESS_HARDENED_DROP and HITLESS_HARDENED_REPLACE.
func mutate(t *testing.T, s string) string {
	if drop := os.Getenv("HITLESS_HARDENED_DROP"); drop != "" {
		var kept []string
		for _, l := range strings.SplitAfter(s, "\n") {
			gone := false
			for _, p := range strings.Split(drop, ",") {
				gone = gone || (p != "" && strings.HasPrefix(l, p))
			}
			if !gone {
				kept = append(kept, l)
			} else {
				t.Logf("mutation: dropped %q", strings.TrimSpace(l))
			}
		}
		s = strings.Join(kept, "")
	}
	if r := os.Getenv("HITLESS_HARDENED_REPLACE"); r != "" {
		old, new, _ := strings.Cut(r, "=>")
		t.Logf("mutation: %q -> %q (%d times)", old, new, strings.Count(s, old))
		s = strings.ReplaceAll(s, old, new)
	}
	return s
}

func (h *hardened) exec(args ...string) string {
	h.t.Helper()
	out, err := h.sd.Exec(args...)
	if err != nil {
		h.t.Fatalf("in the container: %v %s", err, out)
	}
	return out
}

// place puts the host file from (under SharePath, which the container
// sees) at dir/name inside the container, replacing it atomically.
func (h *hardened) place(from, name string) {
	h.t.Helper()
	to := filepath.Join(h.dir, name)
	h.exec("cp", from, to+".new")
	h.exec("mv", "-f", to+".new", to)
}

// upgradeTo installs the examples/http binary of version v (v1 or v2).
func (h *hardened) upgradeTo(v string) {
	h.t.Helper()
	src := filepath.Join(binDir, "hitless-http")
	if v == v2 {
		var err error
		if src, err = v2Binary(); err != nil {
			h.t.Fatal(err)
		}
	}
	staged := h.bin + "-" + v
	h.copy(src, staged)
	h.place(staged, "hitless-http")
}

// answer asks the service which process and version answered.
func (h *hardened) answer() (pid int, version string, err error) { return ask(h.addr) }

// uid is the unit's dynamic user, while it runs.
func (h *hardened) uid() string {
	h.t.Helper()
	uid := h.prop("UID")
	if n, err := strconv.Atoi(uid); err != nil || n <= 0 {
		h.t.Fatalf("the unit's UID is %q: not a user of its own", uid)
	}
	return uid
}

// checkProcess checks that the process pid (a container PID) runs as the
// unit's user uid, not root, holds CAP_NET_BIND_SERVICE and nothing else
// (effective, permitted, ambient, bounding), cannot gain privileges, and
// is under a seccomp filter.
func checkProcess(sd *sdtest.Systemd, pid int, uid string) error {
	host, err := sd.HostPID(pid)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", host))
	if err != nil {
		return err
	}
	want := map[string]string{
		"Uid":        strings.Repeat(uid+" ", 4),
		"Gid":        "", // checked below: the unit's group, not root's
		"CapEff":     capNetBindService,
		"CapPrm":     capNetBindService,
		"CapAmb":     capNetBindService,
		"CapBnd":     capNetBindService,
		"NoNewPrivs": "1",
		"Seccomp":    "2",
	}
	var errs []error
	seen := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		w, checked := want[k]
		if !ok || !checked {
			continue
		}
		seen[k] = true
		got := strings.Join(strings.Fields(v), " ")
		switch {
		case k == "Gid":
			if f := strings.Fields(v); len(f) != 4 || f[0] == "0" || f[0] != f[1] || f[1] != f[2] || f[2] != f[3] {
				errs = append(errs, fmt.Errorf("Gid %q", got))
			}
		case got != strings.TrimSpace(w):
			errs = append(errs, fmt.Errorf("%s %q, want %q", k, got, strings.TrimSpace(w)))
		}
	}
	for k := range want {
		if !seen[k] {
			errs = append(errs, fmt.Errorf("no %s: line", k))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pid %d (host %d): %w", pid, host, err)
	}
	return nil
}

// writeIn creates and removes a file in dir as the mount namespace of host
// process pid sees it (through /proc/<pid>/root, as root: only a read-only
// mount stops it).
func writeIn(pid int, dir string) error {
	f := filepath.Join(fmt.Sprintf("/proc/%d/root", pid), dir, fmt.Sprintf(".hitless-probe-%d", os.Getpid()))
	err := os.WriteFile(f, nil, 0o600)
	if err == nil {
		os.Remove(f)
	}
	return err
}

var (
	privilegedMu    sync.Mutex
	privilegedGiven = map[int]bool{} // ports freePrivilegedPort handed out in this process
)

// freePrivilegedPort returns a port below 1024 that is free on 127.0.0.1
// now (the test runs as root, so it can try) and was not handed out
// before in this process.
func freePrivilegedPort(t *testing.T) int {
	t.Helper()
	start := 600 + rand.IntN(380)
	for i := range 400 {
		p := 600 + (start-600+i)%420
		// The two systemds' subtests run side by side: never hand the
		// same port to both, even before either service has bound it.
		privilegedMu.Lock()
		taken := privilegedGiven[p]
		privilegedGiven[p] = true
		privilegedMu.Unlock()
		if taken {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatal("no free port in 600..1019 on 127.0.0.1")
	return 0
}

// TestHardenedReloadAndStopUnderLoad: under keep-alive, new-connection and
// slow load, 10 `systemctl reload`s of the hardened unit fail no request;
// each one installs another binary (alternating versions, replaced with mv
// in the read-only, exec-allowed directory), and MainPID is then the new
// generation, which answers with the new version, runs as the unit's
// dynamic user (not root) and holds exactly CAP_NET_BIND_SERVICE; the
// privileged port stays served throughout. Then `systemctl stop` with 2 s
// requests in flight answers them and ends inactive/success.
func TestHardenedReloadAndStopUnderLoad(t *testing.T) {
	sdtest.Each(t, testHardenedReloadAndStopUnderLoad)
}

func testHardenedReloadAndStopUnderLoad(t *testing.T, sd *sdtest.Systemd) {
	if _, err := v2Binary(); err != nil {
		t.Fatal(err)
	}
	h := installHardened(t, sd, nil)
	h.mustCtl("start", h.name+".service")
	uid := h.uid()
	prev := h.mainPID()
	if err := checkProcess(sd, prev, uid); err != nil {
		t.Fatalf("first generation: %v", err)
	}
	t.Logf("serving on privileged port %d as dynamic user %s (uid %s)", h.port, h.prop("User"), uid)

	stop := sync.OnceValue(load(t, h.addr, keepAlive, newConn, slow))
	defer stop()
	time.Sleep(300 * time.Millisecond)
	for i := range 10 {
		want := v2
		if i%2 == 1 {
			want = v1
		}
		h.upgradeTo(want)
		begin := time.Now()
		h.mustCtl("reload", h.name+".service")
		main := h.mainPID()
		pid, version, err := h.answer()
		t.Logf("reload %d: %v, MainPID %d -> %d, version %s", i+1, time.Since(begin).Round(time.Millisecond), prev, main, version)
		if err != nil || main == prev || main != pid || version != want {
			t.Fatalf("reload %d: MainPID %d (was %d), answered by pid %d version %q (%v): want the new generation, version %s", i+1, main, prev, pid, version, err, want)
		}
		if err := checkProcess(sd, main, uid); err != nil {
			t.Fatalf("generation %d: %v", i+2, err)
		}
		if st := h.prop("ActiveState"); st != "active" {
			t.Fatalf("reload %d: unit %s", i+1, st)
		}
		prev = main
	}
	time.Sleep(200 * time.Millisecond)
	noFailures(t, stop())

	errs := inflight(h.addr, 3)
	time.Sleep(300 * time.Millisecond)
	h.mustCtl("stop", h.name+".service")
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("request in flight at stop: %v", err)
		}
	}
	if st, res := h.prop("ActiveState"), h.prop("Result"); st != "inactive" || res != "success" {
		t.Fatalf("after stop: %s, result %s\n%s", st, res, sd.Journal(h.name+".service"))
	}
	// ExecReload= and ExecStop= (hitless reload/stop) ran as the dynamic
	// user too: the control socket logs each peer's uid.
	j := sd.Journal(h.name + ".service")
	for verb, n := range map[string]int{"reload": 10, "stop": 1} {
		as := regexp.MustCompile(`control socket: `+verb+` requested" pid=\d+ peer_uid=(\d+)`).FindAllStringSubmatch(j, -1)
		ok := len(as) == n
		for _, m := range as {
			ok = ok && m[1] == uid
		}
		if !ok {
			t.Errorf("%s requests on the control socket: %v, want %d from uid %s", verb, as, n, uid)
		}
	}
}

// TestHardenedRestartAndCrash: `systemctl restart` of the hardened unit
// under load fails no request; a SIGKILL of the main process refuses no
// connection (the socket waits in the fd store), systemd restarts it once,
// as the dynamic user with the same capabilities, and the control socket
// works again (a reload after the crash succeeds).
func TestHardenedRestartAndCrash(t *testing.T) { sdtest.Each(t, testHardenedRestartAndCrash) }

func testHardenedRestartAndCrash(t *testing.T, sd *sdtest.Systemd) {
	h := installHardened(t, sd, nil)
	h.mustCtl("start", h.name+".service")
	h.mustCtl("reload", h.name+".service") // the store outlives generations too

	stop := sync.OnceValue(load(t, h.addr, keepAlive, newConn, slow))
	defer stop()
	time.Sleep(300 * time.Millisecond)
	before := h.mainPID()
	h.mustCtl("restart", h.name+".service")
	after := h.mainPID()
	if after == before || h.prop("ActiveState") != "active" {
		t.Fatalf("restart: MainPID %d -> %d, %s", before, after, h.prop("ActiveState"))
	}
	if err := checkProcess(sd, after, h.uid()); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	noFailures(t, stop())

	stop = sync.OnceValue(load(t, h.addr, newConn))
	defer stop()
	time.Sleep(300 * time.Millisecond)
	killed := h.mainPID()
	if out, err := sd.Exec("kill", "-9", strconv.Itoa(killed)); err != nil {
		t.Fatalf("kill: %v %s", err, out)
	}
	var next int
	if err := waitFor(15*time.Second, func() bool {
		next = h.mainPID()
		return next != 0 && next != killed && h.prop("ActiveState") == "active"
	}); err != nil {
		t.Fatalf("not restarted after the crash: %v\n%s", err, sd.Journal(h.name+".service"))
	}
	time.Sleep(300 * time.Millisecond)
	if r := stop()[0]; r.Failures[loadgen.Refused] != 0 || r.OK == 0 {
		t.Fatalf("across the crash: %s", r.String())
	}
	if n := h.prop("NRestarts"); n != "1" {
		t.Errorf("NRestarts = %s, want 1", n)
	}
	if err := checkProcess(sd, next, h.uid()); err != nil {
		t.Fatalf("restarted after the crash: %v", err)
	}
	h.mustCtl("reload", h.name+".service")
	if pid, _, err := h.answer(); err != nil || pid == next || pid != h.mainPID() {
		t.Fatalf("reload after the crash: answered by %d (%v), MainPID %d, restarted process %d", pid, err, h.mainPID(), next)
	}
}

// TestHardenedSandbox: the hardening is in effect, as systemd reports it
// and as the running service meets it: who it runs as, what it holds, what
// it cannot write or see.
func TestHardenedSandbox(t *testing.T) { sdtest.Each(t, testHardenedSandbox) }

func testHardenedSandbox(t *testing.T, sd *sdtest.Systemd) {
	h := installHardened(t, sd, nil)
	// Planted before the start, where the service must not see them.
	marker := sd.UnitName("marker")
	h.exec("mkdir", "-p", "/home/"+marker)
	t.Cleanup(func() { sd.Exec("rm", "-rf", "/home/"+marker, "/tmp/"+marker) })
	h.exec("touch", "/tmp/"+marker)
	h.mustCtl("start", h.name+".service")

	for prop, want := range map[string]string{
		"DynamicUser":              "yes",
		"NoNewPrivileges":          "yes",
		"RestrictSUIDSGID":         "yes",
		"ProtectSystem":            "strict",
		"ProtectHome":              "yes",
		"PrivateTmp":               "yes",
		"PrivateDevices":           "yes",
		"PrivateIPC":               "yes",
		"ProtectProc":              "invisible",
		"ReadOnlyPaths":            "/run",
		"UMask":                    "0077",
		"CapabilityBoundingSet":    "cap_net_bind_service",
		"AmbientCapabilities":      "cap_net_bind_service",
		"RestrictAddressFamilies":  "AF_INET AF_INET6 AF_UNIX",
		"SystemCallArchitectures":  "native",
		"LockPersonality":          "yes",
		"MemoryDenyWriteExecute":   "yes",
		"RestrictNamespaces":       "yes",
		"RestrictRealtime":         "yes",
		"ProtectKernelTunables":    "yes",
		"ProtectKernelModules":     "yes",
		"ProtectKernelLogs":        "yes",
		"ProtectControlGroups":     "yes",
		"ProtectClock":             "yes",
		"ProtectHostname":          "yes",
		"RuntimeDirectoryMode":     "0700",
		"RuntimeDirectoryPreserve": "yes",
		"FileDescriptorStoreMax":   "4",
		"NotifyAccess":             "all",
	} {
		if got := h.prop(prop); got != want {
			t.Errorf("%s=%s, want %s", prop, got, want)
		}
	}
	// The system-call filter: the service's own calls allowed, privileged
	// and scheduling ones not.
	filter := " " + h.prop("SystemCallFilter") + " "
	for _, call := range []string{"bind", "accept4", "sendmsg", "execve", "prlimit64"} {
		if !strings.Contains(filter, " "+call+" ") {
			t.Errorf("SystemCallFilter does not allow %s", call)
		}
	}
	for _, call := range []string{"setuid", "chown", "reboot", "mount", "sched_setaffinity", "setpriority"} {
		if strings.Contains(filter, " "+call+" ") {
			t.Errorf("SystemCallFilter allows %s", call)
		}
	}

	main := h.mainPID()
	host, err := sd.HostPID(main)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkProcess(sd, main, h.uid()); err != nil {
		t.Fatal(err)
	}
	// What the service's mount namespace allows, seen through its root.
	root := fmt.Sprintf("/proc/%d/root", host)
	for _, dir := range []string{h.dir, "/etc", "/usr/lib", "/var/lib", "/opt", "/run", "/run/lock"} {
		if err := writeIn(host, dir); !errors.Is(err, syscall.EROFS) {
			t.Errorf("writing %s in the service's view: %v, want read-only file system", dir, err)
		}
	}
	if err := writeIn(host, h.runtimeDir); err != nil {
		t.Errorf("the runtime directory %s is not writable: %v", h.runtimeDir, err)
	}
	for _, hidden := range []string{"/home/" + marker, "/tmp/" + marker, "/dev/kmsg", "/dev/mem"} {
		if _, err := os.Lstat(filepath.Join(root, hidden)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is visible to the service: %v", hidden, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "/dev/null")); err != nil {
		t.Errorf("/dev/null: %v", err)
	}
	// FileDescriptorStorePreserve=: known from 254 on, ignored before.
	if sd.Major() >= 254 {
		if got := h.prop("FileDescriptorStorePreserve"); got != "yes" {
			t.Errorf("FileDescriptorStorePreserve=%s, want yes", got)
		}
	} else if j := sd.Journal(h.name + ".service"); !strings.Contains(j, "Unknown key 'FileDescriptorStorePreserve'") {
		t.Errorf("systemd %d does not say it ignores FileDescriptorStorePreserve=:\n%s", sd.Major(), j)
	}

	// hitless status as root, outside the unit (what an operator types),
	// agrees with StatusText. On systemd 257 (not 252) the preserved
	// runtime directory of a dynamic user is mounted id-mapped: seen from
	// outside, the socket belongs to nobody, not to the service's uid, and
	// the client vouches for the server only because the socket is behind
	// /run/private, which only root may enter (control.trustServer;
	// without that rule: "… nor the socket's owner (uid 65534); not
	// trusted").
	socket := h.runtimeDir + "/control.sock"
	mnt, _ := sd.Exec("nsenter", "-t", strconv.Itoa(main), "-m", "findmnt", "-n", "-o", "OPTIONS", "-T", h.runtimeDir)
	t.Logf("runtime directory mounted %s", strings.TrimSpace(mnt))
	out, err := sd.Exec(filepath.Join(h.dir, "hitless"), "status", "-socket", socket)
	if err != nil {
		t.Fatalf("hitless status as root: %v %s (runtime directory mounted %q)", err, out, mnt)
	}
	t.Logf("hitless status as root: %s", strings.TrimSpace(out))
	want := fmt.Sprintf("pid %d, generation 1, serving", main)
	if st := h.prop("StatusText"); !strings.Contains(out, want) || st != fmt.Sprintf("serving, generation 1, pid %d", main) {
		t.Errorf("hitless status says %q, StatusText %q; want both to say generation 1, pid %d, serving", strings.TrimSpace(out), st, main)
	}
}

// TestHardenedStopStartKeepsTheSocket: a unit wanted by nothing loses its
// store at stop (it is unloaded). With the unit wanted by a target,
// FileDescriptorStorePreserve=yes keeps the listening socket across
// `systemctl stop` on systemd 254 and later: a request sent while the
// unit is stopped waits, and is answered once it starts. On 252 the key is
// ignored: stop closes the socket, and the next start binds the privileged
// port again, as the dynamic user.
func TestHardenedStopStartKeepsTheSocket(t *testing.T) {
	sdtest.Each(t, testHardenedStopStartKeepsTheSocket)
}

func testHardenedStopStartKeepsTheSocket(t *testing.T, sd *sdtest.Systemd) {
	h := installHardened(t, sd, nil)
	// Wanted by nothing, the unit is unloaded once stopped, and its store
	// goes with it, on 252 and 257. (Tried by hand on Debian forky's 262,
	// not in CI: there it keeps the socket even so, and this check fails.)
	h.mustCtl("start", h.name+".service")
	h.mustCtl("stop", h.name+".service")
	// systemd unloads a unit from its garbage-collection queue, after the
	// stop job has completed and systemctl has returned: the store's
	// sockets close a moment later.
	var stored string
	queue := 0
	waitFor(3*time.Second, func() bool {
		stored, queue = h.prop("NFileDescriptorStore"), acceptQueue(h.addr)
		return stored == "0" && queue == -1
	})
	if stored != "0" || queue != -1 {
		t.Fatalf("an unreferenced unit kept its socket across stop: store %s, accept queue %d", stored, queue)
	}

	h.mustCtl("add-wants", "basic.target", h.name+".service")
	t.Cleanup(func() { h.ctl("disable", h.name+".service") })
	h.mustCtl("start", h.name+".service")
	h.mustCtl("reload", h.name+".service")
	h.mustCtl("stop", h.name+".service")
	stored, queue = h.prop("NFileDescriptorStore"), acceptQueue(h.addr)
	t.Logf("stopped: %s socket(s) in the store, accept queue %d (-1: nothing listens)", stored, queue)

	if sd.Major() < 254 {
		if stored != "0" || queue != -1 {
			t.Fatalf("systemd %d kept the socket across stop: store %s, accept queue %d", sd.Major(), stored, queue)
		}
		if c, err := net.DialTimeout("tcp", h.addr, 2*time.Second); err == nil {
			c.Close()
			t.Fatal("a connection to the stopped unit's port was accepted")
		}
		h.mustCtl("start", h.name+".service")
		if err := checkProcess(sd, h.mainPID(), h.uid()); err != nil {
			t.Fatal(err)
		}
		if pid, _, err := h.answer(); err != nil || pid != h.mainPID() {
			t.Fatalf("after start: answered by %d (%v), MainPID %d", pid, err, h.mainPID())
		}
		return
	}

	if stored != "1" || queue < 0 {
		t.Fatalf("systemd %d released the socket at stop: store %s, accept queue %d", sd.Major(), stored, queue)
	}
	type result struct {
		pid int
		err error
	}
	waiting := make(chan result, 1)
	go func() {
		pid, _, err := h.answer()
		waiting <- result{pid, err}
	}()
	if err := waitFor(2*time.Second, func() bool { return acceptQueue(h.addr) >= 1 }); err != nil {
		t.Errorf("the request does not wait in the accept queue: %v", err)
	}
	h.mustCtl("start", h.name+".service")
	r := <-waiting
	if r.err != nil || r.pid != h.mainPID() {
		t.Fatalf("the request sent while stopped: answered by %d (%v), MainPID %d", r.pid, r.err, h.mainPID())
	}
	if j := sd.Journal(h.name + ".service"); strings.Contains(j, "bind:") {
		t.Errorf("the service bound its socket again instead of taking the stored one:\n%s", j)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`)

// exposure runs `systemd-analyze security` on a loaded unit inside the
// container and returns its score and verdict, and the lines of what is
// still exposed.
func exposure(t *testing.T, sd *sdtest.Systemd, unit string) (float64, string, []string) {
	t.Helper()
	out, err := sd.Exec("systemd-analyze", "security", "--no-pager", unit)
	if err != nil {
		t.Fatalf("systemd-analyze security %s: %v\n%s", unit, err, out)
	}
	m := exposureRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security %s: no overall exposure level in:\n%s", unit, out)
	}
	score, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, "✗") {
			f := strings.Fields(strings.TrimPrefix(line, "✗"))
			if len(f) > 0 {
				open = append(open, f[0])
			}
		}
	}
	return score, m[2], open
}

// TestHardenedSecurityScore: `systemd-analyze security` rates the hardened
// unit at most maxExposure ("OK"), far below the shipped unit.
func TestHardenedSecurityScore(t *testing.T) { sdtest.Each(t, testHardenedSecurityScore) }

func testHardenedSecurityScore(t *testing.T, sd *sdtest.Systemd) {
	h := installHardened(t, sd, nil)
	shipped := install(t, sd, "hitless-http.service", nil)
	score, verdict, open := exposure(t, sd, h.name+".service")
	base, baseVerdict, _ := exposure(t, sd, shipped.name+".service")
	t.Logf("systemd-analyze security on %s: hardened unit %.1f %s, shipped unit %.1f %s", sd.Version(), score, verdict, base, baseVerdict)
	t.Logf("still exposed (hardened): %s", strings.Join(open, " "))
	if score > maxExposure {
		t.Errorf("hardened unit's exposure %.1f %s, want at most %.1f", score, verdict, maxExposure)
	}
	if base <= score {
		t.Errorf("shipped unit %.1f is not above the hardened one %.1f", base, score)
	}
}

// TestHardenedAddressFamilies: what AF_UNIX in RestrictAddressFamilies= is
// needed for, one use at a time, with AF_UNIX taken out. The control
// socket: the service does not start. systemd's notify socket (the control
// socket left out too): READY=1 cannot be sent, and the start times out.
// hitless's handoff socket pair (notify socket and control socket left
// out: Type=simple, kill -HUP): the upgrade still succeeds, because
// socketpair(2) is not filtered, so AF_UNIX is not needed for it.
func TestHardenedAddressFamilies(t *testing.T) { sdtest.Each(t, testHardenedAddressFamilies) }

func testHardenedAddressFamilies(t *testing.T, sd *sdtest.Systemd) {
	noUnix := func(s string) string {
		return strings.Replace(s, "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "RestrictAddressFamilies=AF_INET AF_INET6", 1)
	}
	control := regexp.MustCompile(` -control \S+`)
	noControl := func(s string) string {
		s = control.ReplaceAllString(noUnix(s), "")
		s = regexp.MustCompile(`(?m)^ExecReload=.*$`).ReplaceAllString(s, "ExecReload=/bin/kill -HUP $$MAINPID")
		s = regexp.MustCompile(`(?m)^ExecStop=.*\n`).ReplaceAllString(s, "")
		return strings.Replace(s, "TimeoutStartSec=90s", "TimeoutStartSec=3s", 1)
	}

	t.Run("control socket", func(t *testing.T) {
		h := installHardened(t, sd, noUnix)
		if _, err := h.ctl("start", h.name+".service"); err == nil {
			t.Fatal("started without AF_UNIX")
		}
		if j := sd.Journal(h.name + ".service"); !strings.Contains(j, "control socket") || !strings.Contains(j, "address family not supported") {
			t.Fatalf("not the control socket that failed:\n%s", j)
		}
	})
	t.Run("notify socket", func(t *testing.T) {
		h := installHardened(t, sd, noControl)
		if _, err := h.ctl("start", h.name+".service"); err == nil {
			t.Fatal("started without AF_UNIX")
		}
		// Not the Result property: Restart=on-failure may have started
		// the unit again by now, which resets it.
		j := sd.Journal(h.name + ".service")
		if !strings.Contains(j, "Failed with result 'timeout'") || !strings.Contains(j, `readiness: notify \"READY=1`) || !strings.Contains(j, "address family not supported") {
			t.Fatalf("not a start that timed out because READY=1 could not be sent:\n%s", j)
		}
	})
	t.Run("handoff socket pair", func(t *testing.T) {
		h := installHardened(t, sd, func(s string) string {
			s = strings.Replace(noControl(s), "Type=notify", "Type=simple", 1)
			s = strings.Replace(s, " -fdstore", "", 1)
			return regexp.MustCompile(`(?m)^(WatchdogSec|FileDescriptorStore\w*)=.*\n`).ReplaceAllString(s, "")
		})
		h.mustCtl("start", h.name+".service")
		first := h.mainPID()
		// Type=simple: start returns before the process runs as the
		// unit's user, and kill -HUP from ExecReload= (run as that user)
		// would be refused (seen: "Operation not permitted"). Wait for
		// it to be ready.
		if err := waitFor(15*time.Second, func() bool {
			return strings.Contains(sd.Journal(h.name+".service"), "msg=ready pid="+strconv.Itoa(first)+" generation=1")
		}); err != nil {
			t.Fatalf("generation 1 not ready: %v\n%s", err, sd.Journal(h.name+".service"))
		}
		h.mustCtl("reload", h.name+".service")
		ready := regexp.MustCompile(`msg=ready pid=(\d+) generation=2`)
		var m []string
		if err := waitFor(15*time.Second, func() bool {
			m = ready.FindStringSubmatch(sd.Journal(h.name + ".service"))
			return m != nil
		}); err != nil {
			t.Fatalf("no generation 2 without AF_UNIX: %v\n%s", err, sd.Journal(h.name+".service"))
		}
		if m[1] == strconv.Itoa(first) {
			t.Fatalf("generation 2 is the first process %d", first)
		}
		t.Logf("generation 2 (pid %s) took over from pid %d with AF_UNIX denied", m[1], first)
	})
}

// TestHardenedLeftOut: what each directive the unit leaves out (or adds
// against a surprise) does, measured, so that the unit's comments stay
// true. PrivateUsers=yes: the capability no longer opens port 80, the start
// fails. ProcSubset=pid: Go listens with a backlog of 128, not 4096.
// NoExecPaths=/ with ExecPaths=: the ExecPaths= directories become
// writable. Without ReadOnlyPaths=/run: /run and /run/lock are writable
// despite ProtectSystem=strict.
func TestHardenedLeftOut(t *testing.T) { sdtest.Each(t, testHardenedLeftOut) }

func testHardenedLeftOut(t *testing.T, sd *sdtest.Systemd) {
	add := func(lines string) func(string) string {
		return func(s string) string {
			return strings.Replace(s, "\nUMask=0077\n", "\nUMask=0077\n"+lines+"\n", 1)
		}
	}
	hostPID := func(h *hardened) int {
		t.Helper()
		host, err := sd.HostPID(h.mainPID())
		if err != nil {
			t.Fatal(err)
		}
		return host
	}

	t.Run("PrivateUsers", func(t *testing.T) {
		h := installHardened(t, sd, add("PrivateUsers=yes"))
		if _, err := h.ctl("start", h.name+".service"); err == nil {
			t.Fatal("started with PrivateUsers=yes")
		}
		if j := sd.Journal(h.name + ".service"); !strings.Contains(j, "bind: permission denied") {
			t.Fatalf("not the bind that failed:\n%s", j)
		}
	})
	t.Run("ProcSubset", func(t *testing.T) {
		if _, err := exec.LookPath("ss"); err != nil {
			t.Skip("no ss here to read a listening socket's backlog")
		}
		backlog := func(edit func(string) string) string {
			h := installHardened(t, sd, edit)
			h.mustCtl("start", h.name+".service")
			defer h.mustCtl("stop", h.name+".service")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// For a listening socket, Send-Q is its backlog.
			out, err := exec.CommandContext(ctx, "ss", "-Hltn", fmt.Sprintf("sport = :%d", h.port)).Output()
			f := strings.Fields(string(out))
			if err != nil || len(f) < 3 {
				t.Fatalf("ss: %v %q", err, out)
			}
			return f[2]
		}
		with, without := backlog(add("ProcSubset=pid")), backlog(nil)
		t.Logf("listen backlog: %s with ProcSubset=pid, %s without", with, without)
		if with != "128" || without == "128" {
			t.Fatalf("listen backlog %s with ProcSubset=pid, %s without: want 128 and more", with, without)
		}
	})
	t.Run("ExecPaths", func(t *testing.T) {
		h := installHardened(t, sd, func(s string) string {
			dir := regexp.MustCompile(`(?m)^ExecStart=(\S+)/hitless-http `).FindStringSubmatch(s)[1]
			return add("NoExecPaths=/\nExecPaths=" + dir + " /usr/lib -/usr/lib64")(s)
		})
		h.mustCtl("start", h.name+".service")
		host := hostPID(h)
		if err := writeIn(host, "/etc"); !errors.Is(err, syscall.EROFS) {
			t.Errorf("/etc: %v, want read-only", err)
		}
		for _, dir := range []string{h.dir, "/usr/lib"} {
			if err := writeIn(host, dir); err != nil {
				t.Errorf("%s is read-only with ExecPaths= (%v): the unit's comment is wrong", dir, err)
			}
		}
	})
	t.Run("ReadOnlyPaths", func(t *testing.T) {
		h := installHardened(t, sd, func(s string) string { return strings.Replace(s, "ReadOnlyPaths=/run\n", "", 1) })
		h.mustCtl("start", h.name+".service")
		host := hostPID(h)
		for _, dir := range []string{"/run", "/run/lock"} {
			if err := writeIn(host, dir); err != nil {
				t.Errorf("%s is not writable without ReadOnlyPaths=/run (%v): the directive may no longer be needed", dir, err)
			}
		}
		if err := writeIn(host, "/etc"); !errors.Is(err, syscall.EROFS) {
			t.Errorf("/etc: %v, want read-only", err)
		}
	})
}

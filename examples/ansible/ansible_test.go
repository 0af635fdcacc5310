//go:build linux

// Package ansible_test runs rolling-reload.yml for real: ansible-playbook
// connects over SSH to two "hosts", each an sshd on its own 127.0.0.1 port
// inside the real systemd container of internal/sdtest, and each with its
// own instance of examples/systemd/hitless-http.service, under load.
//
// It needs ansible-playbook and sshd (.ci/ansible-deps.sh installs them,
// before the container boots); without them it skips and says why, or
// fails if HITLESS_REQUIRE_SYSTEMD=1.
package ansible_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
	"github.com/hitlessgo/hitless/internal/sdtest"
)

// Bounds on the waits of this test.
const (
	playbookTimeout = 3 * time.Minute // one ansible-playbook run
	sshdTimeout     = 15 * time.Second
	cmdTimeout      = time.Minute // ssh-keygen
)

var binDir string // hitless-http v1 and v2, and the hitless CLI, built once

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(sdtest.M(buildFirst{m}))
}

type buildFirst struct{ m *testing.M }

func (b buildFirst) Run() int {
	var err error
	if binDir, err = os.MkdirTemp("", "hitless-ansible"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, b := range []struct{ pkg, out, ldflags string }{
		{"./examples/http", "hitless-http-v1", "-X main.version=v1"},
		{"./examples/http", "hitless-http-v2", "-X main.version=v2"},
		{"./cmd/hitless", "hitless", ""},
	} {
		if err := harness.Build(ctx, b.pkg, filepath.Join(binDir, b.out), false, b.ldflags); err != nil {
			fmt.Fprintln(os.Stderr, "build:", err)
			return 1
		}
	}
	return b.m.Run()
}

// needTools skips t (or fails it, when a real systemd is required) if
// Ansible or OpenSSH is missing.
func needTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, p := range []string{"ansible-playbook", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		missing = append(missing, "/usr/sbin/sshd")
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ") + ": run .ci/ansible-deps.sh (apt-get install ansible-core openssh-server), before the systemd container boots"
	switch strings.ToLower(os.Getenv(sdtest.EnvRequire)) {
	case "1", "true", "yes":
		t.Fatal(msg + " (" + sdtest.EnvRequire + "=1 requires this test to run)")
	}
	t.Skip(msg + " (set " + sdtest.EnvRequire + "=1 to fail instead)")
}

// host is one test host: an sshd and a hitless-http unit of its own, in
// the shared container.
type host struct {
	name       string // inventory name: host1, host2
	sshd       string // its sshd's unit
	sshAddr    string // 127.0.0.1:port of its sshd
	unit, addr string // the hitless-http unit and its HTTP address
	dir        string // its binaries and sshd config, under the share dir
	bin, cli   string
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil { // never in place
		t.Fatal(err)
	}
}

// setUp starts n hosts and returns them with the ansible-playbook
// environment (inventory, config, keys) that reaches them.
func setUp(t *testing.T, sd *sdtest.Systemd, n int) ([]*host, []string) {
	t.Helper()
	share, ctl := sd.SharePath(), t.TempDir()

	// Keys: the sshds' host key (pinned in known_hosts: no trust on first
	// use) and the controller's key, authorized for root.
	hostKey, userKey := filepath.Join(share, "ssh_host_ed25519_key"), filepath.Join(ctl, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hitless-test-host", "-f", hostKey)
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hitless-test-controller", "-f", userKey)
	copyFile(t, userKey+".pub", filepath.Join(share, "authorized_keys"))
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}

	unitText, err := os.ReadFile("../systemd/hitless-http.service")
	if err != nil {
		t.Fatal(err)
	}
	var hosts []*host
	var inventory, knownHosts strings.Builder
	inventory.WriteString("[hitless]\n")
	for i := range n {
		h := &host{name: fmt.Sprintf("host%d", i+1), sshAddr: harness.FreeAddrT(t), addr: harness.FreeAddrT(t)}
		h.unit = sd.UnitName("hitless-http")
		h.dir = filepath.Join(share, h.name)
		if err := os.Mkdir(h.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		h.bin, h.cli = filepath.Join(h.dir, "hitless-http"), filepath.Join(h.dir, "hitless")
		copyFile(t, filepath.Join(binDir, "hitless-http-v1"), h.bin)
		copyFile(t, filepath.Join(binDir, "hitless"), h.cli)

		// The service: examples/systemd's unit, with this host's name,
		// port and paths.
		sd.WriteUnit(h.unit+".service", strings.NewReplacer(
			"/usr/local/bin/hitless-http", h.bin,
			"/usr/local/bin/hitless", h.cli,
			"127.0.0.1:8080", h.addr,
			"/run/hitless-http/", "/run/"+h.unit+"/",
			"RuntimeDirectory=hitless-http", "RuntimeDirectory="+h.unit,
		).Replace(string(unitText)))

		// Its sshd. StrictModes no: the share dir is under /var/tmp, which
		// is world-writable, and sshd checks every directory above
		// authorized_keys.
		sshHost, sshPort, _ := net.SplitHostPort(h.sshAddr)
		conf := filepath.Join(h.dir, "sshd_config")
		if err := os.WriteFile(conf, []byte(strings.Join([]string{
			"ListenAddress " + h.sshAddr,
			"HostKey " + hostKey,
			"AuthorizedKeysFile " + filepath.Join(share, "authorized_keys"),
			"PermitRootLogin prohibit-password",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"UsePAM no",
			"StrictModes no",
			"PidFile none",
			"Subsystem sftp /usr/lib/openssh/sftp-server",
			"",
		}, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		h.sshd = sd.UnitName("hitless-test-sshd") + ".service"
		sd.WriteUnit(h.sshd, "[Unit]\nDescription=sshd of test "+h.name+"\n\n[Service]\nType=notify\n"+
			"ExecStartPre=/bin/mkdir -p -m 0755 /run/sshd\n"+
			"ExecStart=/usr/sbin/sshd -D -e -f "+conf+"\nTimeoutStartSec=20\nTimeoutStopSec=20\n")
		if out, err := sd.Ctl("start", h.sshd, h.unit+".service"); err != nil {
			t.Fatalf("starting %s: %v %s\n%s\n%s", h.name, err, out, sd.Journal(h.sshd), sd.Journal(h.unit+".service"))
		}
		if err := waitDial(h.sshAddr, sshdTimeout); err != nil {
			t.Fatalf("%s: %v\n%s", h.sshd, err, sd.Journal(h.sshd))
		}

		// hitless_socket is left to its default, /run/<unit>/control.sock.
		fmt.Fprintf(&inventory, "%s ansible_host=%s ansible_port=%s hitless_unit=%s hitless_binary=%s hitless_cli=%s\n",
			h.name, sshHost, sshPort, h.unit, h.bin, h.cli)
		fmt.Fprintf(&knownHosts, "[%s]:%s %s", sshHost, sshPort, hostPub)
		hosts = append(hosts, h)
	}
	// Connection settings of the test hosts: root over SSH with the
	// controller's key (the play's become: true is then a no-op: the
	// container has no sudo, and Ansible needs none), Debian's python3.
	fmt.Fprintf(&inventory, "\n[hitless:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\nansible_python_interpreter=/usr/bin/python3\n", userKey)
	write := func(name, content string) string {
		p := filepath.Join(ctl, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inv := write("inventory.ini", inventory.String())
	known := write("known_hosts", knownHosts.String())
	// No ControlMaster: no ssh process outlives a run. Remote temporary
	// files go under the share dir, removed with it.
	cfg := write("ansible.cfg", fmt.Sprintf(`[defaults]
inventory = %s
retry_files_enabled = false
host_key_checking = true
local_tmp = %s
remote_tmp = %s
nocolor = true

[ssh_connection]
ssh_args = -F /dev/null -o ControlMaster=no -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10
pipelining = true
`, inv, filepath.Join(ctl, "ansible-local"), filepath.Join(share, "ansible-remote"), known))

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ANSIBLE_") {
			env = append(env, kv)
		}
	}
	env = append(env, "ANSIBLE_CONFIG="+cfg, "ANSIBLE_HOME="+filepath.Join(ctl, "ansible-home"))
	return hosts, env
}

func waitDial(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v: %w", addr, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// playbook runs rolling-reload.yml with the given new binary and returns
// its output and exit code.
func playbook(t *testing.T, env []string, binary string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), playbookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ansible-playbook", "rolling-reload.yml", "-e", "hitless_binary_src="+binary)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	begin := time.Now()
	out, err := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	t.Logf("ansible-playbook (%v, exit %d):\n%s", time.Since(begin).Round(time.Millisecond), code, out)
	var exitErr *exec.ExitError
	if err != nil && (!errors.As(err, &exitErr) || ctx.Err() != nil) {
		t.Fatalf("ansible-playbook: %v", err)
	}
	return string(out), code
}

// version asks a service which version answers (X-Version).
func version(t *testing.T, addr string) string {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("X-Version")
}

// load sends keep-alive traffic to every address until stop is called,
// which returns the results.
func load(t *testing.T, addrs ...string) (stop func() []loadgen.Result) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	var wg sync.WaitGroup
	results := make([]loadgen.Result, len(addrs))
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := loadgen.Run(ctx, loadgen.Config{Kind: loadgen.KeepAlive, Network: "tcp", Addr: addr, Workers: 2, Pace: 2 * time.Millisecond})
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	time.Sleep(200 * time.Millisecond)
	return func() []loadgen.Result {
		time.Sleep(200 * time.Millisecond)
		cancel()
		wg.Wait()
		return results
	}
}

func noFailures(t *testing.T, hosts []*host, rs []loadgen.Result) {
	t.Helper()
	for i, r := range rs {
		t.Logf("%s: %s", hosts[i].name, r.String())
		if r.Requests == 0 || r.Failed() != 0 {
			t.Errorf("%s: %d requests, %d failed: %v", hosts[i].name, r.Requests, r.Failed(), r.Errors)
		}
	}
}

// reloads returns the times (µs since the epoch) at which systemd logged
// that it began and finished reloading unit, in the journal.
func reloads(t *testing.T, sd *sdtest.Systemd, unit string) (began, done []int64) {
	t.Helper()
	sd.Exec("journalctl", "--sync")
	out, err := sd.Exec("journalctl", "--no-pager", "-o", "short-unix", "-u", unit)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^(\d+)\.(\d{6}) .* systemd\[1\]: (Reloading|Reloaded) `)
	for line := range strings.Lines(out) {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		us, _ := strconv.ParseInt(m[1]+m[2], 10, 64)
		if m[3] == "Reloading" {
			began = append(began, us)
		} else {
			done = append(done, us)
		}
	}
	return began, done
}

// sshLogins counts the logins h's sshd has accepted.
func sshLogins(t *testing.T, sd *sdtest.Systemd, h *host) int {
	t.Helper()
	n := strings.Count(sd.Journal(h.sshd), "Accepted publickey for root")
	if n == 0 {
		t.Fatalf("%s: no login in the journal of %s", h.name, h.sshd)
	}
	return n
}

func TestRollingReload(t *testing.T) {
	needTools(t)
	sdtest.Each(t, testRollingReload)
}

func testRollingReload(t *testing.T, sd *sdtest.Systemd) {
	if _, err := sd.Exec("test", "-x", "/usr/sbin/sshd"); err != nil {
		t.Fatalf("sshd is installed here but not in the container, which booted before it was: restart the container (.ci/run runs .ci/ansible-deps.sh first): %v", err)
	}
	hosts, env := setUp(t, sd, 2)
	pids := func() []int {
		var p []int
		for _, h := range hosts {
			p = append(p, sd.MainPID(h.unit+".service"))
		}
		return p
	}
	for _, h := range hosts {
		if v := version(t, h.addr); v != "v1" {
			t.Fatalf("%s serves %q before the rollout, want v1", h.name, v)
		}
	}

	// 1. A good new binary: host1, then host2, each reload succeeds, no
	// request fails.
	before := pids()
	stop := load(t, hosts[0].addr, hosts[1].addr)
	out, code := playbook(t, env, filepath.Join(binDir, "hitless-http-v2"))
	noFailures(t, hosts, stop())
	if code != 0 {
		t.Fatalf("ansible-playbook exited %d with a good binary", code)
	}
	after := pids()
	for i, h := range hosts {
		if v := version(t, h.addr); v != "v2" {
			t.Errorf("%s serves %q after the rollout, want v2", h.name, v)
		}
		if after[i] == before[i] {
			t.Errorf("%s: MainPID still %d: no new generation", h.name, after[i])
		}
		if !regexp.MustCompile(`(?m)^changed: \[` + h.name + `\]`).MatchString(out) {
			t.Errorf("%s: the playbook reports no change", h.name)
		}
		if m, _ := filepath.Glob(h.bin + ".*~"); len(m) != 0 {
			t.Errorf("%s: backups left behind: %v", h.name, m)
		}
	}
	_, done1 := reloads(t, sd, hosts[0].unit+".service")
	began2, _ := reloads(t, sd, hosts[1].unit+".service")
	if len(done1) != 1 || len(began2) != 1 {
		t.Fatalf("reloads in the journals: host1 finished %d, host2 began %d; want 1 each", len(done1), len(began2))
	}
	if began2[0] < done1[0] {
		t.Errorf("host2's reload began %dµs before host1's finished: not one host at a time", done1[0]-began2[0])
	}
	if strings.Index(out, "["+hosts[1].name+"]") < strings.LastIndex(out, "["+hosts[0].name+"]") {
		t.Errorf("the playbook's output mixes the hosts: not one at a time")
	}

	// 2. A broken binary (passes its pre-flight check, exits 1 when
	// started): host1 fails, the rollout stops there, host2 is never
	// touched, host1's old generation serves on and its binary is put back.
	broken := filepath.Join(t.TempDir(), "hitless-http-broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\n[ \"$1\" = -check ] && exit 0\necho 'cannot open the database' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	v2, err := os.ReadFile(filepath.Join(binDir, "hitless-http-v2"))
	if err != nil {
		t.Fatal(err)
	}
	host2Bin, err := os.Stat(hosts[1].bin)
	if err != nil {
		t.Fatal(err)
	}
	before = pids()
	logins := sshLogins(t, sd, hosts[1])
	stop = load(t, hosts[0].addr, hosts[1].addr)
	out, code = playbook(t, env, broken)
	noFailures(t, hosts, stop())
	if code == 0 {
		t.Fatal("ansible-playbook exited 0 with a broken binary")
	}
	if !strings.Contains(out, "exited with status 1") {
		t.Errorf("the playbook's output does not say why host1 failed")
	}
	if strings.Contains(out, "["+hosts[1].name+"]") {
		t.Errorf("the playbook ran tasks on host2 after host1 failed")
	}
	if n := sshLogins(t, sd, hosts[1]); n != logins {
		t.Errorf("the playbook logged in to host2 %d times after host1 failed", n-logins)
	}
	if got := pids(); got[0] != before[0] || got[1] != before[1] {
		t.Errorf("MainPIDs %v -> %v: want both unchanged (host1's old generation, host2 untouched)", before, got)
	}
	for _, h := range hosts {
		if v := version(t, h.addr); v != "v2" {
			t.Errorf("%s serves %q after the failed rollout, want v2", h.name, v)
		}
	}
	if b, err := os.ReadFile(hosts[0].bin); err != nil || string(b) != string(v2) {
		t.Errorf("host1's binary was not put back to v2 (%v)", err)
	}
	if fi, err := os.Stat(hosts[1].bin); err != nil || !os.SameFile(fi, host2Bin) || !fi.ModTime().Equal(host2Bin.ModTime()) {
		t.Errorf("host2's binary was touched (%v)", err)
	}
	if began, _ := reloads(t, sd, hosts[1].unit+".service"); len(began) != 1 {
		t.Errorf("host2 reloaded %d times, want 1 (the good rollout only)", len(began))
	}
	if st := sd.Show(hosts[0].unit+".service", "ActiveState"); st != "active" {
		t.Errorf("host1's unit is %s after the failed reload", st)
	}
}

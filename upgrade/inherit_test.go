//go:build linux || darwin

package upgrade

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func fcntlGetFD(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0) }

// inherited is what a process the application starts finds: its open
// descriptors (number → what they are) and environment.
type inherited struct {
	PID    int    `json:"pid"`
	Stderr string `json:"stderr"`        // what its fd 2 is
	Parent string `json:"parent_stderr"` // what fd 2 is in the process that started it
	// Leaky lists the descriptors of the process that started it that
	// lack close-on-exec, besides 0, 1 and 2: every process it starts
	// inherits those.
	Leaky map[string]string `json:"leaky"`
	Env   []string          `json:"env"`
}

// fdTargets names each open descriptor of this process.
func fdTargets() map[string]string {
	dir := "/proc/self/fd"
	if _, err := os.Stat(dir); err != nil {
		dir = "/dev/fd"
	}
	out := map[string]string{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			var st syscall.Stat_t
			n, _ := strconv.Atoi(e.Name())
			if syscall.Fstat(n, &st) != nil {
				continue // the directory's own descriptor, gone by now
			}
			target = fmt.Sprintf("dev %d ino %d mode %o", st.Dev, st.Ino, st.Mode&syscall.S_IFMT)
		}
		out[e.Name()] = target
	}
	return out
}

// probeMain reports what the probe process inherited.
func probeMain() int {
	json.NewEncoder(os.Stdout).Encode(inherited{PID: os.Getpid(), Stderr: fdTargets()["2"], Env: os.Environ()})
	return 0
}

// inheritable returns this process's descriptors above 2 that a process it
// starts would inherit (no close-on-exec).
func inheritable() map[string]string {
	out := map[string]string{}
	for n, target := range fdTargets() {
		fd, err := strconv.Atoi(n)
		if err != nil || fd <= 2 {
			continue
		}
		flags, err := fcntlGetFD(fd)
		if err == nil && flags&syscall.FD_CLOEXEC == 0 {
			out[n] = target
		}
	}
	return out
}

// writeSpawned starts a probe process the way an application would and
// answers with what it inherited.
func writeSpawned(w http.ResponseWriter) {
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=probe")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	var got inherited
	if err := json.Unmarshal(out, &got); err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	got.Parent = fdTargets()["2"]
	got.Leaky = inheritable()
	json.NewEncoder(w).Encode(got)
}

// TestSpawnDuringAttemptInheritsNothing: while a new generation starts
// (slowly), the old one starts a process. It gets the service's real
// stderr and no other descriptor, and no variable of hitless or
// tableflip: nothing meant for the new generation leaks to it. The new
// generation's own spawns inherit none of that either.
func TestSpawnDuringAttemptInheritsNothing(t *testing.T) {
	// Descriptors this test was itself started with, open for exec,
	// reach every process below it; they are not ours.
	outside := inheritable()
	ts := startTestServer(t, "tcp", envUpgradeT+"=10s")
	first := ts.PID()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := spawn(t, ts.addr)
	// A slow request keeps the old generation draining after the upgrade,
	// so that the new one spawns while its link to the old one is open.
	slow := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + ts.addr + "/?sleep=4s")
		if err == nil {
			resp.Body.Close()
		}
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond)
	ts.setMode("slow")
	if err := ts.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // the new generation runs and has taken its stderr pipe
	during := spawn(t, ts.addr)
	if during.servedBy != first {
		t.Fatalf("served by %d, want the old generation %d (the new one is not ready yet)", during.servedBy, first)
	}
	for name, got := range map[string]inherited{"before the upgrade": before.inherited, "during the upgrade": during.inherited} {
		checkInherited(t, name, got, outside)
	}
	if during.Stderr != before.Stderr {
		t.Errorf("fd 2 of a process spawned during the upgrade is %s, before it was %s", during.Stderr, before.Stderr)
	}
	if _, err := ts.WaitPIDChange(ctx, first); err != nil {
		t.Fatal(err)
	}
	if r := ts.nextResult(); r.Err != "" {
		t.Fatal(r.Err)
	}
	after := spawn(t, ts.addr)
	if after.servedBy == first {
		t.Fatalf("served by the old generation %d after the upgrade", first)
	}
	checkInherited(t, "by the new generation", after.inherited, outside)
	if err := <-slow; err != nil {
		t.Errorf("the slow request across the upgrade: %v", err)
	}
	if after.Stderr != before.Stderr {
		t.Errorf("fd 2 of a process the new generation spawned is %s, want the service's stderr %s", after.Stderr, before.Stderr)
	}
}

type spawned struct {
	inherited
	servedBy int
}

func spawn(t *testing.T, addr string) spawned {
	t.Helper()
	// A new connection each time: a kept-alive one would still reach the
	// old generation while it drains.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/?spawn=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s spawned
	if err := json.NewDecoder(resp.Body).Decode(&s.inherited); err != nil {
		t.Fatal(err)
	}
	s.servedBy, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	return s
}

func checkInherited(t *testing.T, when string, got inherited, outside map[string]string) {
	t.Helper()
	for n, target := range got.Leaky {
		if outside[n] == target {
			continue
		}
		t.Errorf("a process spawned %s inherits fd %s (%s): it lacks close-on-exec", when, n, target)
	}
	if got.Stderr != got.Parent {
		t.Errorf("a process spawned %s has fd 2 = %s, but its parent's stderr is %s", when, got.Stderr, got.Parent)
	}
	for _, kv := range got.Env {
		if strings.HasPrefix(kv, "HITLESS_GENERATION=") || strings.HasPrefix(kv, "TABLEFLIP_") || strings.HasPrefix(kv, "LISTEN_") {
			t.Errorf("a process spawned %s inherited %s", when, kv)
		}
	}
}

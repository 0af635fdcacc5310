package sdtest

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Environment variables that steer Boot.
const (
	// EnvRequire set to 1 (or true) turns "no systemd here" from a skip
	// into a test failure. CI sets it.
	EnvRequire = "HITLESS_REQUIRE_SYSTEMD"
	// EnvState names the state directory of a container booted by
	// .ci/systemd/start-systemd.sh (its SDCI_STATE) over the machine's own
	// root; Boot then reuses that container instead of booting one of its
	// own.
	EnvState = "HITLESS_SYSTEMD_STATE"
	// EnvStateTrixie does the same for the container of Debian 13's
	// systemd (start-systemd.sh with SDCI_LOWER a tree of
	// .ci/systemd/debian-tree.sh).
	EnvStateTrixie = "HITLESS_SYSTEMD_TRIXIE_STATE"
	// EnvFlavors, if set, names the flavors Each runs tests on, separated
	// by commas ("trixie"); the others' subtests are skipped, even when
	// a real systemd is required. Unset: all of them.
	EnvFlavors = "HITLESS_SYSTEMD_FLAVORS"
	// EnvReport, if set, names a file to which each subtest of Each
	// appends one line when it ends: its name, the systemd version, its
	// outcome and how long it took (.ci/run prints them, since go test
	// shows passing tests' logs only with -v).
	EnvReport = "HITLESS_SYSTEMD_REPORT"
)

// A Flavor is one systemd the tests run on: the machine's own (Debian 12's
// 252 on the project's machines), or the systemd of a Debian tree booted
// over it.
type Flavor struct {
	// Name is "host" or the tree's Debian suite ("trixie").
	Name string
	// suite is the Debian suite of the tree, "" for the machine's own root.
	suite string
	// envState names the variable with the state directory of a container
	// to reuse.
	envState string
}

// The flavors of systemd the tests know.
var (
	// Host is the machine's own systemd (252 on Debian 12).
	Host = Flavor{Name: "host", envState: EnvState}
	// Trixie is Debian 13's systemd (257), booted over a debootstrap tree
	// that .ci/systemd/debian-tree.sh makes once (~40 s) and reuses.
	Trixie = Flavor{Name: "trixie", suite: "trixie", envState: EnvStateTrixie}
)

// Flavors are the systemds [Each] runs a test on, oldest first.
var Flavors = []Flavor{Host, Trixie}

// selected reports whether the flavors list (EnvFlavors's value) lets f
// run, and if not, why.
func selected(list string, f Flavor) (bool, string) {
	if strings.TrimSpace(list) == "" {
		return true, ""
	}
	for _, name := range strings.Split(list, ",") {
		if strings.TrimSpace(name) == f.Name {
			return true, ""
		}
	}
	return false, fmt.Sprintf("%s=%s leaves out the %s flavor", EnvFlavors, list, f.Name)
}

// reportLine is the line Each appends to the report file for one subtest.
func reportLine(test, version, outcome string, took time.Duration) string {
	return fmt.Sprintf("%-7s %7.1fs  %-60s %s\n", outcome, took.Seconds(), test, version)
}

// report appends line to the file named by EnvReport, if set. A failure
// to write is the test's: the report is what CI shows of these tests.
func report(t testing.TB, line string) {
	path := os.Getenv(EnvReport)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err == nil {
		// One write of a short line to an O_APPEND file: lines of
		// parallel tests and processes do not interleave.
		_, err = f.WriteString(line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Errorf("sdtest: report to %s=%s: %v", EnvReport, path, err)
	}
}

// treeDir is where debian-tree.sh keeps the tree of suite.
func treeDir(suite string) string { return "/var/tmp/hitless-root-" + suite }

// required reports whether the environment demands a real systemd.
func required(getenv func(string) string) bool {
	switch strings.ToLower(strings.TrimSpace(getenv(EnvRequire))) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// probe is what Boot finds out about the machine before trying to boot.
type probe struct {
	goos    string
	euid    int
	missing []string // programs or files that are needed and absent
	script  string   // path of start-systemd.sh, "" if not found
}

// unavailable says why a container cannot be booted here, or "" if it
// can (as far as can be told without trying).
func unavailable(p probe) string {
	switch {
	case p.goos != "linux":
		return "real systemd tests need Linux (GOOS=" + p.goos + ")"
	case p.euid != 0:
		return "real systemd tests need root (systemd-nspawn, mount namespaces, cgroups); run the tests as root"
	case len(p.missing) > 0:
		return "real systemd tests need " + strings.Join(p.missing, ", ") +
			"; `.ci/systemd/start-systemd.sh start` installs them (apt-get install systemd-container)"
	case p.script == "":
		return "cannot find .ci/systemd/start-systemd.sh above the working directory"
	}
	return ""
}

// giveUp ends the test because no systemd is available: it skips it, or
// fails it if a real systemd is required.
func giveUp(t testing.TB, require bool, reason string) {
	t.Helper()
	if require {
		t.Fatal("sdtest: no real systemd, and " + EnvRequire + "=1 requires one: " + reason)
		return
	}
	t.Skip("sdtest: skipped, no real systemd: " + reason + " (set " + EnvRequire + "=1 to fail instead)")
}

// NoStartLimit returns a unit file's content with StartLimitIntervalSec=0
// in its [Unit] section (added if the content does not set it), so that a
// test can start and restart the unit as often as it likes without
// systemd refusing with "start request repeated too quickly".
func NoStartLimit(content string) string {
	if strings.Contains(content, "StartLimitIntervalSec=") {
		return content
	}
	lines := strings.SplitAfter(content, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == "[Unit]" {
			if !strings.HasSuffix(l, "\n") {
				lines[i] = l + "\n"
			}
			return strings.Join(lines[:i+1], "") + "StartLimitIntervalSec=0\n" + strings.Join(lines[i+1:], "")
		}
	}
	return "[Unit]\nStartLimitIntervalSec=0\n\n" + content
}

// M wraps a TestMain's m so that a container this process booted is
// stopped as soon as the tests have run, before the process exits (without
// it, a watcher process stops the container just after the test process
// has exited):
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(sdtest.M(m)) }
func M(m interface{ Run() int }) interface{ Run() int } { return stopAfter{m} }

type stopAfter struct{ m interface{ Run() int } }

func (s stopAfter) Run() int {
	code := s.m.Run()
	if err := stopOwned(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

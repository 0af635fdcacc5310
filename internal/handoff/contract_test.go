//go:build unix

package handoff

// The contract test: a real tableflip v1.2.3, in re-executed test
// binaries, is driven into every text classify and classifyNew recognise,
// and the typed result is checked with the real values (the child's PID,
// its exit status, the signal that killed it, the timeout). tableflip's
// errors are plain text (classify.go), so this is what stands between a
// tableflip release that rewords one and a hitless that quietly
// misclassifies it; a failure names the text tableflip v1.2.3 writes and
// where.
//
// The processes: the test starts a role (a first generation of a service,
// playing one scenario) and waits for it; the role writes what each
// tableflip call returned to a report file and exits. A role that upgrades
// starts contractChild, which behaves as contractChildEnv says. A child
// tells its parent its PID, and what it saw, on its stdout: tableflip hands
// the parent's os.Stdout to the child (child.go:34), and the parent makes
// that a pipe. Every generation is reaped by its parent before the parent
// reports, and every wait is bounded.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/hitlessgo/hitless/control"
)

func init() {
	roles[roleFirst] = contractFirst
	roles[roleUpgrade] = contractUpgrade
	roles[roleBusy] = contractBusy
	roles[roleSuccess] = contractSuccess
	roles[roleNew] = contractNew
	roles[roleChild] = contractChild
}

// Roles of the contract test.
const (
	roleFirst   = "contract-first"   // no upgrade: Upgrade before Ready, a second New, Upgrade after Stop
	roleUpgrade = "contract-upgrade" // one Upgrade, which fails
	roleBusy    = "contract-busy"    // a second Upgrade during one, then Stop
	roleSuccess = "contract-success" // an Upgrade that succeeds, and one after it
	roleNew     = "contract-new"     // tableflip.New only
	roleChild   = "contract-child"   // the new generation of the roles that upgrade
)

// Environment of the roles.
const (
	contractReportEnv  = "HITLESS_CONTRACT_REPORT"  // file the role writes its contractReport to
	contractChildEnv   = "HITLESS_CONTRACT_CHILD"   // how contractChild behaves: one of child*
	contractTimeoutEnv = "HITLESS_CONTRACT_TIMEOUT" // roleUpgrade's UpgradeTimeout
	contractArgv0Env   = "HITLESS_CONTRACT_ARGV0"   // roleUpgrade's os.Args[0]: the binary tableflip starts
)

// How contractChild behaves.
const (
	childExit0   = "exit0"   // exits with status 0 before it is ready
	childExit3   = "exit3"   // exits with status 3 before it is ready
	childKill    = "kill"    // kills itself with SIGKILL
	childAbort   = "abort"   // panics with GOTRACEBACK=crash: SIGABRT
	childHang    = "hang"    // never gets ready
	childUpgrade = "upgrade" // gets ready, then calls Upgrade while its parent still runs
)

const (
	// contractRoleBound bounds a role process, and the time a child that
	// never gets ready waits to be killed.
	contractRoleBound = 20 * time.Second
	// contractWaitBound bounds each wait inside a role.
	contractWaitBound = 10 * time.Second
	// contractTimeout is the UpgradeTimeout of the child that times out.
	// The child must report its PID before it: a test binary starts in
	// tens of milliseconds, even with -race.
	contractTimeout = 2 * time.Second
)

// Steps of a role: the keys of its contractReport.
const (
	stepNewAgain     = "second tableflip.New"
	stepBeforeReady  = "Upgrade before Ready"
	stepAfterStop    = "Upgrade after Stop"
	stepUpgrade      = "Upgrade"
	stepSecond       = "second Upgrade during one"
	stepStopDuring   = "Stop during Upgrade"
	stepAfterSuccess = "Upgrade after a successful one"
	stepChildEarly   = "the new generation's Upgrade while its parent runs"
	stepNew          = "tableflip.New"
	stepGetwd        = "os.Getwd"
)

// contractReport is what a role observed, by step.
type contractReport map[string]observation

// observation is an error as a role saw it.
type observation struct {
	Nil  bool   `json:"nil,omitempty"`
	Err  string `json:"err,omitempty"`  // its text
	Type string `json:"type,omitempty"` // its dynamic type, for messages
	// Chained says errors.Unwrap found a cause: then the text is not all
	// there is (classify.go assumes it is).
	Chained bool `json:"chained,omitempty"`
	// PID is the new generation's, as it reported it; 0 if none.
	PID int `json:"pid,omitempty"`
	// Others are the other texts seen when the step was repeated.
	Others []string `json:"others,omitempty"`
}

func observe(err error) observation {
	if err == nil {
		return observation{Nil: true}
	}
	return observation{Err: err.Error(), Type: fmt.Sprintf("%T", err), Chained: errors.Unwrap(err) != nil}
}

func TestTableflipContract(t *testing.T) {
	upgradeClass := func(err error) error { return classify(err, 0) }

	t.Run("first generation", func(t *testing.T) {
		t.Parallel()
		rep := runContract(t, roleFirst, nil, nil)
		t.Run(tfNotReady, func(t *testing.T) {
			expectSentinel(t, rep, stepBeforeReady, tfNotReady, "upgrader.go:195", upgradeClass, control.ErrNotReady)
		})
		t.Run(tfSingleton, func(t *testing.T) {
			expectSentinel(t, rep, stepNewAgain, tfSingleton, "upgrader.go:68", classifyNew, ErrSingleton)
		})
		t.Run(tfTerminating+" after Stop", func(t *testing.T) {
			expectSentinel(t, rep, stepAfterStop, tfTerminating, "upgrader.go:186", upgradeClass, control.ErrStopped)
		})
		// Once Stop has ended tableflip's loop, both stopC and exitC are
		// closed, and Upgrade's select (upgrader.go:184-190) picks either
		// at random: "terminating" or "already upgraded". Callers must
		// remember that they stopped rather than trust the text. If this
		// fails, tableflip has fixed that.
		t.Run("quirk: after Stop, also "+tfUpgraded, func(t *testing.T) {
			obs := rep[stepAfterStop]
			if !slices.Equal(obs.Others, []string{tfUpgraded}) {
				t.Errorf("%s, 64 times: also said %q, want only %q besides %q (upgrader.go:184-190)",
					stepAfterStop, obs.Others, tfUpgraded, tfTerminating)
			}
		})
	})

	t.Run("missing binary", func(t *testing.T) {
		t.Parallel()
		missing := filepath.Join(t.TempDir(), "no-such-binary")
		rep := runContract(t, roleUpgrade, []string{
			contractTimeoutEnv + "=" + contractRoleBound.String(),
			contractArgv0Env + "=" + missing,
			contractChildEnv + "=" + childExit0,
		}, nil)
		t.Run(tfStartFailedPrefix+"…", func(t *testing.T) {
			ce := expectChild(t, rep, stepUpgrade, tfStartFailedPrefix+"…", "upgrader.go:250", 0,
				control.ChildError{Reason: control.ReasonStartFailed})
			if ce != nil && (ce.Err == nil || !strings.Contains(ce.Err.Error(), missing)) {
				t.Errorf("ChildError.Err = %v, want the cause, naming %s", ce.Err, missing)
			}
		})
	})

	failing := []struct {
		name, child, form, where string
		timeout                  time.Duration
		want                     control.ChildError // PID filled in from the report
	}{
		{"exits cleanly", childExit0, "child pid=N exited", "upgrader.go:261", contractRoleBound,
			control.ChildError{Reason: control.ReasonExited}},
		{"exits with status 3", childExit3, "child pid=N exited: exit status 3", "upgrader.go:263", contractRoleBound,
			control.ChildError{Reason: control.ReasonExited, ExitStatus: 3}},
		{"killed", childKill, "child pid=N exited: signal: killed", "upgrader.go:263", contractRoleBound,
			control.ChildError{Reason: control.ReasonCrashed, Signal: syscall.SIGKILL}},
		{"aborts", childAbort, "child pid=N exited: signal: " + syscall.SIGABRT.String(), "upgrader.go:263", contractRoleBound,
			control.ChildError{Reason: control.ReasonCrashed, Signal: syscall.SIGABRT}},
		{"never ready", childHang, "new child pid=N timed out", "upgrader.go:271", contractTimeout,
			control.ChildError{Reason: control.ReasonTimedOut, Timeout: contractTimeout}},
	}
	for _, c := range failing {
		t.Run("child "+c.name, func(t *testing.T) {
			t.Parallel()
			rep := runContract(t, roleUpgrade, []string{
				contractTimeoutEnv + "=" + c.timeout.String(),
				contractChildEnv + "=" + c.child,
			}, nil)
			t.Run(c.form, func(t *testing.T) {
				expectChild(t, rep, stepUpgrade, c.form, c.where, c.timeout, c.want)
			})
		})
	}

	t.Run("upgrade in progress", func(t *testing.T) {
		t.Parallel()
		rep := runContract(t, roleBusy, []string{contractChildEnv + "=" + childHang}, nil)
		t.Run(tfInProgress, func(t *testing.T) {
			expectSentinel(t, rep, stepSecond, tfInProgress, "upgrader.go:257", upgradeClass, errInProgress)
		})
		t.Run(tfTerminating+" during an upgrade", func(t *testing.T) {
			expectSentinel(t, rep, stepStopDuring, tfTerminating, "upgrader.go:267", upgradeClass, control.ErrStopped)
		})
	})

	t.Run("successful upgrade", func(t *testing.T) {
		t.Parallel()
		rep := runContract(t, roleSuccess, []string{contractChildEnv + "=" + childUpgrade}, nil)
		if obs := rep[stepUpgrade]; !obs.Nil {
			t.Fatalf("%s: %q, want success", stepUpgrade, obs.Err)
		}
		t.Run(tfUpgraded, func(t *testing.T) {
			expectSentinel(t, rep, stepAfterSuccess, tfUpgraded, "upgrader.go:188", upgradeClass, control.ErrUpgraded)
		})
		t.Run(tfParentNotExited, func(t *testing.T) {
			expectSentinel(t, rep, stepChildEarly, tfParentNotExited, "upgrader.go:228", upgradeClass, errParentNotExited)
		})
	})

	t.Run("marker without descriptors", func(t *testing.T) {
		t.Parallel()
		devNull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer devNull.Close()
		rep := runContract(t, roleNew, []string{tableflipMarker + "=yes"}, func(cmd *exec.Cmd) {
			// tableflip reads the parent's names from fd 4, and would wait
			// for ever on a pipe or socket whose other end stays open;
			// /dev/null answers EOF at once. 3 is tableflip's other pipe.
			cmd.ExtraFiles = []*os.File{devNull, devNull}
		})
		if rep[stepNew].Nil {
			t.Fatalf("tableflip.New succeeded with %s=yes and no parent: tableflip no longer reads that variable (v1.2.3: parent.go:13), and handoff.go's tableflipMarker is stale",
				tableflipMarker)
		}
		t.Run(tfDecodeNamesPrefix+"…", func(t *testing.T) {
			expectSentinel(t, rep, stepNew, tfDecodeNamesPrefix+"…", "parent.go:34", classifyNew, errMarkerWithoutFds)
		})
	})

	t.Run("no working directory", func(t *testing.T) {
		t.Parallel()
		sh, err := exec.LookPath("sh")
		if err != nil {
			t.Skip("no sh to start a process in a removed directory:", err)
		}
		wd := filepath.Join(t.TempDir(), "removed")
		if err := os.Mkdir(wd, 0o700); err != nil {
			t.Fatal(err)
		}
		rep := runContract(t, roleNew, nil, func(cmd *exec.Cmd) {
			cmd.Path = sh
			cmd.Args = []string{"sh", "-c", `cd "$1" && rmdir "$1" && exec "$2"`, "sh", wd, testBinary()}
		})
		if rep[stepGetwd].Nil {
			t.Skip("os.Getwd works in a removed directory on this system")
		}
		t.Run(tfNoWorkingDir, func(t *testing.T) {
			expectSentinel(t, rep, stepNew, tfNoWorkingDir, "upgrader.go:80", classifyNew, errNoWorkingDir)
		})
	})
}

// runContract runs role with extra environment (and prep's changes to its
// command) and returns its report.
func runContract(t *testing.T, role string, extra []string, prep func(*exec.Cmd)) contractReport {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), contractRoleBound)
	defer cancel()
	cmd := roleCmd(ctx, role, slices.Concat(extra, []string{contractReportEnv + "=" + report})...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if prep != nil {
		prep(cmd)
	}
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("role %s: %v (after %v); its output, and its children's:\n%s", role, err, time.Since(start), out.Bytes())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("role %s wrote no report: %v; its output:\n%s", role, err, out.Bytes())
	}
	var rep contractReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("role %s: report %s: %v", role, b, err)
	}
	return rep
}

// expectSentinel checks that step failed with text (written at where, in
// tableflip v1.2.3), which class turns into want.
func expectSentinel(t *testing.T, rep contractReport, step, text, where string, class func(error) error, want error) {
	t.Helper()
	obs := reported(t, rep, step, text, where)
	got := class(errors.New(obs.Err))
	if !errors.Is(got, want) {
		t.Errorf("%s: classify expects tableflip to say %q here (v1.2.3: %s); it said %q, which is classified as %q, want %q",
			step, text, where, obs.Err, got, want)
	}
}

// expectChild checks that step failed with a text of the form form
// (written at where, in tableflip v1.2.3), which classify turns into a
// *control.ChildError like want, with the PID the new generation reported.
func expectChild(t *testing.T, rep contractReport, step, form, where string, timeout time.Duration, want control.ChildError) *control.ChildError {
	t.Helper()
	obs := reported(t, rep, step, form, where)
	if want.Reason != control.ReasonStartFailed {
		if obs.PID == 0 {
			t.Fatalf("%s: the new generation did not report its PID; tableflip said %q", step, obs.Err)
		}
		want.PID = obs.PID
	}
	got := classify(errors.New(obs.Err), timeout)
	var ce *control.ChildError
	if !errors.As(got, &ce) || !errors.Is(got, control.ErrChildFailed) {
		t.Errorf("%s: classify expects tableflip to say %q here (v1.2.3: %s); it said %q, which is classified as %q, not a *control.ChildError",
			step, form, where, obs.Err, got)
		return nil
	}
	if ce.Reason != want.Reason || ce.PID != want.PID || ce.ExitStatus != want.ExitStatus ||
		ce.Signal != want.Signal || ce.Timeout != want.Timeout || (ce.Err != nil) != (want.Reason == control.ReasonStartFailed) {
		t.Errorf("%s: tableflip said %q (classify expects %q here, v1.2.3: %s), classified as\n\t%s\nwant\n\t%s",
			step, obs.Err, form, where, childFields(ce), childFields(&want))
	}
	return ce
}

// reported returns step's observation, which must be an error (classify
// expects text, written at where in v1.2.3) whose text is all there is.
func reported(t *testing.T, rep contractReport, step, text, where string) observation {
	t.Helper()
	obs, ok := rep[step]
	if !ok {
		t.Fatalf("no report of %q", step)
	}
	if obs.Nil {
		t.Fatalf("%s: no error, where classify expects tableflip to say %q (v1.2.3: %s)", step, text, where)
	}
	if obs.Chained {
		t.Errorf("%s: tableflip's %q (%s) now wraps a cause: its text is no longer all there is, and classify could match the cause instead",
			step, obs.Err, obs.Type)
	}
	return obs
}

// The roles.

// contractFirst is a first generation that never upgrades: Upgrade before
// Ready, a second tableflip.New, Upgrade after Stop (64 times, for the
// texts Upgrade picks between at random).
func contractFirst() int {
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		return roleFail("tableflip.New: %v", err)
	}
	rep := contractReport{}
	_, err = tableflip.New(tableflip.Options{})
	rep[stepNewAgain] = observe(err)
	rep[stepBeforeReady] = observe(upg.Upgrade())
	if err := upg.Ready(); err != nil {
		return roleFail("Ready: %v", err)
	}
	upg.Stop()
	select {
	case <-upg.Exit():
	case <-time.After(contractWaitBound):
		return roleFail("Exit not closed %v after Stop", contractWaitBound)
	}
	var obs observation
	seen := map[string]bool{}
	for i := range 64 {
		o := observe(upg.Upgrade())
		if i == 0 || (o.Err == tfTerminating && obs.Err != tfTerminating) {
			obs = o
		}
		seen[o.Err] = true
	}
	for text := range seen {
		if text != obs.Err {
			obs.Others = append(obs.Others, text)
		}
	}
	slices.Sort(obs.Others)
	rep[stepAfterStop] = obs
	return writeReport(rep)
}

// contractUpgrade is a first generation that upgrades once, to a child
// that fails (contractChildEnv), or from a missing binary
// (contractArgv0Env).
func contractUpgrade() int {
	timeout, err := time.ParseDuration(os.Getenv(contractTimeoutEnv))
	if err != nil {
		return roleFail("%s: %v", contractTimeoutEnv, err)
	}
	upg, err := readyUpgrader(timeout)
	if err != nil {
		return roleFail("%v", err)
	}
	if p := os.Getenv(contractArgv0Env); p != "" {
		os.Args[0] = p // what tableflip executes (child.go:53)
	}
	p, err := openChildPipe()
	if err != nil {
		return roleFail("%v", err)
	}
	obs := observe(upgradeAfterReady(upg))
	child, err := p.finish()
	if err != nil {
		return roleFail("after Upgrade (%q): %v", obs.Err, err)
	}
	obs.PID = child.pid
	return writeReport(contractReport{stepUpgrade: obs})
}

// contractBusy calls Upgrade while an Upgrade waits for a child that
// never gets ready, then stops the first with Stop.
func contractBusy() int {
	upg, err := readyUpgrader(contractRoleBound)
	if err != nil {
		return roleFail("%v", err)
	}
	p, err := openChildPipe()
	if err != nil {
		return roleFail("%v", err)
	}
	first := make(chan error, 1)
	go func() { first <- upgradeAfterReady(upg) }()
	// Once the child runs, tableflip is in doUpgrade's loop, which is
	// what answers a second Upgrade.
	started := make(chan error, 1)
	go func() {
		_, err := p.line()
		started <- err
	}()
	select {
	case err := <-started:
		if err != nil {
			return roleFail("waiting for the child to start: %v", err)
		}
	case err := <-first:
		return roleFail("Upgrade returned before the child started: %v", err)
	}
	rep := contractReport{}
	rep[stepSecond] = observe(upg.Upgrade())
	upg.Stop()
	select {
	case err := <-first:
		rep[stepStopDuring] = observe(err)
	case <-time.After(contractWaitBound):
		return roleFail("Upgrade still running %v after Stop", contractWaitBound)
	}
	if _, err := p.finish(); err != nil {
		return roleFail("%v", err)
	}
	return writeReport(rep)
}

// contractSuccess upgrades to a child that gets ready and then calls
// Upgrade itself while this process, its parent, still runs; then it calls
// Upgrade again.
func contractSuccess() int {
	upg, err := readyUpgrader(contractRoleBound)
	if err != nil {
		return roleFail("%v", err)
	}
	p, err := openChildPipe()
	if err != nil {
		return roleFail("%v", err)
	}
	rep := contractReport{}
	err = upgradeAfterReady(upg)
	rep[stepUpgrade] = observe(err)
	if err == nil {
		rep[stepAfterSuccess] = observe(upg.Upgrade())
	}
	// The child exits once it has reported; this process's tableflip
	// reaps it.
	child, err := p.finish()
	if err != nil {
		return roleFail("%v", err)
	}
	if child.obs != nil {
		rep[stepChildEarly] = *child.obs
	}
	return writeReport(rep)
}

// contractNew calls tableflip.New, in whatever environment and with
// whatever descriptors and working directory the test gave it.
func contractNew() int {
	_, wdErr := os.Getwd()
	_, err := tableflip.New(tableflip.Options{})
	return writeReport(contractReport{stepGetwd: observe(wdErr), stepNew: observe(err)})
}

// contractChild is the new generation of the roles that upgrade. It
// reports its PID first, so that its parent learns it however it ends.
func contractChild() int {
	fmt.Printf("pid %d\n", os.Getpid())
	upg, err := tableflip.New(tableflip.Options{})
	if err != nil {
		return roleFail("child: tableflip.New: %v", err)
	}
	if !upg.HasParent() {
		return roleFail("child: tableflip sees no parent")
	}
	how := os.Getenv(contractChildEnv)
	switch how {
	case childExit0:
		return 0
	case childExit3:
		return 3
	case childKill:
		if err := syscall.Kill(os.Getpid(), syscall.SIGKILL); err != nil {
			return roleFail("child: kill: %v", err)
		}
	case childAbort:
		// No core file: it would be slow and big, and the text would end
		// in " (core dumped)" (classify_test.go has that).
		if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{}); err != nil {
			return roleFail("child: RLIMIT_CORE: %v", err)
		}
		debug.SetTraceback("crash") // an unrecovered panic then raises SIGABRT (runtime.crash)
		panic("contract test: crashing on purpose")
	case childHang:
		// The parent kills it; should the parent die first, this ends.
		ctx, cancel := context.WithTimeout(context.Background(), contractRoleBound)
		defer cancel()
		_ = upg.WaitForParent(ctx)
		return 0
	case childUpgrade:
		return childUpgradesEarly(upg)
	default:
		return roleFail("child: %s=%q", contractChildEnv, how)
	}
	// Only a signal that did not arrive gets here.
	<-time.After(contractWaitBound)
	return roleFail("child: still alive %v after %s", contractWaitBound, how)
}

// childUpgradesEarly gets ready, calls Upgrade while its parent still
// runs, and reports what it returned.
func childUpgradesEarly(upg *tableflip.Upgrader) int {
	if err := upg.Ready(); err != nil {
		return roleFail("child: Ready: %v", err)
	}
	// Were tableflip to start a generation after all, it would just exit.
	os.Setenv(contractChildEnv, childExit0)
	b, merr := json.Marshal(observe(upgradeAfterReady(upg)))
	if merr != nil {
		return roleFail("child: %v", merr)
	}
	fmt.Printf("obs %s\n", b)
	return 0
}

// upgradeAfterReady calls Upgrade until it says something other than "not
// ready". Ready closes tableflip's ready channel, but tableflip's loop may
// take an Upgrade request before it notices, and refuse it (its select
// picks at random among ready cases, upgrader.go:210-221); nothing is
// started then.
func upgradeAfterReady(upg *tableflip.Upgrader) error {
	var err error
	for range 1000 {
		if err = upg.Upgrade(); err == nil || err.Error() != tfNotReady {
			break
		}
	}
	return err
}

// readyUpgrader makes this process's tableflip.Upgrader, ready to upgrade
// to contractChild.
func readyUpgrader(timeout time.Duration) (*tableflip.Upgrader, error) {
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("tableflip.New: %w", err)
	}
	if err := upg.Ready(); err != nil {
		return nil, fmt.Errorf("Ready: %w", err)
	}
	// tableflip copies the environment to the child (child.go:43-51).
	if err := os.Setenv(roleEnv, roleChild); err != nil {
		return nil, err
	}
	return upg, nil
}

func writeReport(rep contractReport) int {
	b, err := json.Marshal(rep)
	if err != nil {
		return roleFail("report: %v", err)
	}
	if err := os.WriteFile(os.Getenv(contractReportEnv), b, 0o600); err != nil {
		return roleFail("report: %v", err)
	}
	return 0
}

func roleFail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "contract role: "+format+"\n", args...)
	return 1
}

// childPipe is what the next generation gets as its stdout, for it to
// report on: tableflip hands it this process's os.Stdout at fork time
// (child.go:34), so os.Stdout is a pipe while one may be started.
type childPipe struct {
	saved, r, w *os.File
	br          *bufio.Reader
	lines       []string
}

// childReport is what a child generation wrote on its stdout.
type childReport struct {
	pid int
	obs *observation
}

func openChildPipe() (*childPipe, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p := &childPipe{saved: os.Stdout, r: r, w: w, br: bufio.NewReader(r)}
	os.Stdout = w
	return p, nil
}

// line returns the next line a child wrote, waiting up to
// contractWaitBound.
func (p *childPipe) line() (string, error) {
	if err := p.r.SetReadDeadline(time.Now().Add(contractWaitBound)); err != nil {
		return "", err
	}
	s, err := p.br.ReadString('\n')
	if s != "" {
		p.lines = append(p.lines, strings.TrimSuffix(s, "\n"))
	}
	return s, err
}

// finish puts os.Stdout back, reads what the children wrote until the last
// of them has exited (EOF: nothing else holds the write end; tableflip
// does not keep a copy), and waits until the child it names is reaped.
func (p *childPipe) finish() (childReport, error) {
	os.Stdout = p.saved
	p.w.Close()
	defer p.r.Close()
	for {
		_, err := p.line()
		if err == io.EOF {
			break
		}
		if err != nil {
			return childReport{}, fmt.Errorf("reading the child's reports: %w (so far: %q)", err, p.lines)
		}
	}
	var rep childReport
	for _, l := range p.lines {
		kind, arg, _ := strings.Cut(l, " ")
		switch kind {
		case "pid":
			pid, err := strconv.Atoi(arg)
			if err != nil {
				return rep, fmt.Errorf("child report %q: %w", l, err)
			}
			rep.pid = pid
		case "obs":
			rep.obs = new(observation)
			if err := json.Unmarshal([]byte(arg), rep.obs); err != nil {
				return rep, fmt.Errorf("child report %q: %w", l, err)
			}
		}
	}
	if rep.pid != 0 {
		if err := waitReaped(rep.pid); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// waitReaped waits until pid, a child of this process, has been reaped,
// so that no zombie outlives this process (its new parent might not reap
// it). tableflip waits for its children in a goroutine of its own
// (child.go:89-95) and tells nobody when it has reaped one it killed, so
// this polls: kill(pid, 0) fails with ESRCH only once the process is
// reaped (a zombie still answers it).
func waitReaped(pid int) error {
	deadline := time.Now().Add(contractWaitBound)
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("child %d not reaped after %v (kill: %v)", pid, contractWaitBound, err)
		}
		time.Sleep(time.Millisecond)
	}
}

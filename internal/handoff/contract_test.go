//go:build unix

package handoff

// The contract test, in re-executed test binaries. Two contracts:
//
//   - This package's parent end (Start, spawn.go) against a real tableflip
//     v1.2.3 child: the new generation of a service is tableflip's
//     New/Ready/WaitForParent/Fds, whichever release of hitless it runs,
//     so the pipes, the names on fd 4, the ready byte, the descriptors
//     from fd 5 and the environment marker must be what tableflip's child
//     end expects. The child here is pure tableflip (no handoff, no side
//     channel: a version 0 child), and the typed results of Start are
//     checked with the real values (its PID, its exit status, the signal
//     that killed it, the timeout).
//   - The texts of tableflip.New, which classifyNew turns into errors
//     (classify.go): a tableflip release that rewords one fails here.
//
// The processes: the test starts a role (a first generation of a service,
// playing one scenario) and waits for it; the role writes what each call
// returned to a report file and exits. A role that starts a generation
// starts contractChild, which behaves as contractChildEnv says. A child
// tells its parent its PID on its stdout, before anything else: Start
// hands the parent's os.Stdout to the child, and the parent makes that a
// pipe. Every wait is bounded.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
	roleFirst   = "contract-first"   // no new generation: a second tableflip.New, Start before Ready and after Stop
	roleUpgrade = "contract-upgrade" // one Start, which fails
	roleBusy    = "contract-busy"    // a second Start during one, then Stop
	roleSuccess = "contract-success" // a Start that succeeds, and one after it
	roleNew     = "contract-new"     // tableflip.New only
	roleChild   = "contract-child"   // the new generation of the roles that start one: pure tableflip
)

// Environment of the roles.
const (
	contractReportEnv      = "HITLESS_CONTRACT_REPORT"       // file the role writes its contractReport to
	contractChildEnv       = "HITLESS_CONTRACT_CHILD"        // how contractChild behaves: one of child*
	contractTimeoutEnv     = "HITLESS_CONTRACT_TIMEOUT"      // roleUpgrade's ReadyTimeout
	contractArgv0Env       = "HITLESS_CONTRACT_ARGV0"        // roleUpgrade's os.Args[0]: the binary Start executes
	contractChildReportEnv = "HITLESS_CONTRACT_CHILD_REPORT" // file childReady writes its childServeReport to
)

// How contractChild behaves.
const (
	childExit0 = "exit0" // exits with status 0 before it is ready
	childExit3 = "exit3" // exits with status 3 before it is ready
	childKill  = "kill"  // kills itself with SIGKILL
	childAbort = "abort" // panics with GOTRACEBACK=crash: SIGABRT
	childHang  = "hang"  // never gets ready
	childReady = "ready" // gets ready, serves one connection, waits for its parent to exit
)

const (
	// contractRoleBound bounds a role process, and the time a child that
	// never gets ready waits to be killed.
	contractRoleBound = 20 * time.Second
	// contractWaitBound bounds each wait inside a role.
	contractWaitBound = 10 * time.Second
	// contractTimeout is the ReadyTimeout of the child that times out.
	// The child must report its PID before it: a test binary starts in
	// tens of milliseconds, even with -race.
	contractTimeout = 2 * time.Second
	// contractEarlyWait is how long the ready child first waits for its
	// parent, which runs meanwhile (it waits for that child's answer).
	contractEarlyWait = 300 * time.Millisecond
	// contractListener is the name the listener is handed over under.
	contractListener = "web"
)

// Steps of a role: the keys of its contractReport.
const (
	stepNewAgain     = "second tableflip.New"
	stepBeforeReady  = "Start before Ready"
	stepAfterStop    = "Start after Stop"
	stepStart        = "Start"
	stepSecond       = "second Start during one"
	stepStopDuring   = "Stop during Start"
	stepServed       = "a connection to the handed-over listener"
	stepAfterSuccess = "Start after a successful one"
	stepExit         = "the parent's exit"
	stepNew          = "tableflip.New"
	stepGetwd        = "os.Getwd"
)

// contractReport is what a role observed, by step.
type contractReport map[string]observation

// observation is the outcome of a call as a role saw it. The role does
// the matching (errors.Is and errors.As need the values, which do not
// survive JSON).
type observation struct {
	Nil  bool   `json:"nil,omitempty"`
	Err  string `json:"err,omitempty"`  // its text
	Type string `json:"type,omitempty"` // its dynamic type, for messages
	// Chained says errors.Unwrap found a cause: for a text of tableflip,
	// then the text is not all there is (classify.go assumes it is).
	Chained bool `json:"chained,omitempty"`
	// Is names the errors of contractErrors it matches.
	Is []string `json:"is,omitempty"`
	// Child is the *control.ChildError it is, if it is one.
	Child *childOutcome `json:"child,omitempty"`
	// Started is what a successful Start returned.
	Started *startedChild `json:"started,omitempty"`
	// PID is the new generation's, as it reported it on its stdout; 0 if
	// none did.
	PID int `json:"pid,omitempty"`
	// Gone says that, as soon as the call returned, no process had that
	// PID any more: it was reaped (a zombie still has its PID).
	Gone bool `json:"gone,omitempty"`
	// Text is what the step read; At is when it ended.
	Text string    `json:"text,omitempty"`
	At   time.Time `json:"at,omitzero"`
}

// childOutcome is a *control.ChildError, as JSON.
type childOutcome struct {
	Reason     control.Reason
	PID        int
	ExitStatus int
	Signal     syscall.Signal
	Timeout    time.Duration
	Err        string
}

// startedChild is a Child, as JSON.
type startedChild struct {
	PID     int
	Version int
}

// contractErrors are the errors an observation is matched against.
var contractErrors = []struct {
	name string
	err  error
}{
	{"control.ErrStopped", control.ErrStopped},
	{"control.ErrUpgraded", control.ErrUpgraded},
	{"control.ErrNotReady", control.ErrNotReady},
	{"control.ErrChildFailed", control.ErrChildFailed},
	{"errInProgress", errInProgress},
	{"errNoHello", errNoHello},
	{"context.DeadlineExceeded", context.DeadlineExceeded},
}

func observe(err error) observation {
	if err == nil {
		return observation{Nil: true}
	}
	obs := observation{Err: err.Error(), Type: fmt.Sprintf("%T", err), Chained: errors.Unwrap(err) != nil}
	for _, e := range contractErrors {
		if errors.Is(err, e.err) {
			obs.Is = append(obs.Is, e.name)
		}
	}
	if ce := (*control.ChildError)(nil); errors.As(err, &ce) {
		obs.Child = &childOutcome{Reason: ce.Reason, PID: ce.PID, ExitStatus: ce.ExitStatus, Signal: ce.Signal, Timeout: ce.Timeout}
		if ce.Err != nil {
			obs.Child.Err = ce.Err.Error()
		}
		if ce.PID > 0 {
			obs.Gone = processGone(ce.PID)
		}
	}
	return obs
}

// String says what the call returned, for messages.
func (o observation) String() string {
	if o.Nil {
		return "no error"
	}
	return strconv.Quote(o.Err)
}

// processGone reports whether no process has the PID pid: kill(pid, 0)
// fails with ESRCH only once it has exited and been reaped.
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestTableflipContract(t *testing.T) {
	t.Run("first generation", func(t *testing.T) {
		t.Parallel()
		rep := runContract(t, roleFirst, nil, nil)
		t.Run(tfSingleton, func(t *testing.T) {
			expectSentinel(t, rep, stepNewAgain, tfSingleton, "upgrader.go:68", classifyNew, ErrSingleton)
		})
		t.Run(stepBeforeReady, func(t *testing.T) {
			expectRefused(t, rep, stepBeforeReady, "control.ErrNotReady")
		})
		t.Run(stepAfterStop, func(t *testing.T) {
			expectRefused(t, rep, stepAfterStop, "control.ErrStopped")
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
		obs := rep[stepStart]
		if obs.Child == nil || obs.Child.Reason != control.ReasonStartFailed || obs.Child.PID != 0 {
			t.Fatalf("%s of a missing binary: %q (%s), want a *control.ChildError with ReasonStartFailed and no PID", stepStart, obs.Err, obs.Type)
		}
		if !strings.Contains(obs.Child.Err, missing) {
			t.Errorf("ChildError.Err = %q, want the cause, naming %s", obs.Child.Err, missing)
		}
		if obs.PID != 0 {
			t.Errorf("a process (pid %d) ran, from a missing binary", obs.PID)
		}
	})

	failing := []struct {
		name, child string
		timeout     time.Duration
		want        control.ChildError // PID filled in from the report
	}{
		// A pure tableflip child says nothing on the side channel: what it
		// wrote before it exited is only in the service's log (errNoHello).
		{"exits cleanly", childExit0, contractRoleBound,
			control.ChildError{Reason: control.ReasonExited, Err: errNoHello}},
		{"exits with status 3", childExit3, contractRoleBound,
			control.ChildError{Reason: control.ReasonExited, ExitStatus: 3, Err: errNoHello}},
		{"killed", childKill, contractRoleBound,
			control.ChildError{Reason: control.ReasonCrashed, Signal: syscall.SIGKILL}},
		{"aborts", childAbort, contractRoleBound,
			control.ChildError{Reason: control.ReasonCrashed, Signal: syscall.SIGABRT}},
		{"never ready", childHang, contractTimeout,
			control.ChildError{Reason: control.ReasonTimedOut, Timeout: contractTimeout}},
	}
	for _, c := range failing {
		t.Run("child "+c.name, func(t *testing.T) {
			t.Parallel()
			rep := runContract(t, roleUpgrade, []string{
				contractTimeoutEnv + "=" + c.timeout.String(),
				contractChildEnv + "=" + c.child,
			}, nil)
			expectChildFailed(t, rep, stepStart, c.want)
		})
	}

	t.Run("upgrade in progress", func(t *testing.T) {
		t.Parallel()
		rep := runContract(t, roleBusy, nil, nil)
		t.Run(stepSecond, func(t *testing.T) {
			expectRefused(t, rep, stepSecond, "errInProgress")
		})
		t.Run(stepStopDuring, func(t *testing.T) {
			obs := expectRefused(t, rep, stepStopDuring, "control.ErrStopped")
			if obs.PID == 0 {
				t.Fatalf("the child that never gets ready did not report its PID")
			}
			if !obs.Gone {
				t.Errorf("its child, pid %d, was not reaped when Start returned", obs.PID)
			}
		})
	})

	t.Run("successful upgrade", func(t *testing.T) {
		t.Parallel()
		childReport := filepath.Join(t.TempDir(), "child.json")
		rep := runContract(t, roleSuccess, []string{contractChildReportEnv + "=" + childReport}, nil)
		obs := rep[stepStart]
		if !obs.Nil || obs.Started == nil {
			t.Fatalf("%s: %q, want success", stepStart, obs.Err)
		}
		c := obs.Started
		if c.PID == 0 || c.PID != obs.PID {
			t.Errorf("Child.PID = %d, want %d, the PID the new generation reported", c.PID, obs.PID)
		}
		if c.Version != 0 {
			t.Errorf("Child.Version = %d, want 0 (a tableflip child says no hello)", c.Version)
		}
		if served := rep[stepServed]; served.Text != fmt.Sprintf("served by %d", obs.PID) {
			t.Errorf("%s: %q (%s), want an answer from the new generation, pid %d", stepServed, served.Text, served.Err, obs.PID)
		}
		t.Run(stepAfterSuccess, func(t *testing.T) {
			expectRefused(t, rep, stepAfterSuccess, "control.ErrUpgraded")
		})
		t.Run("WaitForParent", func(t *testing.T) {
			var cr childServeReport
			readJSON(t, childReport, &cr)
			if !slices.Equal(cr.Early.Is, []string{"context.DeadlineExceeded"}) {
				t.Errorf("WaitForParent while the parent runs, bounded by %v: %v, want context.DeadlineExceeded", contractEarlyWait, cr.Early)
			}
			if !cr.Wait.Nil {
				t.Fatalf("WaitForParent after the parent's exit: %v", cr.Wait)
			}
			exit := rep[stepExit].At
			if exit.IsZero() || cr.Wait.At.Before(exit) {
				t.Errorf("WaitForParent returned at %v, before the parent's last step at %v", cr.Wait.At, exit)
			}
		})
		waitExited(t, obs.PID)
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
// command) and returns its report. The role's output, and its children's,
// goes to a file (a new generation that outlives the role holds it open,
// and Wait would wait for a pipe), which is logged if the test fails.
func runContract(t *testing.T, role string, extra []string, prep func(*exec.Cmd)) contractReport {
	t.Helper()
	dir := t.TempDir()
	report := filepath.Join(dir, "report.json")
	out, err := os.Create(filepath.Join(dir, "output"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), contractRoleBound)
	defer cancel()
	cmd := roleCmd(ctx, role, slices.Concat(extra, []string{contractReportEnv + "=" + report})...)
	cmd.Stdout, cmd.Stderr = out, out
	if prep != nil {
		prep(cmd)
	}
	// Registered after TempDir's: it runs before the file is removed.
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("the output of role %s, and its children's:\n%s", role, b)
		}
	})
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("role %s: %v (after %v)", role, err, time.Since(start))
	}
	var rep contractReport
	if _, err := os.Stat(report); err != nil {
		t.Fatalf("role %s wrote no report: %v", role, err)
	}
	readJSON(t, report, &rep)
	return rep
}

// readJSON decodes the file at path into v, waiting up to
// contractWaitBound for it to appear (a new generation that outlives its
// parent writes its report after the parent's exit).
func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	var (
		b   []byte
		err error
	)
	for end := time.Now().Add(contractWaitBound); ; time.Sleep(10 * time.Millisecond) {
		if b, err = os.ReadFile(path); err == nil || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		t.Fatalf("no report after %v: %v", contractWaitBound, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("report %s: %v", b, err)
	}
}

// waitExited waits up to contractWaitBound until the process pid, a new
// generation that outlived its parent, has exited. Whoever adopted it
// reaps it, in its own time (a container's init may take a second or
// two), so a zombie counts as exited.
func waitExited(t *testing.T, pid int) {
	t.Helper()
	for end := time.Now().Add(contractWaitBound); !processGone(pid) && !zombie(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Errorf("the new generation, pid %d, still runs %v after its parent's exit", pid, contractWaitBound)
			return
		}
	}
}

// zombie reports whether pid has exited and awaits its reaping, as far as
// /proc says (false where there is none).
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) state …": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && bytes.HasPrefix(b[i+1:], []byte(" Z"))
}

// expectSentinel checks that step failed with text (written at where, in
// tableflip v1.2.3), which class turns into want.
func expectSentinel(t *testing.T, rep contractReport, step, text, where string, class func(error) error, want error) {
	t.Helper()
	obs := reported(t, rep, step)
	if obs.Chained {
		t.Errorf("%s: tableflip's %q (%s) now wraps a cause: its text is no longer all there is, and classifyNew could match the cause instead",
			step, obs.Err, obs.Type)
	}
	got := class(errors.New(obs.Err))
	if !errors.Is(got, want) {
		t.Errorf("%s: classifyNew expects tableflip to say %q here (v1.2.3: %s); it said %q, which is classified as %q, want %q",
			step, text, where, obs.Err, got, want)
	}
}

// expectRefused checks that step was refused with want (a name in
// contractErrors) and nothing else, and returns its observation.
func expectRefused(t *testing.T, rep contractReport, step, want string) observation {
	t.Helper()
	obs := reported(t, rep, step)
	if !slices.Equal(obs.Is, []string{want}) || obs.Child != nil {
		t.Errorf("%s: %q (%s), matching %q; want %s", step, obs.Err, obs.Type, obs.Is, want)
	}
	return obs
}

// expectChildFailed checks that step failed with a *control.ChildError
// like want, with the PID the new generation reported, and that the
// process was reaped by the time Start returned.
func expectChildFailed(t *testing.T, rep contractReport, step string, want control.ChildError) {
	t.Helper()
	obs := reported(t, rep, step)
	if obs.PID == 0 {
		t.Fatalf("%s: the new generation did not report its PID; Start returned %q", step, obs.Err)
	}
	want.PID = obs.PID
	if obs.Child == nil || !slices.Contains(obs.Is, "control.ErrChildFailed") {
		t.Fatalf("%s: %q (%s), not a *control.ChildError", step, obs.Err, obs.Type)
	}
	wantErr := ""
	if want.Err != nil {
		wantErr = want.Err.Error()
	}
	got := *obs.Child
	if got.Reason != want.Reason || got.PID != want.PID || got.ExitStatus != want.ExitStatus ||
		got.Signal != want.Signal || got.Timeout != want.Timeout || got.Err != wantErr {
		t.Errorf("%s: %q, that is\n\t%s\nwant\n\t%s", step, obs.Err, outcomeFields(got), outcomeFields(childOutcome{
			Reason: want.Reason, PID: want.PID, ExitStatus: want.ExitStatus, Signal: want.Signal, Timeout: want.Timeout, Err: wantErr}))
	}
	if !obs.Gone {
		t.Errorf("%s: the new generation, pid %d, was not reaped when Start returned", step, obs.PID)
	}
}

func outcomeFields(c childOutcome) string {
	return fmt.Sprintf("Reason %v, PID %d, ExitStatus %d, Signal %d (%v), Timeout %v, Err %q",
		c.Reason, c.PID, c.ExitStatus, int(c.Signal), c.Signal, c.Timeout, c.Err)
}

// reported returns step's observation, which must be an error.
func reported(t *testing.T, rep contractReport, step string) observation {
	t.Helper()
	obs, ok := rep[step]
	if !ok {
		t.Fatalf("no report of %q", step)
	}
	if obs.Nil {
		t.Fatalf("%s: no error", step)
	}
	return obs
}

// The roles.

// contractFirst is a first generation that starts no other: a second
// tableflip.New, Start before Ready, Start after Stop.
func contractFirst() int {
	h, err := New(Options{})
	if err != nil {
		return roleFail("New: %v", err)
	}
	defer h.Close()
	// Should a Start start something after all, it just exits.
	if err := parentOf(childExit0); err != nil {
		return roleFail("%v", err)
	}
	rep := contractReport{}
	_, err = tableflip.New(tableflip.Options{})
	rep[stepNewAgain] = observe(err)
	_, err = h.Start()
	rep[stepBeforeReady] = observe(err)
	if err := h.Ready(); err != nil {
		return roleFail("Ready: %v", err)
	}
	h.Stop()
	_, err = h.Start()
	rep[stepAfterStop] = observe(err)
	return writeReport(rep)
}

// contractUpgrade is a first generation that starts one, a child that
// fails (contractChildEnv), or a missing binary (contractArgv0Env).
func contractUpgrade() int {
	timeout, err := time.ParseDuration(os.Getenv(contractTimeoutEnv))
	if err != nil {
		return roleFail("%s: %v", contractTimeoutEnv, err)
	}
	h, err := readyParent(timeout, os.Getenv(contractChildEnv))
	if err != nil {
		return roleFail("%v", err)
	}
	defer h.Close()
	if p := os.Getenv(contractArgv0Env); p != "" {
		os.Args[0] = p // what Start executes (spawn.go)
	}
	p, err := openChildPipe()
	if err != nil {
		return roleFail("%v", err)
	}
	_, err = h.Start()
	obs := observe(err)
	if obs.PID, err = p.finish(); err != nil {
		return roleFail("after Start (%q): %v", obs.Err, err)
	}
	return writeReport(contractReport{stepStart: obs})
}

// contractBusy calls Start while a Start waits for a child that never
// gets ready, then stops the first with Stop.
func contractBusy() int {
	h, err := readyParent(contractRoleBound, childHang)
	if err != nil {
		return roleFail("%v", err)
	}
	defer h.Close()
	p, err := openChildPipe()
	if err != nil {
		return roleFail("%v", err)
	}
	first := make(chan error, 1)
	go func() {
		_, err := h.Start()
		first <- err
	}()
	// Once the child runs, the first Start waits for it.
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
		return roleFail("Start returned before the child started: %v", err)
	}
	pid, err := p.pid()
	if err != nil {
		return roleFail("%v", err)
	}
	rep := contractReport{}
	_, err = h.Start()
	rep[stepSecond] = observe(err)
	h.Stop()
	select {
	case err := <-first:
		obs := observe(err)
		obs.PID, obs.Gone = pid, processGone(pid)
		rep[stepStopDuring] = obs
	case <-time.After(contractWaitBound):
		return roleFail("Start still running %v after Stop", contractWaitBound)
	}
	if _, err := p.finish(); err != nil {
		return roleFail("%v", err)
	}
	return writeReport(rep)
}

// contractSuccess hands a listener to a child that gets ready, has it
// answer a connection, calls Start again, and exits: the child's
// WaitForParent returns only then.
func contractSuccess() int {
	h, err := readyParent(contractRoleBound, childReady)
	if err != nil {
		return roleFail("%v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return roleFail("%v", err)
	}
	if err := h.AddListener(contractListener, ln); err != nil {
		return roleFail("AddListener: %v", err)
	}
	p, err := openChildPipe()
	if err != nil {
		return roleFail("%v", err)
	}
	rep := contractReport{}
	c, err := h.Start()
	obs := observe(err)
	if err != nil {
		if obs.PID, err = p.finish(); err != nil {
			return roleFail("after Start (%q): %v", obs.Err, err)
		}
		rep[stepStart] = obs
		return writeReport(rep)
	}
	obs.Started = &startedChild{PID: c.PID, Version: c.Version}
	// The child reported its PID before it was ready; it writes nothing
	// else there, so the pipe is put away now (its read end stays open
	// until this process exits).
	os.Stdout = p.saved
	p.w.Close()
	if _, err := p.line(); err != nil {
		return roleFail("the child's PID: %v", err)
	}
	if obs.PID, err = p.pid(); err != nil {
		return roleFail("%v", err)
	}
	rep[stepStart] = obs
	// As a drain would: from now on only the child accepts.
	ln.Close()
	text, err := askListener(ln.Addr().String())
	rep[stepServed] = observation{Nil: err == nil, Err: fmt.Sprint(err), Text: text}
	_, err = h.Start()
	rep[stepAfterSuccess] = observe(err)
	// Close leaves the new generation its end of the names pipe: that
	// it reaches EOF only at this process's exit is what is tested.
	h.Close()
	rep[stepExit] = observation{Nil: true, At: time.Now()}
	return writeReport(rep)
}

// askListener connects to addr and returns the line it answers.
func askListener(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, contractWaitBound)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(contractWaitBound))
	b, err := io.ReadAll(conn)
	return strings.TrimSpace(string(b)), err
}

// contractNew calls tableflip.New, in whatever environment and with
// whatever descriptors and working directory the test gave it.
func contractNew() int {
	_, wdErr := os.Getwd()
	_, err := tableflip.New(tableflip.Options{})
	return writeReport(contractReport{stepGetwd: observe(wdErr), stepNew: observe(err)})
}

// contractChild is the new generation of the roles that start one: pure
// tableflip, as the child end of every release of hitless is. It reports
// its PID first, so that its parent learns it however it ends.
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
		// No core file: it would be slow and big.
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
	case childReady:
		return childServes(upg)
	default:
		return roleFail("child: %s=%q", contractChildEnv, how)
	}
	// Only a signal that did not arrive gets here.
	<-time.After(contractWaitBound)
	return roleFail("child: still alive %v after %s", contractWaitBound, how)
}

// childServeReport is what childServes saw.
type childServeReport struct {
	// Early is WaitForParent bounded by contractEarlyWait, while the
	// parent waits for this child's answer.
	Early observation `json:"early"`
	// Wait is WaitForParent bounded by contractWaitBound, after the
	// answer; At is when it returned.
	Wait observation `json:"wait"`
}

// childServes takes the listener handed over, gets ready, answers one
// connection once WaitForParent has timed out, waits for its parent to
// exit, and writes what it saw to the file contractChildReportEnv names.
// It writes nothing on its stdout, its parent's pipe, which has no reader
// once the parent exits.
func childServes(upg *tableflip.Upgrader) int {
	ln, err := upg.Fds.Listener(listenerNetwork, contractListener)
	if err != nil || ln == nil {
		return roleFail("child: listener %q: %v, %v", contractListener, ln, err)
	}
	defer ln.Close()
	if err := upg.Ready(); err != nil {
		return roleFail("child: Ready: %v", err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return roleFail("child: listener %q is a %T", contractListener, ln)
	}
	tl.SetDeadline(time.Now().Add(contractWaitBound))
	conn, err := tl.Accept()
	if err != nil {
		return roleFail("child: Accept: %v", err)
	}
	var rep childServeReport
	ctx, cancel := context.WithTimeout(context.Background(), contractEarlyWait)
	rep.Early = observe(upg.WaitForParent(ctx))
	cancel()
	fmt.Fprintf(conn, "served by %d\n", os.Getpid())
	conn.Close()
	ctx, cancel = context.WithTimeout(context.Background(), contractWaitBound)
	defer cancel()
	rep.Wait = observe(upg.WaitForParent(ctx))
	rep.Wait.At = time.Now()
	b, err := json.Marshal(rep)
	if err != nil {
		return roleFail("child: %v", err)
	}
	if err := writeWhole(os.Getenv(contractChildReportEnv), b); err != nil {
		return roleFail("child: %v", err)
	}
	return 0
}

// parentOf makes the generations this process starts play contractChild,
// behaving as child says (Start copies the environment, spawn.go).
func parentOf(child string) error {
	if err := os.Setenv(roleEnv, roleChild); err != nil {
		return err
	}
	return os.Setenv(contractChildEnv, child)
}

// readyParent makes this process's Handoff, ready to start contractChild
// behaving as child says, with timeout as its ReadyTimeout.
func readyParent(timeout time.Duration, child string) (*Handoff, error) {
	h, err := New(Options{ReadyTimeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("New: %w", err)
	}
	if err := h.Ready(); err != nil {
		h.Close()
		return nil, fmt.Errorf("Ready: %w", err)
	}
	if err := parentOf(child); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
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
// report on: Start hands it this process's os.Stdout (spawn.go), so
// os.Stdout is a pipe while one may be started.
type childPipe struct {
	saved, r, w *os.File
	br          *bufio.Reader
	lines       []string
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

// pid returns the PID the child reported in the first line read.
func (p *childPipe) pid() (int, error) {
	if len(p.lines) == 0 {
		return 0, errors.New("the child reported nothing")
	}
	arg, ok := strings.CutPrefix(p.lines[0], "pid ")
	pid, err := strconv.Atoi(arg)
	if !ok || err != nil {
		return 0, fmt.Errorf("child report %q: not a PID", p.lines[0])
	}
	return pid, nil
}

// finish puts os.Stdout back, reads what the children wrote until the last
// of them has exited (EOF: nothing else holds the write end; Start does
// not keep a copy), and returns the PID reported, or 0 if none was.
func (p *childPipe) finish() (int, error) {
	os.Stdout = p.saved
	p.w.Close()
	defer p.r.Close()
	for {
		_, err := p.line()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("reading the child's reports: %w (so far: %q)", err, p.lines)
		}
	}
	if len(p.lines) == 0 {
		return 0, nil
	}
	return p.pid()
}

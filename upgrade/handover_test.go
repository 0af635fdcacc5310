//go:build linux

package upgrade

// Files and state handed to the next generation, between real processes:
// the test binary re-executed as a server (handoverMain) that offers a log
// file, a spare file nobody takes and a state, and reports what it got.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
)

const (
	envHandLog   = "HITLESS_TEST_HANDOVER_LOG"   // the log file generation 1 opens and every one hands over
	envHandSpare = "HITLESS_TEST_HANDOVER_SPARE" // a file generation 1 offers and nobody takes
)

// TestMain (process_test.go) knows the roles of serverMain's tests; this
// role is dispatched before it runs, from init, which runs first.
func init() {
	if os.Getenv(envRole) == "handover" {
		os.Exit(handoverMain())
	}
}

// handedReport is what a generation of handoverMain got.
type handedReport struct {
	PID, Generation int
	FileErr         string // taking "log"
	State           string
	StateErr        string
	StateTooLarge   bool   // StateErr matches ErrStateTooLarge
	SecondTake      string // taking "state" again
	SecondNotHanded bool   // SecondTake matches ErrNotHandedOver
}

// fdReport is what a generation has open.
type fdReport struct {
	Count   int
	Memfds  int
	Targets []string
}

func readTrimmed(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// handoverMain is one generation of the handover test server. The mode
// file says how a new generation behaves ("ok", "exit-early": before New,
// "exit-after-take": after taking what was handed over, before Ready);
// mode.snap how the snapshot of the generation that serves behaves ("ok",
// "fail", "large"); mode.limit is the StateLimit of each new generation.
func handoverMain() int {
	modeFile := os.Getenv(envMode)
	mode := readTrimmed(modeFile)
	if mode == "exit-early" {
		fmt.Fprintln(os.Stderr, "test server: exiting before New")
		return 5
	}
	limit, _ := strconv.Atoi(readTrimmed(modeFile + ".limit"))
	timeout, _ := time.ParseDuration(os.Getenv(envUpgradeT))
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := New(Options{
		PIDFile: os.Getenv(envPIDFile), UpgradeTimeout: timeout, DrainTimeout: 5 * time.Second, Logger: log,
		CrashLoop: CrashLoop{After: -1}, StateLimit: limit,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer upg.Stop()
	gen := upg.Status().Generation
	rep := handedReport{PID: os.Getpid(), Generation: gen}

	lf, err := upg.File("log")
	if err != nil {
		rep.FileErr = err.Error()
		if gen != 1 {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// Generation 1 opens it, without O_APPEND: every later one
		// writes at the offset the one before left.
		if lf, err = os.OpenFile(os.Getenv(envHandLog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	defer lf.Close()
	fmt.Fprintf(lf, "generation %d pid %d\n", gen, os.Getpid())
	b, err := upg.State("state")
	rep.State = string(b)
	if err != nil {
		rep.StateErr, rep.StateTooLarge = err.Error(), errors.Is(err, ErrStateTooLarge)
	}
	_, err = upg.State("state")
	rep.SecondTake, rep.SecondNotHanded = fmt.Sprint(err), errors.Is(err, ErrNotHandedOver)
	if mode == "exit-after-take" {
		fmt.Fprintln(os.Stderr, "test server: took what was handed over, exiting before Ready")
		return 3
	}

	for _, err := range []error{
		upg.OfferFile("log", lf),
		upg.OfferState("state", func() ([]byte, error) {
			switch readTrimmed(modeFile + ".snap") {
			case "fail":
				return nil, errors.New("test snapshot: disk on fire")
			case "large":
				return make([]byte, DefaultStateLimit+1), nil
			case "hang":
				time.Sleep(time.Hour) // a snapshot stuck on a lock
			}
			return fmt.Appendf(nil, "state of generation %d (pid %d)", gen, os.Getpid()), nil
		}),
	} {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if gen == 1 {
		spare, err := os.Open(os.Getenv(envHandSpare))
		if err == nil {
			err = upg.OfferFile("spare", spare)
			spare.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}

	ln, err := upg.Listen(context.Background(), "http", "tcp", os.Getenv(envAddr))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/handed", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(rep) })
	mux.HandleFunc("/fds", func(w http.ResponseWriter, r *http.Request) {
		var fr fdReport
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			l, err := os.Readlink("/proc/self/fd/" + e.Name())
			if err != nil {
				continue // the directory's own descriptor
			}
			fr.Count++
			if strings.HasPrefix(l, "/memfd:") {
				fr.Memfds++
			}
			fr.Targets = append(fr.Targets, l)
		}
		json.NewEncoder(w).Encode(fr)
	})
	srv := &drain.HTTP{Server: &http.Server{Handler: mux}}
	go srv.Serve(ln)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	defer signal.Stop(sigs)
	upgraded := make(chan struct{})
	go func() {
		defer close(upgraded)
		for sig := range sigs {
			if sig == syscall.SIGTERM {
				upg.Stop()
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := upg.Upgrade(ctx)
			cancel()
			recordResult(err)
			if err == nil {
				return
			}
		}
	}()
	err = upg.Run(context.Background(), srv)
	if upg.Status().State == control.StateDraining {
		<-upgraded // its result is recorded before the process exits
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type handoverServer struct {
	*testServer
	logPath, spare string
}

func startHandoverServer(t *testing.T, env ...string) *handoverServer {
	t.Helper()
	dir := t.TempDir()
	hs := &handoverServer{logPath: filepath.Join(dir, "app.log"), spare: filepath.Join(dir, "spare")}
	if err := os.WriteFile(hs.spare, []byte("nobody takes this\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hs.testServer = startTestServer(t, "tcp", append([]string{envRole + "=handover", envUpgradeT + "=20s",
		envHandLog + "=" + hs.logPath, envHandSpare + "=" + hs.spare}, env...)...)
	return hs
}

func (hs *handoverServer) set(suffix, value string) {
	hs.t.Helper()
	if err := os.WriteFile(hs.modeFile+suffix, []byte(value), 0o600); err != nil {
		hs.t.Fatal(err)
	}
}

// get asks the serving generation for path and decodes the answer into v,
// on a connection of its own.
func (hs *handoverServer) get(path string, v any) {
	hs.t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + hs.addr + path)
	if err != nil {
		hs.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		hs.t.Fatal(err)
	}
}

func (hs *handoverServer) handed() handedReport {
	var r handedReport
	hs.get("/handed", &r)
	return r
}

func (hs *handoverServer) fds() fdReport {
	var r fdReport
	hs.get("/fds", &r)
	return r
}

func (hs *handoverServer) upgrade() {
	hs.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := hs.Upgrade(ctx); err != nil {
		hs.t.Fatal(err)
	}
	if err := errorOf(hs.nextResult()); err != nil {
		hs.t.Fatal(err)
	}
}

// TestHandoverFileAndState: generation 1 opens a log file and offers it,
// a state, and a file nobody takes; each later generation gets the same
// open file (its lines continue where the one before stopped, though no
// one opened it with O_APPEND), the state its predecessor's snapshot made
// at the start of the upgrade (once: taking it again is ErrNotHandedOver),
// and not the file nobody took (closed at Ready). A generation whose
// StateLimit is below the state's size refuses it with ErrStateTooLarge.
func TestHandoverFileAndState(t *testing.T) {
	hs := startHandoverServer(t)
	first := hs.handed()
	if !strings.Contains(first.FileErr, "first generation") || !strings.Contains(first.StateErr, "first generation") {
		t.Fatalf("generation 1 got %+v, want ErrNotHandedOver saying it is the first", first)
	}
	hs.upgrade()
	second := hs.handed()
	t.Logf("generation 2 got %+v", second)
	if want := fmt.Sprintf("state of generation 1 (pid %d)", first.PID); second.State != want || second.StateErr != "" || second.FileErr != "" {
		t.Fatalf("generation 2 got %+v, want the log file and state %q", second, want)
	}
	if !second.SecondNotHanded || !strings.Contains(second.SecondTake, "taken already") {
		t.Errorf("taking the state twice: %s, want ErrNotHandedOver saying it was taken", second.SecondTake)
	}
	fr := hs.fds()
	for _, target := range fr.Targets {
		if target == hs.spare {
			t.Errorf("generation 2 has the file nobody took open after Ready: %v", fr.Targets)
		}
	}
	if fr.Memfds != 0 {
		t.Errorf("generation 2 has %d memory files open; the state's was read and closed: %v", fr.Memfds, fr.Targets)
	}

	// A new generation with a lower limit than the state's size.
	hs.set(".limit", "10")
	hs.upgrade()
	third := hs.handed()
	t.Logf("generation 3 got: %s", third.StateErr)
	size := len(fmt.Sprintf("state of generation 2 (pid %d)", second.PID))
	if !third.StateTooLarge || !strings.Contains(third.StateErr, fmt.Sprintf(`state "state": what was handed over is %d bytes, over the limit of 10 (Options.StateLimit)`, size)) || third.State != "" {
		t.Errorf("generation 3 (StateLimit 10) got %+v, want ErrStateTooLarge with the sizes", third)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if st, err := hs.Stop(ctx); err != nil || st.ExitStatus() != 0 {
		t.Fatalf("stop: %v, %v", st, err)
	}
	b, err := os.ReadFile(hs.logPath)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("generation 1 pid %d\ngeneration 2 pid %d\ngeneration 3 pid %d\n", first.PID, second.PID, third.PID)
	if string(b) != want {
		t.Errorf("log file:\n%s\nwant:\n%s", b, want)
	}
}

// TestHandoverFailedAttemptsLeakNothing: upgrades that fail at the
// snapshot (an error, a state over the limit), or because the new
// generation exits before New or after taking what was handed over, fail
// with errors that say so, and leave the serving generation with the
// descriptors it had (and no memory file); a good upgrade after them gets
// the state.
func TestHandoverFailedAttemptsLeakNothing(t *testing.T) {
	hs := startHandoverServer(t)
	type failure struct {
		snap, mode, reason, text string
	}
	failures := []failure{
		{"fail", "ok", control.ReasonStartFailed.String(), `could not start the new generation: state "state": its snapshot failed: test snapshot: disk on fire`},
		{"large", "ok", control.ReasonStartFailed.String(), fmt.Sprintf(`state "state": the snapshot is %d bytes, over the limit of %d (Options.StateLimit)`, DefaultStateLimit+1, DefaultStateLimit)},
		{"ok", "exit-early", control.ReasonExited.String(), "exited with status 5"},
		{"ok", "exit-after-take", control.ReasonExited.String(), "took what was handed over, exiting before Ready"},
	}
	var base fdReport
	const rounds = 3
	for round := range rounds {
		for _, f := range failures {
			hs.set(".snap", f.snap)
			hs.setMode(f.mode)
			if err := hs.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			r := hs.nextResult()
			if round == 0 {
				t.Logf("%s/%s: %s", f.snap, f.mode, r.Err)
			}
			if !r.Failed || r.Reason != f.reason || !strings.Contains(r.Err, f.text) {
				t.Fatalf("round %d, snapshot %s, new generation %s: %+v; want reason %q and %q", round, f.snap, f.mode, r, f.reason, f.text)
			}
		}
		if round == 0 {
			// Counted after a round: what the first attempt creates
			// once (and keeps) is not a leak.
			base = hs.settledFDs(-1)
			continue
		}
		got := hs.settledFDs(base.Count)
		if got.Count != base.Count || got.Memfds != 0 {
			t.Fatalf("after round %d of failed upgrades the serving generation has %d descriptors (%d memory files), after round 1 %d:\n%v\nthen:\n%v",
				round+1, got.Count, got.Memfds, base.Count, got.Targets, base.Targets)
		}
	}
	t.Logf("%d failed upgrades; the serving generation has %d descriptors, as after the first %d", rounds*len(failures), base.Count, len(failures))
	first := hs.handed()
	hs.set(".snap", "ok")
	hs.setMode("ok")
	hs.upgrade()
	if got, want := hs.handed().State, fmt.Sprintf("state of generation 1 (pid %d)", first.PID); got != want {
		t.Fatalf("after the failures the new generation got state %q, want %q", got, want)
	}
}

// settledFDs returns what the serving generation has open once it has
// want descriptors (any number, if want is negative, that two questions in
// a row agree on), or after 3 s: a failed child's stderr relay and the
// connection of the previous question close on their own schedule.
func (hs *handoverServer) settledFDs(want int) fdReport {
	deadline := time.Now().Add(3 * time.Second)
	last := -1
	for {
		got := hs.fds()
		if got.Count == want || want < 0 && got.Count == last || time.Now().After(deadline) {
			return got
		}
		last = got.Count
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHandoverSnapshotHangs: a snapshot that does not return fails its
// upgrade at the upgrade timeout, and the generation serves on.
func TestHandoverSnapshotHangs(t *testing.T) {
	hs := startHandoverServer(t, envUpgradeT+"=1s")
	first := hs.handed()
	hs.set(".snap", "hang")
	begin := time.Now()
	if err := hs.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r := hs.nextResult()
	t.Logf("after %v: %s", time.Since(begin).Round(time.Millisecond), r.Err)
	if !r.Failed || r.Reason != control.ReasonStartFailed.String() || r.ChildPID != 0 ||
		!strings.Contains(r.Err, `state "state": its snapshot did not return within 1s (Options.UpgradeTimeout)`) {
		t.Fatalf("upgrade result %+v; want a start failure naming the state and the timeout, no process started", r)
	}
	if got := hs.handed(); got.PID != first.PID {
		t.Fatalf("serving pid %d, want the first generation %d", got.PID, first.PID)
	}
}

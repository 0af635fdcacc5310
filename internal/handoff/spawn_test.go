//go:build unix

package handoff

// Take-back, in re-executed test binaries as in contract_test.go (whose
// report, runContract and roleFail these roles share): a generation that
// handed over keeps its own copies of the sockets (the reserve), watches
// the new generation (Child.Died), and can serve again if that one dies
// (TakeBack), but not if it said it was leaving (Leave).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/control"
)

func init() {
	roles[roleTakeBackKill] = takeBackKill
	roles[roleTakeBackLeave] = takeBackLeave
	roles[roleTakeBackChild] = takeBackChild
	roles[roleReadyThenExit] = readyThenExit
}

// Roles of the take-back tests.
const (
	roleTakeBackKill  = "takeback-kill"   // a new generation is killed when ready; TakeBack, and Start again
	roleTakeBackLeave = "takeback-leave"  // a new generation says it leaves, and exits
	roleTakeBackChild = "takeback-child"  // the new generation of both: a hitless one
	roleReadyThenExit = "ready-then-exit" // writes the ready byte on fd 3 and exits at once
)

// takeBackChildEnv says how takeBackChild behaves: one of takeBackServe,
// takeBackLeaves, takeBackLeavesAtOnce and takeBackHangs.
const takeBackChildEnv = "HITLESS_TAKEBACK_CHILD"

const (
	takeBackServe        = "serve"         // takes the listener, gets ready, waits to be killed
	takeBackLeaves       = "leave"         // gets ready, answers a connection with Leave, exits
	takeBackLeavesAtOnce = "leave-at-once" // gets ready, calls Leave at once, exits
	takeBackHangs        = "hang"          // never gets ready
)

const (
	// takeBackDiedBound bounds the wait for Died after the new generation
	// was killed.
	takeBackDiedBound = 5 * time.Second
	// takeBackQuiet is how long Died must stay open after a new
	// generation that said it was leaving has exited.
	takeBackQuiet = time.Second
	// takeBackToken is what a client sends on the connection it made
	// while no generation served.
	takeBackToken = "dialled while nobody served"
)

// Steps of the take-back roles.
const (
	stepTakeBackRunning = "TakeBack while the new generation runs"
	stepTakeBackOther   = "TakeBack of a generation that is not the successor"
	stepDied            = "Died after SIGKILL"
	stepDialDead        = "a dial while nobody serves"
	stepTakeBack        = "TakeBack"
	stepAcceptBack      = "Listener after TakeBack"
	stepStartAgain      = "Start after TakeBack"
	stepLeftExit        = "the exit of the generation that left"
	stepDiedLeft        = "Died after Leave and an exit"
	stepTakeBackLeft    = "TakeBack of the generation that left"
)

func TestTakeBack(t *testing.T) {
	t.Run("killed", func(t *testing.T) {
		t.Parallel()
		rep := runContract(t, roleTakeBackKill, nil, nil)
		start := rep[stepStart]
		if !start.Nil || start.Started == nil || start.Started.Version != Version {
			t.Fatalf("%s: %q, %+v; want a hitless generation (handoff version %d)", stepStart, start.Err, start.Started, Version)
		}
		t.Run("running", func(t *testing.T) {
			if obs := rep[stepTakeBackRunning]; obs.Nil {
				t.Errorf("%s succeeded", stepTakeBackRunning)
			}
			if obs := rep[stepTakeBackOther]; obs.Nil {
				t.Errorf("%s succeeded", stepTakeBackOther)
			}
		})
		if obs := rep[stepDied]; !obs.Nil {
			t.Fatalf("%s: %s", stepDied, obs.Err)
		}
		if obs := rep[stepTakeBack]; !obs.Nil || obs.Text != "was killed by SIGKILL" {
			t.Errorf("%s: %q (%v); want %q", stepTakeBack, obs.Text, obs, "was killed by SIGKILL")
		}
		t.Run("queued connection", func(t *testing.T) {
			if obs := rep[stepDialDead]; !obs.Nil {
				t.Fatalf("%s: %s (the socket closed with the new generation)", stepDialDead, obs.Err)
			}
			if obs := rep[stepAcceptBack]; !obs.Nil || obs.Text != takeBackToken {
				t.Errorf("%s: read %q (%v); want the connection dialled before it, which sent %q", stepAcceptBack, obs.Text, obs, takeBackToken)
			}
		})
		t.Run("start again", func(t *testing.T) {
			obs := rep[stepStartAgain]
			if !obs.Nil || obs.Started == nil {
				t.Fatalf("%s: %q", stepStartAgain, obs.Err)
			}
			if obs.Started.PID == start.Started.PID {
				t.Errorf("%s: pid %d, the dead generation's", stepStartAgain, obs.Started.PID)
			}
		})
	})

	left := func(t *testing.T, how string) {
		rep := runContract(t, roleTakeBackLeave, []string{takeBackChildEnv + "=" + how}, nil)
		if start := rep[stepStart]; !start.Nil || start.Started == nil || start.Started.Version != Version {
			t.Fatalf("%s: %q, %+v; want a hitless generation (handoff version %d)", stepStart, start.Err, start.Started, Version)
		}
		if obs := rep[stepLeftExit]; !obs.Nil {
			t.Fatalf("%s: %s", stepLeftExit, obs.Err)
		}
		if obs := rep[stepDiedLeft]; !obs.Nil {
			t.Errorf("%s: %s", stepDiedLeft, obs.Err)
		}
		if obs := rep[stepTakeBackLeft]; obs.Nil {
			t.Errorf("%s succeeded", stepTakeBackLeft)
		}
	}
	// It says it leaves once Start has returned: listenChild reads it.
	t.Run("left", func(t *testing.T) {
		t.Parallel()
		left(t, takeBackLeaves)
	})
	// It says it leaves right after Ready, as a service stopped while it
	// starts does: Start may still be reading the side channel then.
	t.Run("left at once", func(t *testing.T) {
		t.Parallel()
		left(t, takeBackLeavesAtOnce)
	})
}

// TestSpawnKillReaps: a new generation that is stopped or times out is
// gone (reaped, no zombie) when await returns. Start would hide a missing
// wait behind the time it gives a child without a hello to say one, so
// this drives spawn and await directly, in this process.
func TestSpawnKillReaps(t *testing.T) {
	t.Setenv(roleEnv, roleTakeBackChild)
	t.Setenv(takeBackChildEnv, takeBackHangs)
	for _, c := range []struct {
		name    string
		timeout time.Duration
		stop    bool
		want    func(error) bool
	}{
		{"stopped", contractWaitBound, true, func(err error) bool { return errors.Is(err, control.ErrStopped) }},
		{"timed out", 200 * time.Millisecond, false, func(err error) bool {
			var ce *control.ChildError
			return errors.As(err, &ce) && ce.Reason == control.ReasonTimedOut && ce.Timeout == 200*time.Millisecond
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sp, err := spawn(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			if c.stop {
				close(stop)
			}
			err = sp.await(c.timeout, stop)
			gone := processGone(sp.proc.Pid)
			if !c.want(err) {
				t.Errorf("await: %v", err)
			}
			if !gone {
				t.Errorf("pid %d not reaped when await returned", sp.proc.Pid)
				<-sp.exited // bounded: it was sent SIGKILL
			}
		})
	}
}

// TestReadyThenExitIsReady: a new generation that writes the ready byte
// and exits at once (one that stops for good right after its start; the
// packet test's second generation does, and failed 1 run in 160 so) is
// ready: await sees the exit as soon as the byte, and the byte wins. 100
// such children, driven through spawn and await as in TestSpawnKillReaps;
// every one must be ready.
func TestReadyThenExitIsReady(t *testing.T) {
	t.Setenv(roleEnv, roleReadyThenExit)
	const n = 100
	var failed []error
	for range n {
		sp, err := spawn(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := sp.await(contractWaitBound, nil); err != nil {
			failed = append(failed, err)
		}
		<-sp.exited // bounded: it exits by itself
		sp.namesW.Close()
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d children that wrote the ready byte and exited were not ready; the first: %v", len(failed), n, failed[0])
	}
}

// TestAwaitPrefersReady: when the ready byte and the exit are both there
// by the time await looks, await says ready. A select between the two
// would pick either, at random: 100 tries see that.
func TestAwaitPrefersReady(t *testing.T) {
	for i := range 100 {
		sp := &spawned{proc: &os.Process{Pid: os.Getpid()}, ready: make(chan bool, 1), exited: make(chan struct{}), state: &os.ProcessState{}}
		sp.ready <- true
		close(sp.exited)
		if err := sp.await(contractWaitBound, nil); err != nil {
			t.Fatalf("try %d: ready and exited: %v; want ready", i+1, err)
		}
	}
}

// readyThenExit writes tableflip's ready byte and exits at once: through
// the system call, since a -race binary's exit otherwise waits a second
// (GORACE's atexit_sleep_ms) and the exit would never come with the byte.
func readyThenExit() int {
	if _, err := os.NewFile(3, "ready").Write([]byte{notifyReady}); err != nil {
		return roleFail("ready-then-exit: %v", err)
	}
	syscall.Exit(0)
	return 0
}

// takeBackParent makes this process's Handoff, ready, with a TCP listener
// handed over under contractListener, and its generations playing
// takeBackChild, behaving as child says.
func takeBackParent(child string) (*Handoff, net.Listener, error) {
	h, err := New(Options{ReadyTimeout: contractWaitBound})
	if err != nil {
		return nil, nil, fmt.Errorf("New: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		err = h.AddListener(contractListener, ln)
	}
	if err == nil {
		err = h.Ready()
	}
	if err == nil {
		err = os.Setenv(roleEnv, roleTakeBackChild)
	}
	if err == nil {
		err = os.Setenv(takeBackChildEnv, child)
	}
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return h, ln, nil
}

// start is Start, observed.
func start(h *Handoff) (Child, observation) {
	c, err := h.Start()
	obs := observe(err)
	if err == nil {
		obs.Started = &startedChild{PID: c.PID, Version: c.Version}
	}
	return c, obs
}

// waitDied waits up to d for c.Died.
func waitDied(c Child, d time.Duration) error {
	select {
	case <-c.Died:
		return nil
	case <-time.After(d):
		return fmt.Errorf("Died not closed %v after the new generation (pid %d) was killed", d, c.PID)
	}
}

// errObservation is an observation of err, or of success, with text.
func errObservation(err error, text string) observation {
	obs := observe(err)
	obs.Text = text
	return obs
}

// takeBackKill starts a generation and SIGKILLs it once ready; connects to
// the listener while nobody serves it; takes the service back and accepts
// that connection; and starts a generation again.
func takeBackKill() int {
	h, ln, err := takeBackParent(takeBackServe)
	if err != nil {
		return roleFail("%v", err)
	}
	defer h.Close()
	rep := contractReport{}
	c, obs := start(h)
	rep[stepStart] = obs
	if !obs.Nil {
		return writeReport(rep)
	}
	// As a drain would: the new generation's copy and the reserve are
	// what is left of the socket.
	addr := ln.Addr().String()
	ln.Close()
	_, err = h.TakeBack(c)
	rep[stepTakeBackRunning] = observe(err)
	_, err = h.TakeBack(Child{PID: c.PID + 1})
	rep[stepTakeBackOther] = observe(err)

	if err := syscall.Kill(c.PID, syscall.SIGKILL); err != nil {
		return roleFail("kill %d: %v", c.PID, err)
	}
	if err := waitDied(c, takeBackDiedBound); err != nil {
		rep[stepDied] = observe(err)
		return writeReport(rep)
	}
	rep[stepDied] = observe(nil)

	conn, dialErr := net.DialTimeout("tcp", addr, contractWaitBound)
	rep[stepDialDead] = observe(dialErr)
	if dialErr == nil {
		defer conn.Close()
		if _, err := fmt.Fprintln(conn, takeBackToken); err != nil {
			return roleFail("writing to the queued connection: %v", err)
		}
	}

	how, err := h.TakeBack(c)
	rep[stepTakeBack] = errObservation(err, how)
	if dialErr == nil {
		text, err := acceptLine(h)
		rep[stepAcceptBack] = errObservation(err, text)
	}

	c2, obs := start(h)
	rep[stepStartAgain] = obs
	if obs.Nil {
		// It would wait for this process's exit; no one waits for it.
		if err := syscall.Kill(c2.PID, syscall.SIGKILL); err != nil {
			return roleFail("kill %d: %v", c2.PID, err)
		}
		if err := waitDied(c2, takeBackDiedBound); err != nil {
			return roleFail("%v", err)
		}
	}
	return writeReport(rep)
}

// acceptLine accepts one connection on the listener h returns and reads
// a line from it.
func acceptLine(h *Handoff) (string, error) {
	ln, err := h.Listener(contractListener)
	if err != nil {
		return "", err
	}
	if ln == nil {
		return "", errors.New("no listener")
	}
	defer ln.Close()
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return "", fmt.Errorf("the listener is a %T", ln)
	}
	tl.SetDeadline(time.Now().Add(contractWaitBound))
	conn, err := tl.Accept()
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(contractWaitBound))
	s, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// takeBackLeave starts a generation that calls Leave and exits (as
// takeBackChildEnv says: when asked, or at once), and watches Died for
// takeBackQuiet after the exit.
func takeBackLeave() int {
	how := os.Getenv(takeBackChildEnv)
	h, ln, err := takeBackParent(how)
	if err != nil {
		return roleFail("%v", err)
	}
	defer h.Close()
	defer ln.Close()
	rep := contractReport{}
	c, obs := start(h)
	rep[stepStart] = obs
	if !obs.Nil {
		return writeReport(rep)
	}
	if how == takeBackLeaves {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), contractWaitBound)
		if err != nil {
			return roleFail("asking the new generation to leave: %v", err)
		}
		defer conn.Close()
	}
	// The handoff reaps it: then its PID is gone.
	var exitErr error
	for end := time.Now().Add(contractWaitBound); !processGone(c.PID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			exitErr = fmt.Errorf("the new generation (pid %d) still there %v after it was ready", c.PID, contractWaitBound)
			break
		}
	}
	rep[stepLeftExit] = observe(exitErr)
	if exitErr == nil {
		select {
		case <-c.Died:
			rep[stepDiedLeft] = observe(fmt.Errorf("Died closed within %v of the exit", takeBackQuiet))
		case <-time.After(takeBackQuiet):
			rep[stepDiedLeft] = observe(nil)
		}
	}
	_, err = h.TakeBack(c)
	rep[stepTakeBackLeft] = observe(err)
	return writeReport(rep)
}

// takeBackChild is the new generation of the take-back roles.
func takeBackChild() int {
	h, err := New(Options{})
	if err != nil {
		return roleFail("child: New: %v", err)
	}
	defer h.Close()
	switch how := os.Getenv(takeBackChildEnv); how {
	case takeBackServe:
		ln, err := h.Listener(contractListener)
		if err != nil || ln == nil {
			return roleFail("child: listener %q: %v, %v", contractListener, ln, err)
		}
		defer ln.Close()
		if err := h.Ready(); err != nil {
			return roleFail("child: Ready: %v", err)
		}
		// Its parent kills it; should the parent die first, this ends.
		ctx, cancel := context.WithTimeout(context.Background(), contractRoleBound)
		defer cancel()
		_ = h.WaitForParent(ctx)
		return 0
	case takeBackLeaves:
		ln, err := h.Listener(contractListener)
		if err != nil || ln == nil {
			return roleFail("child: listener %q: %v, %v", contractListener, ln, err)
		}
		defer ln.Close()
		if err := h.Ready(); err != nil {
			return roleFail("child: Ready: %v", err)
		}
		// Its parent connects once Start has returned.
		tl, ok := ln.(*net.TCPListener)
		if !ok {
			return roleFail("child: listener %q is a %T", contractListener, ln)
		}
		tl.SetDeadline(time.Now().Add(contractWaitBound))
		conn, err := tl.Accept()
		if err != nil {
			return roleFail("child: Accept: %v", err)
		}
		conn.Close()
		h.Leave()
		return 0
	case takeBackLeavesAtOnce:
		if err := h.Ready(); err != nil {
			return roleFail("child: Ready: %v", err)
		}
		h.Leave()
		return 0
	case takeBackHangs:
		// It is killed; should its parent die first, this ends.
		ctx, cancel := context.WithTimeout(context.Background(), contractRoleBound)
		defer cancel()
		_ = h.WaitForParent(ctx)
		return 0
	default:
		return roleFail("child: %s=%q", takeBackChildEnv, how)
	}
}

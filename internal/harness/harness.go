//go:build unix

package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultReadyTimeout bounds Start when Config.ReadyTimeout is zero.
const DefaultReadyTimeout = 30 * time.Second

// pollInterval is how often waits look at the pid file and the processes.
// Polling (rather than inotify or SIGCHLD) keeps the harness free of
// goroutines and signal handlers; 5 ms is below what any upgrade takes and
// costs nothing measurable.
const pollInterval = 5 * time.Millisecond

// closeTimeout bounds how long Close waits for SIGKILLed generations to be
// reaped; SIGKILL cannot be ignored, so this only matters if the kernel is
// very slow or a process is stuck in uninterruptible sleep.
const closeTimeout = 10 * time.Second

// ErrNotReaped is returned (wrapped) by [Server.WaitExit] and
// [Server.Stop] when the process has exited but was not the harness's child,
// so its parent, not the harness, collected its exit status. On Linux this
// happens only to a generation that exits while the generation that started
// it is still alive.
var ErrNotReaped = errors.New("harness: process exited but was reaped by another process; exit status unknown")

// Config describes the server to run.
type Config struct {
	// Binary is the path of the server executable; required.
	Binary string
	// Args are its arguments (for example -addr and -pidfile).
	Args []string
	// PIDFile is where the server writes its pid when ready; required.
	// Start removes a stale one first.
	PIDFile string
	// Env holds extra NAME=value entries added to the harness's own
	// environment for the first generation (later generations inherit
	// from it).
	Env []string
	// Log receives stdout and stderr of every generation (the server
	// passes its own to the next). Nil discards them. The harness does not
	// close it.
	Log *os.File
	// ReadyTimeout bounds how long Start waits for the first generation to
	// be ready, on top of Start's ctx. Zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// Server is a running server and all of its generations. Its methods are
// safe for concurrent use.
type Server struct {
	cfg   Config
	first int // pid of the first generation, also the process group id

	mu      sync.Mutex
	known   []int                      // every pid seen: started, or named by the pid file
	reaped  map[int]syscall.WaitStatus // pids the harness reaped, with their status
	lastPID int                        // last pid read from the pid file

	closeOnce sync.Once
	closeErr  error
}

// Upgrade describes one completed upgrade.
type Upgrade struct {
	// Old and New are the pids of the generation that was signalled and
	// of the one that replaced it.
	Old, New int
	// Signalled is when SIGHUP was sent, Ready when the pid file was seen
	// naming New, OldExited when Old was seen gone; all within the 5 ms
	// polling interval.
	Signalled, Ready, OldExited time.Time
	// OldStatus is Old's wait status, valid when OldReaped.
	OldStatus syscall.WaitStatus
	// OldReaped says whether the harness reaped Old itself (always on
	// Linux in a normal upgrade; see ErrNotReaped).
	OldReaped bool
}

// Start starts cfg.Binary in a process group of its own and waits until the
// pid file names a live process. If the process exits first, or ctx or
// cfg.ReadyTimeout expires, Start kills whatever it started and returns an
// error that says what it was waiting for.
//
// On Linux, Start makes the calling process a child subreaper (for the
// rest of its life): see the package documentation.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Binary == "" || cfg.PIDFile == "" {
		return nil, errors.New("harness: Config.Binary and Config.PIDFile are required")
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if err := becomeSubreaper(); err != nil {
		return nil, fmt.Errorf("harness: becoming a child subreaper: %w", err)
	}
	// A pid file left by an earlier run would name a dead (or, worse,
	// reused) pid and make the wait below succeed too early.
	if err := os.Remove(cfg.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("harness: removing stale pid file: %w", err)
	}
	cmd := exec.Command(cfg.Binary, cfg.Args...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	// An *os.File is handed to the child as is: no copying goroutines that
	// would need a Wait to end.
	if cfg.Log != nil {
		cmd.Stdout, cmd.Stderr = cfg.Log, cfg.Log
	}
	// A process group of its own lets Close kill every generation at once,
	// including one that started but never wrote the pid file, and keeps a
	// terminal's ^C away from the servers (Close handles them).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: starting %s: %w", cfg.Binary, err)
	}
	s := &Server{
		cfg:    cfg,
		first:  cmd.Process.Pid,
		known:  []int{cmd.Process.Pid},
		reaped: make(map[int]syscall.WaitStatus),
	}
	// We reap the first generation with wait4 like every other one, never
	// with cmd.Wait: generations after it are not our exec.Cmds, and one
	// mechanism for all keeps their statuses comparable. Release frees
	// the pidfd os.Process may hold; it does not reap.
	cmd.Process.Release()

	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if _, err := s.waitPIDChange(rctx, 0, s.first); err != nil {
		if rctx.Err() != nil {
			err = fmt.Errorf("%w%s", err, s.dumpStuck(s.first))
		}
		s.Close()
		return nil, fmt.Errorf("harness: starting %s: %w", cfg.Binary, err)
	}
	return s, nil
}

// dumpStuck is for a process that did not become ready in time, but
// lives: it says what the kernel says the process is doing, and sends it
// SIGQUIT, on which a Go program writes every goroutine's stack to its
// stderr (the server log) and exits. A start that hangs once in many
// runs is then found in the log of the run that hung.
func (s *Server) dumpStuck(pid int) string {
	if gone, _, _ := s.exitStatus(pid); gone {
		return ""
	}
	state := "?"
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
			state = string(b[i+2])
		}
	}
	wchan, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/wchan")
	syscall.Kill(pid, syscall.SIGQUIT)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if gone, _, _ := s.exitStatus(pid); gone {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Sprintf("; pid %d was alive, state %s, wchan %q: sent SIGQUIT for its goroutines' stacks (in the server log)", pid, state, wchan)
}

// PID returns the pid the pid file names now, or the last one read if the
// file cannot be read at the moment.
func (s *Server) PID() int {
	if pid, err := s.readPIDFile(); err == nil {
		return pid
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastPID
}

// currentPID is PID that fails instead of falling back.
func (s *Server) currentPID() (int, error) {
	pid, err := s.readPIDFile()
	if err != nil {
		return 0, fmt.Errorf("harness: reading pid file: %w", err)
	}
	return pid, nil
}

func (s *Server) readPIDFile() (int, error) {
	b, err := os.ReadFile(s.cfg.PIDFile)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q, not a pid", s.cfg.PIDFile, b)
	}
	s.mu.Lock()
	s.lastPID = pid
	if !slices.Contains(s.known, pid) {
		s.known = append(s.known, pid)
	}
	s.mu.Unlock()
	return pid, nil
}

// Signal sends sig to the pid the pid file names.
func (s *Server) Signal(sig syscall.Signal) error {
	pid, err := s.currentPID()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("harness: sending %v to %d: %w", sig, pid, err)
	}
	return nil
}

// Upgrade sends SIGHUP to the current generation, waits until the pid file
// names a different live process (the new generation is ready), then waits
// until the old generation has exited. It fails early if the old generation
// exits without a successor. On ctx expiry the error says which stage it was
// waiting for; the returned Upgrade holds what was seen until then.
func (s *Server) Upgrade(ctx context.Context) (Upgrade, error) {
	var u Upgrade
	old, err := s.currentPID()
	if err != nil {
		return u, err
	}
	u.Old = old
	if err := syscall.Kill(old, syscall.SIGHUP); err != nil {
		return u, fmt.Errorf("harness: upgrade: sending SIGHUP to %d: %w", old, err)
	}
	u.Signalled = time.Now()
	u.New, err = s.waitPIDChange(ctx, old, old)
	if err != nil {
		return u, fmt.Errorf("harness: upgrade of %d: %w", old, err)
	}
	u.Ready = time.Now()
	u.OldStatus, err = s.WaitExit(ctx, old)
	switch {
	case errors.Is(err, ErrNotReaped):
	case err != nil:
		return u, fmt.Errorf("harness: upgrade of %d: new generation %d is ready, but: %w", old, u.New, err)
	default:
		u.OldReaped = true
	}
	u.OldExited = time.Now()
	return u, nil
}

// WaitPIDChange waits until the pid file names a live process other than
// old, and returns its pid. It fails early if old exits and the pid file
// still does not name another live process.
func (s *Server) WaitPIDChange(ctx context.Context, old int) (int, error) {
	return s.waitPIDChange(ctx, old, old)
}

// waitPIDChange waits until the pid file names a live pid other than old.
// If watch (non-zero) exits first, it looks once more and then gives up:
// the servers we drive write the pid file before their predecessor exits.
func (s *Server) waitPIDChange(ctx context.Context, old, watch int) (int, error) {
	var found int
	check := func() bool {
		pid, err := s.readPIDFile()
		if err == nil && pid != old {
			if gone, _, _ := s.exitStatus(pid); !gone {
				found = pid
				return true
			}
		}
		return false
	}
	err := poll(ctx, func() (bool, error) {
		if check() {
			return true, nil
		}
		if watch == 0 {
			return false, nil
		}
		if gone, st, reaped := s.exitStatus(watch); gone {
			if check() {
				return true, nil
			}
			return false, fmt.Errorf("pid %d exited (%s) before %s named a new live process", watch, describe(st, reaped), s.cfg.PIDFile)
		}
		return false, nil
	})
	if err != nil && ctx.Err() != nil {
		what := "is missing"
		if b, rerr := os.ReadFile(s.cfg.PIDFile); rerr == nil {
			what = fmt.Sprintf("says %q", strings.TrimSpace(string(b)))
		}
		if old == 0 {
			return 0, fmt.Errorf("waiting for %s to name a live process (it %s): %w", s.cfg.PIDFile, what, err)
		}
		return 0, fmt.Errorf("waiting for a new generation to write its pid to %s (it %s): %w", s.cfg.PIDFile, what, err)
	}
	return found, err
}

// WaitExit waits until pid has exited, and returns its wait status if the
// harness reaped it. A zombie counts as exited. If pid exited but another
// process reaped it, WaitExit returns ErrNotReaped.
func (s *Server) WaitExit(ctx context.Context, pid int) (syscall.WaitStatus, error) {
	var (
		st     syscall.WaitStatus
		reaped bool
	)
	err := poll(ctx, func() (bool, error) {
		var gone bool
		gone, st, reaped = s.exitStatus(pid)
		return gone, nil
	})
	if err != nil {
		return 0, fmt.Errorf("harness: waiting for pid %d to exit: %w", pid, err)
	}
	if !reaped {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNotReaped)
	}
	return st, nil
}

// Stop sends SIGTERM to the current generation and waits for it to exit,
// returning its status. It does not wait for other generations; Close
// does.
func (s *Server) Stop(ctx context.Context) (syscall.WaitStatus, error) {
	pid, err := s.currentPID()
	if err != nil {
		return 0, err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("harness: stop: sending SIGTERM to %d: %w", pid, err)
	}
	return s.WaitExit(ctx, pid)
}

// Close kills (SIGKILL) every generation that is still alive: those the
// harness saw, the whole process group of the first one, and any child
// reparented to the harness from that group; then it reaps them. It returns
// an error if some survive closeTimeout. Close is idempotent and meant for
// t.Cleanup; after a Stop it only reaps what is left.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.kill() })
	return s.closeErr
}

func (s *Server) kill() error {
	// The group kill catches generations the pid file never named (one
	// that was starting when we got here); ESRCH just means all are gone.
	if err := syscall.Kill(-s.first, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("harness: killing process group %d: %w", s.first, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var alive []int
	err := poll(ctx, func() (bool, error) {
		s.mu.Lock()
		for _, pid := range childrenInGroup(s.first) {
			if !slices.Contains(s.known, pid) {
				s.known = append(s.known, pid)
			}
		}
		pids := slices.Clone(s.known)
		s.mu.Unlock()
		alive = alive[:0]
		for _, pid := range pids {
			if gone, _, _ := s.exitStatus(pid); !gone {
				// A generation that left our process group (setsid)
				// escaped the group kill. Only kill what is still ours:
				// a pid another process reaped may have been reused.
				if ours(pid, s.first) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				alive = append(alive, pid)
			}
		}
		// Zombies still belong to the group until reaped, so an empty
		// group also proves that nothing is left for us to reap.
		groupGone := errors.Is(syscall.Kill(-s.first, 0), syscall.ESRCH)
		return len(alive) == 0 && groupGone, nil
	})
	if err != nil {
		return fmt.Errorf("harness: after SIGKILL, pids %v or process group %d still exist: %w", alive, s.first, err)
	}
	return nil
}

// exitStatus reports whether pid has exited (a zombie counts), and its
// wait status when the harness reaped it, now or before.
func (s *Server) exitStatus(pid int) (gone bool, st syscall.WaitStatus, reaped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The reaped map also guards against pid reuse: once reaped, a pid
	// stays dead for us whatever process gets the number next.
	if st, ok := s.reaped[pid]; ok {
		return true, st, true
	}
	for {
		wpid, err := syscall.Wait4(pid, &st, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err == nil && wpid == pid:
			s.reaped[pid] = st
			return true, st, true
		case err == nil:
			return false, 0, false // our child, still running
		default:
			// ECHILD: not (or no longer) our child, typically a new
			// generation whose parent is still alive.
			return goneOrZombie(pid), 0, false
		}
	}
}

func describe(st syscall.WaitStatus, reaped bool) string {
	switch {
	case !reaped:
		return "status unknown"
	case st.Exited():
		return fmt.Sprintf("exit status %d", st.ExitStatus())
	case st.Signaled():
		return fmt.Sprintf("killed by %v", st.Signal())
	default:
		return fmt.Sprintf("wait status %#x", uint32(st))
	}
}

// poll calls f every pollInterval until it reports done or an error, or
// ctx ends.
func poll(ctx context.Context, f func() (bool, error)) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		if done, err := f(); done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

package handoff

// The parent's half of tableflip's protocol, spoken by this package
// itself, so that a generation can start new ones again and again (after a
// take-back) and keeps its own copies of the sockets while it drains.
// tableflip's Upgrader does both ends, but its parent end is one-shot
// ("already upgraded", and one Upgrader per process) and closes its copies
// of the sockets as soon as the new process is ready. The child's end is
// still tableflip's (New, Ready, WaitForParent, the inherited Fds), so a
// new generation of any hitless release takes over from this one.
//
// What a new process gets, as tableflip v1.2.3 expects it (child.go,
// parent.go; contract_test.go drives a real tableflip child against this):
//
//	fd 0-2   our stdin, stdout, stderr
//	fd 3     the write end of a pipe: it writes one byte, 42, when ready
//	fd 4     the read end of a pipe carrying a gob [][]string of the names
//	         of fds 5, 6, …, and then nothing until EOF, when we exit
//	fd 5+    the sockets and the side channel, in the order of the names
//	env      TABLEFLIP_HAS_PARENT_7DIU3=yes; working directory: ours at start

import (
	"encoding/gob"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/control"
)

// notifyReady is the byte a ready child writes on fd 3.
const notifyReady = 42

// fileName is tableflip's key for a handed-over descriptor: kind
// ("listener", "packet" or "fd"), network, address (for "fd": the name).
type fileName [3]string

func listenerKey(name string) fileName { return fileName{"listener", listenerNetwork, name} }
func packetKey(name string) fileName   { return fileName{"packet", listenerNetwork, name} }
func fileKey(name string) fileName     { return fileName{"fd", name} }

// reserve holds this generation's own copies of the sockets it hands over.
// They are given to every new generation, and outlive the listeners they
// were copied from (a drain closes those): while they are open, the
// sockets and their accept queues survive a new generation that dies, and
// this one can serve them again (TakeBack). They are closed at Close.
type reserve struct {
	mu     sync.Mutex
	files  map[fileName]*os.File
	closed bool
}

// keep stores a copy of c's descriptor under key, replacing (and closing)
// an older one.
func (r *reserve) keep(key fileName, c syscall.Conn) error {
	f, err := dupConn(c, key[2])
	if err != nil {
		return fmt.Errorf("handoff: copying the descriptor of %s: %w", key[2], err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		f.Close()
		return errors.New("handoff: closed")
	}
	if r.files == nil {
		r.files = make(map[fileName]*os.File)
	}
	if old := r.files[key]; old != nil {
		old.Close()
	}
	r.files[key] = f
	return nil
}

// get returns the copy under key, or nil. It stays the reserve's.
func (r *reserve) get(key fileName) *os.File {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.files[key]
}

func (r *reserve) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, f := range r.files {
		f.Close()
	}
	clear(r.files)
}

// dupConn returns a copy of c's descriptor, closed on exec.
func dupConn(c syscall.Conn, name string) (*os.File, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		f    *os.File
		derr error
	)
	if err := raw.Control(func(fd uintptr) { f, derr = dupFD(fd, name) }); err != nil {
		return nil, err
	}
	return f, derr
}

// successor is a generation this one started, once it is ready.
type successor struct {
	pid    int
	proc   *os.Process
	namesW *os.File // its fd 4's other end: closed only when it died, or by our exit
	link   *link    // nil for a version 0 child

	exited  chan struct{} // closed once it has exited (and was reaped)
	state   *os.ProcessState
	waitErr error

	died    chan struct{} // closed if it exited without saying it was leaving
	leaving chan struct{} // closed when it says it stops for good
	read    chan struct{} // closed when the reader of its link has stopped
}

// spawned is a process started by spawn, not yet ready.
type spawned struct {
	proc   *os.Process
	namesW *os.File
	ready  chan bool // one value: it wrote the ready byte, or its fd 3 closed first
	exited chan struct{}
	state  *os.ProcessState
	err    error
}

// spawn starts the binary at os.Args[0] (or exe, if not nil) with our
// arguments, environment and working directory, handing it files under
// their names. The new process's argv[0] is the path executed, as
// tableflip made it, or for exe os.Args[0], so that its own upgrades
// start what is on disk.
func spawn(files map[fileName]*os.File, exe *executable) (*spawned, error) {
	var path, argv0 string
	if exe == nil {
		p, err := lookPath(os.Args[0])
		if err != nil {
			return nil, fmt.Errorf("can't start process %s: %w", os.Args[0], err)
		}
		path, argv0 = p, p
	} else {
		p, release, err := exe.execPath(5 + len(files) + 8)
		if err != nil {
			return nil, err
		}
		defer release()
		path, argv0 = p, os.Args[0]
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	namesR, namesW, err := os.Pipe()
	if err != nil {
		readyR.Close()
		readyW.Close()
		return nil, fmt.Errorf("pipe: %w", err)
	}
	fds := []*os.File{os.Stdin, os.Stdout, os.Stderr, readyW, namesR}
	names := [][]string{}
	for key, f := range files {
		names = append(names, key[:])
		fds = append(fds, f)
	}
	env := []string{tableflipMarker + "=yes"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, tableflipMarker+"=") {
			env = append(env, kv)
		}
	}
	proc, err := os.StartProcess(path, append([]string{argv0}, os.Args[1:]...),
		&os.ProcAttr{Dir: initialWD, Env: env, Files: fds})
	readyW.Close()
	namesR.Close()
	if err != nil {
		readyR.Close()
		namesW.Close()
		return nil, fmt.Errorf("can't start process %s: %w", path, err)
	}
	s := &spawned{proc: proc, namesW: namesW, ready: make(chan bool, 1), exited: make(chan struct{})}
	// The names are a few hundred bytes: the pipe takes them at once, and
	// a child that died already makes the write fail, which its exit
	// reports better.
	_ = gob.NewEncoder(namesW).Encode(names)
	go func() {
		defer readyR.Close()
		var b [1]byte
		n, _ := readyR.Read(b[:])
		s.ready <- n == 1 && b[0] == notifyReady
	}()
	// This goroutine belongs to the process it waits for: it ends when
	// that process exits, which may be after this one.
	go func() {
		s.state, s.err = proc.Wait()
		close(s.exited)
	}()
	return s, nil
}

// failure describes a child that exited before it was ready.
func (s *spawned) failure() *control.ChildError {
	ce := &control.ChildError{Reason: control.ReasonExited, PID: s.proc.Pid}
	if s.err != nil {
		ce.Err = s.err
		return ce
	}
	if sig, ok := signaled(s.state); ok {
		ce.Reason, ce.Signal = control.ReasonCrashed, sig
		return ce
	}
	ce.ExitStatus = s.state.ExitCode()
	return ce
}

// exitedReadyWait bounds how long await, having seen the child exit,
// waits for the reader of its ready pipe to say what was in it.
const exitedReadyWait = time.Second

// await waits until s is ready, has exited, timeout has passed or stop is
// closed; in the last two cases it kills s and waits for its exit. A
// child whose ready pipe closed without the byte is waited for until it
// exits (it may have handed fd 3 to another process) or timeout.
func (s *spawned) await(timeout time.Duration, stop <-chan struct{}) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	ready := s.ready
	for {
		select {
		case ok := <-ready:
			if ok {
				return nil
			}
			ready = nil
		case <-s.exited:
			// A child may write the ready byte and exit at once (one
			// that stops for good right after its start); both are then
			// seen together, and the byte, already in the pipe, must
			// win. Once the child is gone the reader has the byte or
			// EOF at once, unless a process the child started holds
			// fd 3 and writes nothing: the bound is for that one.
			if ready != nil {
				select {
				case ok := <-ready:
					if ok {
						return nil
					}
				case <-time.After(exitedReadyWait):
				}
			}
			s.namesW.Close()
			return s.failure()
		case <-t.C:
			s.kill()
			return &control.ChildError{Reason: control.ReasonTimedOut, PID: s.proc.Pid, Timeout: timeout}
		case <-stop:
			s.kill()
			return control.ErrStopped
		}
	}
}

// kill ends s and waits until it has exited (SIGKILL cannot be caught).
func (s *spawned) kill() {
	s.proc.Kill()
	<-s.exited
	s.namesW.Close()
}

// describe says how a process ended, for logs and STATUS=.
func describe(state *os.ProcessState, err error) string {
	switch {
	case err != nil:
		return "ended (" + err.Error() + ")"
	case state == nil:
		return "ended"
	}
	if sig, ok := signaled(state); ok {
		return "was killed by " + signalName(sig)
	}
	return fmt.Sprintf("exited with status %d", state.ExitCode())
}

// fileListener makes a listener of f, a copy of a listening socket; f
// stays the caller's.
func fileListener(f *os.File) (net.Listener, error) { return net.FileListener(f) }

// filePacketConn makes a datagram socket of f, which stays the caller's.
func filePacketConn(f *os.File) (net.PacketConn, error) { return net.FilePacketConn(f) }

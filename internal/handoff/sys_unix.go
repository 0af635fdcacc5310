//go:build unix

package handoff

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func closeOnExec(fd int) { syscall.CloseOnExec(fd) }

// readable reports whether fd has something to read (or is at EOF, or is
// not open: then reading fails at once) within d.
func readable(fd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1)
		if err == unix.EINTR && time.Now().Before(deadline) {
			continue
		}
		return err != nil || n > 0
	}
}

func checkExecutable(path string) error { return unix.Access(path, unix.X_OK) }

func lookPath(file string) (string, error) { return exec.LookPath(file) }

// socketpair returns both ends of a new unix datagram socket pair, neither
// inherited by processes started later (the new generation gets its end
// through tableflip, which passes it explicitly).
func socketpair() (ours, theirs *os.File, err error) {
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "hitless-side"), os.NewFile(uintptr(fds[1]), "hitless-side"), nil
}

func rights(f *os.File) []byte {
	var oob []byte
	if raw, err := f.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { oob = unix.UnixRights(int(fd)) })
	}
	return oob
}

// parseRights returns the first descriptor attached to a message (closing
// any others) as a file called name, or nil.
func parseRights(oob []byte, name string) (*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var f *os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			if f == nil {
				f = os.NewFile(uintptr(fd), name)
			} else {
				unix.Close(fd)
			}
		}
	}
	return f, nil
}

// captureStderr points fd 2 at a new pipe and returns the pipe's read end
// (for the previous generation, which relays it) and a copy of the real
// stderr (for restoreStderr). Go's os.Stderr writes to fd 2, and so does
// the runtime when it panics, so both go through the pipe from now on.
func captureStderr() (r, saved *os.File, err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer w.Close()
	savedFD, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		r.Close()
		return nil, nil, os.NewSyscallError("dup stderr", err)
	}
	var derr error
	ctl(w, func(fd int) { derr = unix.Dup2(fd, 2) })
	if derr != nil {
		r.Close()
		unix.Close(savedFD)
		return nil, nil, os.NewSyscallError("dup2", derr)
	}
	return r, os.NewFile(uintptr(savedFD), "stderr"), nil
}

// restoreStderr puts f back on fd 2.
func restoreStderr(f *os.File) error {
	var err error
	ctl(f, func(fd int) { err = unix.Dup2(fd, 2) })
	return err
}

// ctl runs fn with f's descriptor. Control, not Fd: Fd would switch a
// shared file to blocking mode.
func ctl(f *os.File, fn func(fd int)) {
	raw, err := f.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) { fn(int(fd)) })
}

// dupFile returns a copy of f's descriptor, closed on exec like every
// descriptor of ours (it reaches a new generation only attached to a
// side-channel message).
func dupFile(f *os.File) (*os.File, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		fd   int
		derr error
	)
	if err := raw.Control(func(d uintptr) { fd, derr = unix.FcntlInt(d, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("dup", derr)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// dupFD returns a copy of fd, closed on exec, as a file called name.
func dupFD(fd uintptr, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("dup", err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

// signaled returns the signal that ended a process, if one did.
func signaled(state *os.ProcessState) (syscall.Signal, bool) {
	if state == nil {
		return 0, false
	}
	ws, ok := state.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}

// signalName is the signal's name ("SIGKILL"), or its number.
func signalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(s))
}

// dupAbove returns a copy of f's descriptor numbered minFD or higher,
// closed on exec.
func dupAbove(f *os.File, minFD int) (*os.File, error) {
	var (
		nfd  int
		derr error
	)
	ctl(f, func(fd int) { nfd, derr = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, minFD) })
	if derr != nil {
		return nil, os.NewSyscallError("dup", derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// recvNow receives a datagram already queued on c, without waiting.
func recvNow(c *net.UnixConn, buf, oob []byte) (n, oobn int, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var rerr error
	if err := raw.Control(func(fd uintptr) {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
	}); err != nil {
		return 0, 0, err
	}
	return n, oobn, rerr
}

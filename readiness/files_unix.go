//go:build unix

package readiness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Messages are sent with sendmsg (and SCM_RIGHTS for the descriptors that
// FDSTORE and BARRIER attach), without blocking: a systemd that does not
// read its notify socket (its queue holds about ten datagrams) must not
// stop the service, which would otherwise hang in a write at STOPPING=1.

// NotifyWithFiles sends the state lines with the given files (sockets,
// pipes) attached, as FDSTORE=1 needs. It reports whether the message was
// sent, with the same three cases as Notify. The files stay open and keep
// their blocking mode: they are reached through SyscallConn, never Fd().
func NotifyWithFiles(files []syscall.Conn, states ...string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" || len(states) == 0 {
		return false, nil
	}
	fds := make([]int, 0, len(files))
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, f := range files {
		fd, err := dupConn(f)
		if err != nil {
			return false, fmt.Errorf("readiness: attaching a file: %w", err)
		}
		fds = append(fds, fd)
	}
	msg := strings.Join(states, "\n")
	if err := sendmsg(addr, msg, fds); err != nil {
		return false, fmt.Errorf("readiness: notify %q to NOTIFY_SOCKET=%s: %w", msg, addr, err)
	}
	return true, nil
}

// notifyTimeout bounds how long a message waits for room in systemd's
// notify queue.
const notifyTimeout = time.Second

// ErrNotifyFull wraps the error of a message systemd did not take in
// within notifyTimeout: it is not reading its notify socket.
var ErrNotifyFull = errors.New("systemd is not reading its notify socket (queue full)")

// sendmsg sends msg (and fds) to the notify socket at addr, waiting at most
// notifyTimeout for room in its queue.
func sendmsg(addr, msg string, fds []int) error {
	deadline := time.Now().Add(notifyTimeout)
	for {
		err := sendmsgOnce(addr, msg, fds)
		if !errors.Is(err, unix.EAGAIN) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %v", ErrNotifyFull, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sendmsgOnce(addr, msg string, fds []int) error {
	// An unconnected socket and sendmsg with the address: WriteMsgUnix on
	// a connected datagram socket is refused by Go.
	syscall.ForkLock.RLock()
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.CloseOnExec(s)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return err
	}
	defer unix.Close(s)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// A leading '@' names an abstract socket; x/sys/unix maps it.
	return unix.Sendmsg(s, []byte(msg), oob, &unix.SockaddrUnix{Name: addr}, unix.MSG_DONTWAIT)
}

// dupConn returns a duplicate of c's descriptor, which the caller closes.
func dupConn(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	dup, derr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return dup, derr
}

// Barrier waits until systemd has processed every message this process
// sent before it (BARRIER=1, systemd 246 and later): a process that hands
// its main PID over and then exits calls it in between, so that systemd
// never sees the exit first. Without NOTIFY_SOCKET it returns nil at once.
// ctx bounds the wait.
func Barrier(ctx context.Context) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("readiness: barrier: %w", err)
	}
	defer r.Close()
	wfd, err := dupConn(w)
	w.Close()
	if err != nil {
		return fmt.Errorf("readiness: barrier: %w", err)
	}
	err = sendmsg(addr, "BARRIER=1", []int{wfd})
	unix.Close(wfd)
	if err != nil {
		return fmt.Errorf("readiness: barrier: %w", err)
	}
	// systemd closes its copy of the write end once it got here: EOF.
	if d, ok := ctx.Deadline(); ok {
		r.SetReadDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Now()) })
	defer stop()
	_, err = r.Read(make([]byte, 1))
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("readiness: barrier: %w", ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The read deadline is ctx's; it may fire a moment before ctx.
		return fmt.Errorf("readiness: barrier: %w", context.DeadlineExceeded)
	case err == nil:
		return errors.New("readiness: barrier: unexpected data")
	}
	return fmt.Errorf("readiness: barrier: %w", err)
}

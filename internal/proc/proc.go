// Package proc holds the operating-system mechanics behind package control:
// who is at the other end of a unix socket, whether that end is still
// there, who may replace a socket file, and waiting for a process that is
// not our child to exit.
//
// Peer credentials come from SO_PEERCRED on Linux and LOCAL_PEERCRED (a
// xucred) on macOS and FreeBSD. Everywhere else PeerCred returns
// ErrNotSupported, and so a control socket there serves nobody. WaitGone,
// PeerClosed and PrivateOwner need a unix system; on others (Windows) they
// return ErrNotSupported too.
package proc

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// ErrNotSupported is returned where the platform lacks what a function
// needs.
var ErrNotSupported = errors.New("proc: not supported on this platform")

// Cred is what the kernel recorded about the process at the other end of a
// unix socket. For a connection a client made, that is the client at
// connect time; for the client's end, it is whoever created the listening
// socket, at listen time (possibly a previous generation of the service,
// long gone, but with the same user).
type Cred struct {
	UID int
	// PID is zero where the platform does not say.
	PID int
}

// PeerCred returns the credentials of the peer of c, a connected unix
// socket (a *net.UnixConn). They are fixed by the kernel when the
// connection is made, so they cannot be faked by what the peer sends.
func PeerCred(c syscall.Conn) (Cred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var cred Cred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = peerCred(fd) }); err != nil {
		return Cred{}, err
	}
	if cerr != nil {
		return Cred{}, fmt.Errorf("reading the peer's credentials: %w", cerr)
	}
	return cred, nil
}

// PeerClosed reports whether the peer of c has closed its end (or reset
// the connection), without waiting and without consuming anything it sent.
// False with a nil error means the peer may still be there: it has not
// closed, or it sent data the EOF may be waiting behind.
func PeerClosed(c syscall.Conn) (bool, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return false, err
	}
	var closed bool
	var perr error
	if err := raw.Control(func(fd uintptr) { closed, perr = peerClosed(fd) }); err != nil {
		return false, err
	}
	return closed, perr
}

// WaitGone waits until process pid no longer exists, or is a zombie (it
// has exited and waits for its parent to reap it). It returns nil then, or
// an error wrapping ctx.Err() if ctx is done first. It fails at once for a
// pid below 1 (kill(0) and kill(-1) would address whole process groups),
// and with ErrNotSupported where there is no kill(2).
//
// It polls kill(pid, 0) every 10 ms: the process is not our child, so
// wait(2) cannot be used, and a pidfd (Linux only) would have to be opened
// from a PID that may already have been reused by then. Zombies are
// recognised on Linux and macOS; elsewhere a zombie counts as running until
// its parent reaps it.
func WaitGone(ctx context.Context, pid int) error {
	if pid < 1 {
		return fmt.Errorf("proc: invalid pid %d", pid)
	}
	return waitGone(ctx, pid)
}

// PrivateOwner returns the user that owns the file at path, but only if
// nobody except that user and root can make path lead to another file:
// every directory consulted while resolving path, through any symbolic
// links, must be owned by root or by that user and be writable by neither
// its group nor others. Otherwise it returns an error naming the first
// directory that fails. A relative path is resolved from the working
// directory. It returns ErrNotSupported where files have no owning uid.
//
// This is what makes "the socket's owner" a safe answer to whom to trust:
// in a directory others can write, the file at the path may be theirs, and
// then so would be its owner (security review M4). A sticky directory such
// as /tmp does not pass either: stickiness keeps others from replacing a
// file that exists, not from creating one where none does (a service's
// socket is absent while it is down).
func PrivateOwner(path string) (int, error) { return privateOwner(path) }

// BehindRootOnly reports whether resolving path goes through a directory
// that is root's and grants its group and others nothing (mode 0700 or
// less): then only root, or a process root let in, can have put a file at
// path. systemd keeps the runtime directories of DynamicUser= services
// behind such a directory (/run/private, 0700), and from systemd 257 on
// mounts the service's own one id-mapped: seen from outside, its files
// belong to nobody (65534), not to the service's uid, so that
// PrivateOwner's answer cannot vouch for the service — this can. It is
// false where files have no owning uid, or when path cannot be resolved.
func BehindRootOnly(path string) bool { return behindRootOnly(path) }

package listener

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/hitlessgo/hitless/readiness"
)

// Errors of FromSystemd.
var ErrBadEnvironment = errors.New("listener: malformed LISTEN_* environment")

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// maxListenFDs bounds LISTEN_FDS: systemd passes at most a few thousand.
const maxListenFDs = 4096

// FromSystemd returns the sockets systemd passed to this process — socket
// activation (.socket units) or, after a restart, the file descriptor store
// — by name (LISTEN_FDNAMES, set with FileDescriptorName= or FDNAME=;
// unnamed ones are called "unknown" as in sd_listen_fds_with_names(3)).
// Put the result in Set.Systemd.
//
// It returns nil, nil when the variables are meant for another process:
// when LISTEN_PID is not this process's PID, or when LISTEN_PIDFDID
// (systemd 258 and later) is set and is not the inode ID of this process's
// pidfd (readiness.PIDFDID): a PID can be reused, that ID cannot. Where
// this process's ID cannot be had (no pidfs: Linux before 6.9, or not
// Linux), LISTEN_PID alone decides, as sd_listen_fds(3) does. Either way
// it removes LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PIDFDID
// from the environment, so that processes started later, including the
// next generation, never see them. A LISTEN_PIDFDID left behind would
// outlive the others: a child given sockets by a tool that sets LISTEN_PID
// and LISTEN_FDS but not LISTEN_PIDFDID (another socket activator, or a
// systemd before 258 in a container) would find this process's ID next to
// its own PID, and sd_listen_fds(3) of systemd 258 would refuse its
// sockets.
//
// Malformed variables are an error wrapping ErrBadEnvironment, and no
// descriptor is taken (a LISTEN_PIDFDID that is set and not empty must be
// a decimal number from 1 to 2^64-1). So is a LISTEN_FDS that counts a
// descriptor that is
// not an open socket (what sd_is_socket(3) checks): a closed one, a file,
// a pipe. Such a descriptor number is not systemd's to give: it is free, or
// the process's own (the Go runtime's epoll descriptor and the cgroup
// files it reads its CPU limit from, a log file), and a Set would later
// close it as unused. The error names the descriptor and what it is, and
// none of the descriptors is wrapped, closed or marked close-on-exec.
// Descriptors of ListenFIFO=, ListenSpecial= or ListenMessageQueue= are
// refused the same way: a Set serves sockets only.
func FromSystemd() (map[string][]*os.File, error) {
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	pidfdID := os.Getenv("LISTEN_PIDFDID")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PIDFDID")
	named, err := parseListenEnv(listenEnv{pid, fds, names, pidfdID}, self{os.Getpid(), ownPIDFDID})
	if err != nil || named == nil {
		return nil, err
	}
	// Every number is checked before any is taken: on failure, nothing
	// about any of them has changed (security review 2026-12-01, L3).
	if err := checkSockets(named, fds, fdKind); err != nil {
		return nil, err
	}
	out := make(map[string][]*os.File, len(named))
	for name, nums := range named {
		for _, fd := range nums {
			closeOnExec(fd)
			out[name] = append(out[name], os.NewFile(uintptr(fd), "systemd:"+name))
		}
	}
	return out, nil
}

// checkSockets returns an error wrapping ErrBadEnvironment unless kind
// says that every descriptor in named is a socket. It names the lowest
// descriptor that is not, says what it is, and how many others are not
// either. fdsVar is LISTEN_FDS, for the message.
func checkSockets(named map[string][]int, fdsVar string, kind func(fd int) (socket bool, what string)) error {
	var all []int
	for _, nums := range named {
		all = append(all, nums...)
	}
	slices.Sort(all)
	first, firstWhat, bad := -1, "", 0
	for _, fd := range all {
		socket, what := kind(fd)
		if socket {
			continue
		}
		if bad == 0 {
			first, firstWhat = fd, what
		}
		bad++
	}
	if bad == 0 {
		return nil
	}
	span := fmt.Sprintf("descriptors %d to %d", all[0], all[len(all)-1])
	if len(all) == 1 {
		span = fmt.Sprintf("descriptor %d", all[0])
	}
	detail := fmt.Sprintf("LISTEN_FDS=%s counts %s, but %d is %s", fdsVar, span, first, firstWhat)
	if firstWhat != fdNotOpen {
		detail += ", not a socket"
	}
	if bad > 1 {
		detail += fmt.Sprintf(" (%d of the %d are not open sockets)", bad, len(all))
	}
	return fmt.Errorf("%w: %s; no descriptor was taken", ErrBadEnvironment, detail)
}

// listenEnv holds the values of the LISTEN_* variables ("" when unset).
type listenEnv struct {
	pid, fds, names, pidfdID string
}

// self says who this process is: its PID, and a function that returns the
// inode ID of its pidfd, or false where there is none (readiness.PIDFDID).
// It is asked only when LISTEN_PIDFDID is set and LISTEN_PID is ours.
type self struct {
	pid     int
	pidfdID func() (uint64, bool)
}

// ownPIDFDID is this process's pidfd inode ID, if the system has one.
func ownPIDFDID() (uint64, bool) {
	id, err := readiness.PIDFDID(os.Getpid())
	return id, err == nil
}

// parseListenEnv checks the LISTEN_* variables and returns the descriptor
// numbers by name, or nil when they are not for the process me describes.
//
// LISTEN_PID and LISTEN_FDS are decimal integers as strconv.Atoi reads
// them: an optional sign, then digits (leading zeros allowed), nothing
// else — no spaces. LISTEN_PID must be positive; LISTEN_FDS from 0 to
// maxListenFDs. LISTEN_FDNAMES, if set, has exactly LISTEN_FDS
// ':'-separated names; an empty one is "unknown", and names may repeat
// (the descriptors then share the name). Without LISTEN_PID and LISTEN_FDS
// nothing was passed; LISTEN_FDNAMES alone is ignored, as systemd does.
//
// LISTEN_PIDFDID, if set and not empty (systemd never sets it empty, and
// an empty value names no process), is looked at only once LISTEN_PID is
// me.pid (variables meant for another process are not ours to judge), and
// before LISTEN_FDS: it is digits only (no sign: it is unsigned, as
// systemd writes it; leading zeros allowed) for a number from 1 to 2^64-1
// (pidfs never gives 0), else malformed. When me's own ID is known and
// differs, the variables are for another process that had the same PID:
// nil. When it is unknown, only LISTEN_PID counts.
func parseListenEnv(env listenEnv, me self) (map[string][]int, error) {
	pidVar, fdsVar, namesVar := env.pid, env.fds, env.names
	if pidVar == "" && fdsVar == "" {
		return nil, nil
	}
	p, err := strconv.Atoi(pidVar)
	if err != nil || p <= 0 {
		return nil, fmt.Errorf("%w: LISTEN_PID=%q", ErrBadEnvironment, pidVar)
	}
	if p != me.pid {
		return nil, nil
	}
	if env.pidfdID != "" {
		id, err := parsePIDFDID(env.pidfdID)
		if err != nil {
			return nil, err
		}
		if own, ok := me.pidfdID(); ok && own != id {
			// Same PID, another process: the one systemd meant has
			// exited and its PID was given to this one.
			return nil, nil
		}
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil || n < 0 || n > maxListenFDs {
		return nil, fmt.Errorf("%w: LISTEN_FDS=%q (want 0 to %d)", ErrBadEnvironment, fdsVar, maxListenFDs)
	}
	var names []string
	if namesVar != "" {
		names = strings.Split(namesVar, ":")
		if len(names) != n {
			return nil, fmt.Errorf("%w: LISTEN_FDNAMES has %d names for %d descriptors", ErrBadEnvironment, len(names), n)
		}
	}
	out := make(map[string][]int, n)
	for i := range n {
		name := "unknown"
		if names != nil && names[i] != "" {
			name = names[i]
		}
		out[name] = append(out[name], listenFDsStart+i)
	}
	return out, nil
}

// parsePIDFDID reads LISTEN_PIDFDID: ASCII digits only, 1 to 2^64-1.
func parsePIDFDID(v string) (uint64, error) {
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, fmt.Errorf("%w: LISTEN_PIDFDID=%q (want the decimal inode ID of this process's pidfd)", ErrBadEnvironment, v)
		}
	}
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: LISTEN_PIDFDID=%q (want a decimal number from 1 to %d)", ErrBadEnvironment, v, uint64(math.MaxUint64))
	}
	return id, nil
}

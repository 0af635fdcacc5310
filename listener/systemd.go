package listener

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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
// It returns nil, nil when LISTEN_PID does not name this process (the
// variables are then meant for another one). Either way it removes
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the environment, so that
// processes started later, including the next generation, never see them.
// Malformed variables are an error wrapping ErrBadEnvironment, and no
// descriptor is taken.
func FromSystemd() (map[string][]*os.File, error) {
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	named, err := parseListenEnv(pid, fds, names, os.Getpid())
	if err != nil || named == nil {
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

// parseListenEnv checks the LISTEN_* variables and returns the descriptor
// numbers by name, or nil when they are not for pid.
func parseListenEnv(pidVar, fdsVar, namesVar string, pid int) (map[string][]int, error) {
	if pidVar == "" && fdsVar == "" {
		return nil, nil
	}
	p, err := strconv.Atoi(pidVar)
	if err != nil || p <= 0 {
		return nil, fmt.Errorf("%w: LISTEN_PID=%q", ErrBadEnvironment, pidVar)
	}
	if p != pid {
		return nil, nil
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

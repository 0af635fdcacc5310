package upgrade

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// hurrier asks the previous generation (our parent) to cut its drain
// short. It holds a pidfd opened at start-up, while the parent certainly
// still exists, so that the signal can never reach another process that
// later got the same PID, or init after the parent exited.
type hurrier struct {
	pidfd int
	sig   syscall.Signal
}

func newHurrier(ppid int, sig syscall.Signal) hurrier {
	if sig == 0 {
		return hurrier{pidfd: -1}
	}
	fd, err := unix.PidfdOpen(ppid, 0)
	if err != nil {
		return hurrier{pidfd: -1}
	}
	return hurrier{pidfd: fd, sig: sig}
}

func (h hurrier) send() error {
	if h.sig == 0 {
		return fmt.Errorf("no HurrySignal configured")
	}
	if h.pidfd < 0 {
		return fmt.Errorf("no handle on the previous generation (pidfd_open unsupported)")
	}
	return unix.PidfdSendSignal(h.pidfd, h.sig, nil, 0)
}

// newestChild returns the most recently started child process of ours, or 0.
// Right after an upgrade succeeded that is the new generation.
func newestChild() int {
	self := strconv.Itoa(os.Getpid())
	var kids []int
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil {
				kids = append(kids, pid)
			}
		}
	}
	if len(tasks) == 0 {
		// Kernels without CONFIG_PROC_CHILDREN: scan every process.
		stats, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, f := range stats {
			if fields := statFields(f); len(fields) > 2 && fields[1] == self {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
					kids = append(kids, pid)
				}
			}
		}
	}
	best, bestStart := 0, uint64(0)
	for _, pid := range kids {
		fields := statFields("/proc/" + strconv.Itoa(pid) + "/stat")
		if len(fields) < 20 || fields[0] == "Z" {
			continue
		}
		// starttime is field 22 of stat: the 20th after the command.
		start, err := strconv.ParseUint(fields[19], 10, 64)
		if err == nil && start >= bestStart {
			best, bestStart = pid, start
		}
	}
	return best
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name: state, ppid, ...
func statFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return nil
	}
	return strings.Fields(string(b[i+2:]))
}

func isZombie(pid int) bool {
	f := statFields("/proc/" + strconv.Itoa(pid) + "/stat")
	return len(f) > 0 && f[0] == "Z"
}

// peerUID returns the user of the process at the other end of a unix
// socket connection, as the kernel recorded it at connect time.
func peerUID(fd uintptr) (int, error) {
	cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(cred.Uid), nil
}

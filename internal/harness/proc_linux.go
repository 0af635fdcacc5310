package harness

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// becomeSubreaper makes orphaned descendants (generations whose parent
// generation exited) children of this process instead of init, so the
// harness can reap them and read their exit status.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// procStat returns the state, parent pid and process group of pid from
// /proc/<pid>/stat.
func procStat(pid int) (state byte, ppid, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and
	// parentheses, so parse from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, 0, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	return f[0][0], ppid, pgrp, true
}

// goneOrZombie reports whether pid, which is not our child, has exited. A
// zombie has exited; only its parent's wait is missing. kill(pid, 0)
// cannot tell, since it succeeds on zombies.
func goneOrZombie(pid int) bool {
	state, _, _, ok := procStat(pid)
	return !ok || state == 'Z' || state == 'X'
}

// childrenInGroup lists our children in process group pgid: generations
// reparented to us that the pid file never named. Restricting to the group
// keeps us from reaping children that other code in this process (an
// exec.Cmd) is waiting for.
func childrenInGroup(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, pgrp, ok := procStat(pid); ok && ppid == self && pgrp == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ours reports whether pid is in process group pgid or is our child, that
// is, still one of the server's processes rather than a stranger that got
// a recycled pid.
func ours(pid, pgid int) bool {
	_, ppid, pgrp, ok := procStat(pid)
	return ok && (pgrp == pgid || ppid == os.Getpid())
}

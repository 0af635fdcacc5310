//go:build linux

package readiness

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// pidfsMagic is the f_type of pidfs (PID_FS_MAGIC in linux/magic.h): only
// a pidfd on pidfs has an inode of its own per process.
const pidfsMagic = 0x50494446

// PIDFDID returns the inode ID of a pidfd of process pid: the number
// systemd puts in LISTEN_PIDFDID= (258 and later) and compares with
// MAINPIDFDID= (257 and later). Unlike a PID, it is never reused while the
// system runs, so it names one process for good. The ID belongs to the
// process, not to the descriptor: every pidfd of the same process has the
// same one, and it stays the same across execve.
//
// It is the st_ino of a pidfd on pidfs (Linux 6.9 and later), which is
// what systemd 257 compares with; systemd 258 asks name_to_handle_at
// first, which gives the same 64-bit number on a 64-bit kernel. On 32-bit
// systems st_ino may be cut to 32 bits where the file handle is not, and
// the two versions of systemd could disagree: PIDFDID returns
// ErrNoPIDFDID there, as it does without pidfs. Callers then go by PID
// alone, which is what systemd itself does when it cannot get an ID.
//
// A process that no longer exists is an error (ESRCH) that does not wrap
// ErrNoPIDFDID.
func PIDFDID(pid int) (uint64, error) {
	if strconv.IntSize != 64 {
		return 0, ErrNoPIDFDID
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ENOSYS || err == unix.EPERM {
		// Linux before 5.3, or a seccomp filter that refuses the call.
		return 0, fmt.Errorf("%w (pidfd_open: %v)", ErrNoPIDFDID, err)
	}
	if err != nil {
		return 0, fmt.Errorf("readiness: pidfd of pid %d: %w", pid, err)
	}
	defer unix.Close(fd)
	return pidfdInodeID(fd)
}

// pidfdInodeID returns the inode ID of the pidfd fd.
func pidfdInodeID(fd int) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return 0, fmt.Errorf("readiness: fstatfs of a pidfd: %w", err)
	}
	if fs.Type != pidfsMagic {
		return 0, fmt.Errorf("%w (pidfds are not on pidfs: Linux before 6.9)", ErrNoPIDFDID)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("readiness: fstat of a pidfd: %w", err)
	}
	return uint64(st.Ino), nil
}

package readiness

import (
	"errors"
	"strconv"
)

// ErrNoPIDFDID is returned by PIDFDID where the kernel gives processes no
// stable pidfd inode ID: outside Linux, on Linux before 6.9 (no pidfs:
// every pidfd then shares one anonymous inode, whose number says nothing
// about the process), and on 32-bit systems, where systemd and this
// package could disagree on what the ID is (see PIDFDID).
var ErrNoPIDFDID = errors.New("readiness: no pidfd inode ID on this system")

// MainPIDFDID returns a MAINPIDFDID= line: the pidfd inode ID (PIDFDID) of
// the process a MAINPID= line in the same message names. systemd 257 and
// later then take the new main PID only if the process with that PID is
// still the one with that ID, so that a PID recycled between sending and
// systemd reading the message is refused instead of supervised; systemd
// 256 and older ignore the line, as they ignore every field they do not
// know. A wrong ID is worse than none: 257 then refuses the MAINPID= line
// ("mismatches with received MAINPIDFDID=, not changing main PID"), so
// send only what PIDFDID returned.
func MainPIDFDID(id uint64) string {
	return "MAINPIDFDID=" + strconv.FormatUint(id, 10)
}

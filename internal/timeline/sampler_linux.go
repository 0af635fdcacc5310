package timeline

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

const canSample = true

// atClkTck is the auxiliary vector entry in which the kernel hands every
// process the clock tick rate that /proc/<pid>/stat counts CPU time in
// (what sysconf(_SC_CLK_TCK) returns in C).
const atClkTck = 17

// clockTicks is the tick rate, read once from /proc/self/auxv; 100 (the
// value on every Linux architecture Go supports) if that cannot be read.
var clockTicks = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	w := int(unsafe.Sizeof(uintptr(0)))
	word := func(b []byte) uint64 {
		if w == 4 {
			return uint64(binary.NativeEndian.Uint32(b))
		}
		return binary.NativeEndian.Uint64(b)
	}
	for ; len(b) >= 2*w; b = b[2*w:] {
		if word(b) == atClkTck {
			if v := int64(word(b[w:])); v > 0 {
				return v
			}
			break
		}
	}
	return 100
})

// readProc reads one process's CPU time (utime+stime from
// /proc/<pid>/stat, and its CPU-time clock or else each thread's time from
// /proc/<pid>/task/*/schedstat) and resident set (from
// /proc/<pid>/statm). ok is false if the process is gone, exiting or a
// zombie: it has no memory left and uses no more CPU, and keeping it
// would report its generation as alive.
func readProc(pid int) (l procLook, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return l, false
	}
	// The command name, field 2, is in parentheses and may itself hold
	// spaces and parentheses, so the fields are counted from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return l, false
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 || f[0][0] == 'Z' || f[0][0] == 'X' {
		return l, false
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return l, false
	}
	l.ticks = time.Duration(ut+st) * time.Second / time.Duration(clockTicks())
	// The task list is read only without the clock: the clock is exact and
	// one system call, the list a few file reads per thread.
	if l.clock, l.hasClock = cpuClock(pid); !l.hasClock {
		l.threads = readThreads(dir + "/task")
	}
	statm, err := os.ReadFile(dir + "/statm")
	if err != nil {
		return l, false
	}
	m := bytes.Fields(statm)
	if len(m) < 2 {
		return l, false
	}
	// A process that is exiting has already given its memory back while
	// it is not yet a zombie: statm then reads all zeros. A live user
	// process always has some page resident, so no RSS means gone too.
	pages, err := strconv.ParseInt(string(m[1]), 10, 64)
	if err != nil || pages <= 0 {
		return l, false
	}
	l.rss = pages * int64(os.Getpagesize())
	return l, true
}

// cpuClock is processClock; a test replaces it to exercise the schedstat
// fallback. Only the Sampler's goroutine calls it.
var cpuClock = processClock

// processClock reads the CPU-time clock of process pid: what
// clock_gettime(2) gives for the clock clock_getcpuclockid(3) returns,
// the time all its threads have run, those that have exited included, to
// the nanosecond. Linux lets any process read it. ok is false if it
// cannot be read: pid gone, or a kernel (or sandbox) without it.
func processClock(pid int) (cpu time.Duration, ok bool) {
	// The kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED): the bitwise
	// complement of the PID, shifted left three bits, with 2 (the
	// scheduler's run time rather than the tick-sampled user or system
	// time) in the low bits.
	id := int32(^pid<<3 | 2)
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, uintptr(id), uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}

// readThreads reads the time on CPU, in nanoseconds, of every thread
// listed in task, a /proc/<pid>/task directory: the first field of each
// thread's schedstat. It is nil if any of it cannot be read, which is
// mostly a thread ending between the listing and its read: had the
// thread been left out while it still ran, cpuCount would count it as
// gone now and again, in full, when it showed up at the next look.
func readThreads(task string) map[int]time.Duration {
	ents, err := os.ReadDir(task)
	if err != nil {
		return nil
	}
	out := make(map[int]time.Duration, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			return nil
		}
		b, err := os.ReadFile(task + "/" + e.Name() + "/schedstat")
		if err != nil {
			return nil
		}
		f := bytes.Fields(b)
		if len(f) == 0 {
			return nil
		}
		ns, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || ns < 0 {
			return nil
		}
		out[tid] = time.Duration(ns)
	}
	return out
}

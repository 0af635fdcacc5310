package timeline

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"sync"
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
// /proc/<pid>/stat) and resident set (from /proc/<pid>/statm). ok is false
// if the process is gone, exiting or a zombie: it has no memory left and
// uses no more CPU, and keeping it would report its generation as alive.
func readProc(pid int) (cpu time.Duration, rss int64, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name, field 2, is in parentheses and may itself hold
	// spaces and parentheses, so the fields are counted from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 || f[0][0] == 'Z' || f[0][0] == 'X' {
		return 0, 0, false
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	statm, err := os.ReadFile(dir + "/statm")
	if err != nil {
		return 0, 0, false
	}
	m := bytes.Fields(statm)
	if len(m) < 2 {
		return 0, 0, false
	}
	// A process that is exiting has already given its memory back while
	// it is not yet a zombie: statm then reads all zeros. A live user
	// process always has some page resident, so no RSS means gone too.
	pages, err := strconv.ParseInt(string(m[1]), 10, 64)
	if err != nil || pages <= 0 {
		return 0, 0, false
	}
	ticks := ut + st
	cpu = time.Duration(ticks) * time.Second / time.Duration(clockTicks())
	return cpu, pages * int64(os.Getpagesize()), true
}

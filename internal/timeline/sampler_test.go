package timeline

import (
	"testing"
	"time"
)

// TestCPUCount walks cpuCount through the cases its rule is for, with
// made-up looks: each step gives the per-thread times and the tick total
// and wants the count it returns.
func TestCPUCount(t *testing.T) {
	ms := time.Millisecond
	var c cpuCount
	for i, s := range []struct {
		threads map[int]time.Duration
		ticks   time.Duration
		want    time.Duration
		why     string
	}{
		{map[int]time.Duration{1: 3 * ms, 2: 4 * ms}, 0, 7 * ms, "the threads' sum, finer than ticks"},
		{map[int]time.Duration{1: 13 * ms, 2: 4*ms + 500*time.Microsecond}, 10 * ms, 17*ms + 500*time.Microsecond, "both grow"},
		{map[int]time.Duration{1: 14 * ms}, 10 * ms, 18*ms + 500*time.Microsecond, "thread 2 ended: its last 4.5 ms still count"},
		{map[int]time.Duration{1: 14 * ms, 3: ms}, 10 * ms, 19*ms + 500*time.Microsecond, "a new thread"},
		{map[int]time.Duration{1: 14 * ms, 3: 2 * ms, 4: ms}, 40 * ms, 40 * ms, "a thread burnt 20 ms and ended between two looks: the ticks know"},
		{map[int]time.Duration{1: 15 * ms, 3: 3 * ms, 4: 2 * ms}, 40 * ms, 40 * ms, "the sum (24.5 ms) is still short: the ticks stay the count"},
		{nil, 30 * ms, 40 * ms, "the task list unreadable: never less than before"},
		{map[int]time.Duration{1: 15 * ms, 3: 3 * ms, 4: 2 * ms}, 40 * ms, 40 * ms, "read again: threads 1, 3 and 4 are not counted twice"},
		{map[int]time.Duration{1: 60 * ms, 3: 3 * ms, 4: 2 * ms}, 60 * ms, 69*ms + 500*time.Microsecond, "the sum passes the ticks again"},
		{map[int]time.Duration{1: 60 * ms, 3: ms, 4: 2 * ms}, 60 * ms, 70*ms + 500*time.Microsecond, "TID 3 shows less: a new thread, the old one's 3 ms stay"},
	} {
		if got := c.add(procLook{threads: s.threads, ticks: s.ticks}); got != s.want {
			t.Errorf("look %d (%s): %v, want %v", i, s.why, got, s.want)
		}
	}

	// With the process's clock, the clock is the count; the thread list
	// is not looked at.
	c = cpuCount{}
	for i, s := range []struct {
		look procLook
		want time.Duration
		why  string
	}{
		{procLook{clock: 7*ms + 1, hasClock: true}, 7*ms + 1, "the clock, to the nanosecond"},
		{procLook{clock: 12 * ms, hasClock: true, ticks: 10 * ms, threads: map[int]time.Duration{1: 99 * ms}}, 12 * ms, "the clock, not the threads"},
		{procLook{threads: map[int]time.Duration{1: ms}, ticks: 10 * ms}, 12 * ms, "no clock this once: never less than before"},
		{procLook{clock: 30 * ms, hasClock: true, ticks: 30 * ms}, 30 * ms, "the clock again"},
	} {
		if got := c.add(s.look); got != s.want {
			t.Errorf("clock look %d (%s): %v, want %v", i, s.why, got, s.want)
		}
	}
}

package timeline

import (
	"sync"
	"time"
)

// ProcSample is one look at one process.
type ProcSample struct {
	At  time.Time
	PID int
	CPU time.Duration // user+system CPU time used so far, to the nanosecond on Linux (see cpuCount)
	RSS int64         // resident set, bytes
}

// MaxSamples bounds what a Sampler keeps, so that one left running by
// mistake cannot grow without limit: at 10 ms and two processes it is over
// an hour and a half of samples. Later samples are dropped.
const MaxSamples = 1 << 20

// MinInterval is the shortest interval a Sampler uses: reading /proc costs
// some CPU of its own, and the bench must not compete with the server it
// measures more than it has to.
const MinInterval = time.Millisecond

// Sampler looks at the processes it watches every interval (on Linux,
// /proc/<pid>/stat and /proc/<pid>/statm, and the process's CPU-time clock
// or else /proc/<pid>/task/*/schedstat); elsewhere it records nothing. It
// owns one goroutine, ended by Stop.
type Sampler struct {
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once

	// cpu is the running CPU count of each watched process. Only the
	// goroutine (sampleAll) touches it, so it needs no lock.
	cpu map[int]*cpuCount

	mu      sync.Mutex
	pids    map[int]bool // watched and not yet seen gone
	samples []ProcSample
	stopped bool
}

// NewSampler starts a Sampler that looks every interval (at least
// MinInterval).
func NewSampler(interval time.Duration) *Sampler {
	s := &Sampler{
		interval: max(interval, MinInterval),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		pids:     make(map[int]bool),
		cpu:      make(map[int]*cpuCount),
	}
	if canSample {
		go s.loop()
	} else {
		close(s.done)
	}
	return s
}

// Watch adds pid to the processes looked at, from the next interval on. It
// is safe for concurrent use. A PID that is gone, now or later, is dropped
// quietly; so is a Watch after Stop.
func (s *Sampler) Watch(pid int) {
	if pid <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.pids[pid] = true
	}
}

// Stop ends the goroutine, waits for it, and returns every sample taken,
// in order of time. Calling it again returns the same samples.
func (s *Sampler) Stop() []ProcSample {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	return s.samples
}

func (s *Sampler) loop() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			// One last look, so that a short run still has a sample of
			// everything alive at its end.
			s.sampleAll()
			return
		case <-t.C:
			s.sampleAll()
		}
	}
}

// sampleAll looks at every watched PID once. /proc is read without the
// lock held so that Watch never waits for file reads.
func (s *Sampler) sampleAll() {
	s.mu.Lock()
	pids := make([]int, 0, len(s.pids))
	for p := range s.pids {
		pids = append(pids, p)
	}
	s.mu.Unlock()
	var got []ProcSample
	var gone []int
	for _, p := range pids {
		l, ok := readProc(p)
		if !ok {
			gone = append(gone, p)
			delete(s.cpu, p)
			continue
		}
		c := s.cpu[p]
		if c == nil {
			c = new(cpuCount)
			s.cpu[p] = c
		}
		got = append(got, ProcSample{At: time.Now(), PID: p, CPU: c.add(l), RSS: l.rss})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range gone {
		delete(s.pids, p)
	}
	room := MaxSamples - len(s.samples)
	s.samples = append(s.samples, got[:min(room, len(got))]...)
}

// procLook is what one read of /proc says about one live process.
type procLook struct {
	// clock is the process's CPU-time clock, to the nanosecond, threads
	// that have exited included; hasClock is false if it could not be
	// read.
	clock    time.Duration
	hasClock bool
	// ticks is utime+stime from /proc/<pid>/stat: the whole process,
	// threads that have exited included, but in whole clock ticks (10 ms),
	// utime and stime each rounded down.
	ticks time.Duration
	// threads is the CPU time of each live thread, by TID, to the
	// nanosecond, from the first field of /proc/<pid>/task/<tid>/schedstat;
	// nil if the task list could not be read, and not read when the clock
	// was.
	threads map[int]time.Duration
	rss     int64 // resident set, bytes
}

// cpuCount turns successive looks at one process into its CPU time.
//
// An overlap of two generations lasts tens of milliseconds and uses 0 to
// 30 ms of CPU, so the tick-based total alone would read most of them as 0
// or 10 ms. Two sources are finer. The process's CPU-time clock (the one
// clock_getcpuclockid(3) names) is the kernel's own sum over the threads,
// exited ones included, brought up to date as it is read: exact, and one
// system call. Where it cannot be read, the per-thread schedstat times
// are exact too, but their sum is not the process's: a thread that exits
// takes its time out of it. So the count keeps, for every thread it has
// seen, the time it last saw; a thread that is gone (or whose TID now
// shows less time, which can only be a new thread given the same TID)
// adds its last seen time to gone, and gone plus the live threads is the
// tracked sum.
//
// The clock, the tracked sum, the tick total and the value last returned
// are each at most the true total — the tracked sum misses only what a
// thread used between the last look and its exit, and what a running
// thread used since the scheduler last brought its count up to date (at
// most a scheduler tick); the tick total misses less than two ticks — so
// the largest of them is the closest lower bound: the clock when there is
// one; else exact to well under a millisecond while no thread exits
// unseen, and never more than two ticks short when one does; and never
// decreasing.
type cpuCount struct {
	threads map[int]time.Duration // each live thread's time at the last look
	gone    time.Duration         // the last seen time of every thread since gone
	last    time.Duration         // what add last returned
}

// add folds one look into the count (taking l.threads for its own) and
// returns the process's CPU time so far.
func (c *cpuCount) add(l procLook) time.Duration {
	if l.hasClock {
		c.last = max(c.last, l.clock, l.ticks)
		return c.last
	}
	if l.threads != nil {
		for tid, was := range c.threads {
			if now, ok := l.threads[tid]; !ok || now < was {
				c.gone += was
			}
		}
		c.threads = l.threads
	}
	// A look without the task list leaves the threads as they were: moving
	// them all to gone would count them twice once the list reads again.
	sum := c.gone
	for _, d := range c.threads {
		sum += d
	}
	c.last = max(c.last, sum, l.ticks)
	return c.last
}

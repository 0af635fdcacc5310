package timeline

import (
	"sync"
	"time"
)

// ProcSample is one look at one process.
type ProcSample struct {
	At  time.Time
	PID int
	CPU time.Duration // user+system CPU time used so far
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
// /proc/<pid>/stat and /proc/<pid>/statm); elsewhere it records nothing. It
// owns one goroutine, ended by Stop.
type Sampler struct {
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once

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
		cpu, rss, ok := readProc(p)
		if !ok {
			gone = append(gone, p)
			continue
		}
		got = append(got, ProcSample{At: time.Now(), PID: p, CPU: cpu, RSS: rss})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range gone {
		delete(s.pids, p)
	}
	room := MaxSamples - len(s.samples)
	s.samples = append(s.samples, got[:min(room, len(got))]...)
}

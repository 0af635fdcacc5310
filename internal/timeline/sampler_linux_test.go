package timeline

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestClockTicks(t *testing.T) {
	// USER_HZ is 100 on every architecture Go runs Linux on; reading it
	// from the auxiliary vector must agree.
	if got := clockTicks(); got != 100 {
		t.Errorf("clock ticks = %d, want 100", got)
	}
}

func TestReadProcSelf(t *testing.T) {
	before := selfCPU()
	l, ok := readProc(os.Getpid())
	after := selfCPU()
	if !ok || l.rss <= 0 || l.ticks < 0 || !l.hasClock || l.threads != nil {
		t.Fatalf("readProc(self) = %+v, %v; want an RSS, the clock and no thread list", l, ok)
	}
	// getrusage counts microseconds.
	if l.clock < before || l.clock > after+time.Microsecond {
		t.Errorf("CPU clock %v, want between getrusage's %v and %v", l.clock, before, after)
	}
	threads := readThreads("/proc/" + strconv.Itoa(os.Getpid()) + "/task")
	if _, ok := threads[os.Getpid()]; !ok {
		t.Errorf("the main thread (TID = PID) is not among %v", threads)
	}
	if _, ok := readProc(unusedPID(t)); ok {
		t.Error("readProc of a PID that does not exist succeeded")
	}
	if _, ok := processClock(unusedPID(t)); ok {
		t.Error("the CPU clock of a PID that does not exist read")
	}
}

// unusedPID is a PID no process can have: above the kernel's maximum.
func unusedPID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n + 1
}

// TestSampler watches the test process and a child that burns CPU: the
// child's CPU grows, both have an RSS, and once the child is killed and
// reaped it is dropped and no longer sampled.
func TestSampler(t *testing.T) {
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), helperEnv+"=burn")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	})
	s := NewSampler(10 * time.Millisecond)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop()
		}
	})
	self, kid, gone := os.Getpid(), child.Process.Pid, unusedPID(t)
	s.Watch(self)
	s.Watch(kid)
	s.Watch(gone)
	s.Watch(0) // ignored

	// Wait, bounded, for the child to have used measurable CPU twice over.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var first, last ProcSample
		n := 0
		s.mu.Lock()
		for _, p := range s.samples {
			if p.PID == kid {
				if n == 0 {
					first = p
				}
				last = p
				n++
			}
		}
		s.mu.Unlock()
		if n >= 2 && last.CPU > first.CPU && last.CPU >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child CPU did not grow within 10s: %d samples, first %v last %v", n, first.CPU, last.CPU)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait() // reaped: /proc/<kid> is gone
	waited = true
	deadline = time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		_, watching := s.pids[kid]
		_, watchingGone := s.pids[gone]
		s.mu.Unlock()
		if !watching && !watchingGone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still watching after 5s: child %v, unused PID %v", watching, watchingGone)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ended := time.Now()
	time.Sleep(50 * time.Millisecond) // a few more intervals of self only
	samples := s.Stop()
	stopped = true

	var selfN, kidN int
	var prev time.Time
	for _, p := range samples {
		if p.At.Before(prev) {
			t.Fatalf("samples out of order at %v", p.At)
		}
		prev = p.At
		if p.RSS <= 0 {
			t.Errorf("sample %+v has no RSS", p)
		}
		switch p.PID {
		case self:
			selfN++
		case kid:
			kidN++
			if p.At.After(ended) {
				t.Errorf("child sampled at %v, after it was dropped at %v", p.At, ended)
			}
		default:
			t.Errorf("sample of a PID never watched or gone: %+v", p)
		}
	}
	if selfN < 3 || kidN < 2 {
		t.Errorf("got %d samples of self and %d of the child, want several", selfN, kidN)
	}
	// Stop again returns the same; Watch after Stop does nothing.
	s.Watch(self)
	if again := s.Stop(); len(again) != len(samples) {
		t.Errorf("second Stop returned %d samples, want %d", len(again), len(samples))
	}
}

func TestSamplerStopWithoutWatch(t *testing.T) {
	s := NewSampler(0) // clamped to MinInterval
	time.Sleep(5 * time.Millisecond)
	if got := s.Stop(); len(got) != 0 {
		t.Errorf("a sampler watching nothing recorded %v", got)
	}
}

// TestSamplerCPUExact checks the sampler's CPU time against the kernel's
// own accounting of a child (burnKnown) to well under one 10 ms tick,
// across a thread of the child ending after it had used 80 ms. The child
// reports its CPU time (getrusage, to the microsecond) when it goes idle;
// the sampler's look at it while idle must agree to within cpuTolerance
// either way, and not exceed what wait4 reports once it has exited. It
// does so reading the process's CPU clock, and again without it, from
// the threads' schedstat.
func TestSamplerCPUExact(t *testing.T) {
	t.Run("clock", func(t *testing.T) { testSamplerCPUExact(t, true) })
	t.Run("schedstat", func(t *testing.T) {
		cpuClock = func(int) (time.Duration, bool) { return 0, false }
		t.Cleanup(func() { cpuClock = processClock })
		testSamplerCPUExact(t, false)
	})
}

func testSamplerCPUExact(t *testing.T, clock bool) {
	const cpuTolerance = time.Millisecond
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), helperEnv+"=cpu")
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := NewSampler(5 * time.Millisecond)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop()
		}
	})
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = child.Process.Kill()
			go func() {
				for range lines {
				}
			}()
			<-read
			_ = child.Wait()
		}
	})
	kid := child.Process.Pid
	s.Watch(kid)
	// The child burns well under a second of CPU; 30 s allows for a
	// machine busy with other tests.
	deadline := time.After(30 * time.Second)
	line := func(prefix string) int64 {
		t.Helper()
		select {
		case l, ok := <-lines:
			v, found := strings.CutPrefix(l, prefix+" ")
			n, err := strconv.ParseInt(v, 10, 64)
			if !ok || !found || err != nil {
				t.Fatalf("child said %q (open %v), want %q and a number", l, ok, prefix)
			}
			return n
		case <-deadline:
			t.Fatalf("no %q from the child within 30s", prefix)
		}
		return 0
	}
	// atRest waits for two looks at the child after now, so that the
	// last one is of the child idle, and returns the last one.
	atRest := func() ProcSample {
		t.Helper()
		after := time.Now()
		for {
			var n int
			var last ProcSample
			s.mu.Lock()
			for _, p := range s.samples {
				if p.PID == kid && p.At.After(after) {
					n++
					last = p
				}
			}
			s.mu.Unlock()
			if n >= 2 {
				return last
			}
			select {
			case <-deadline:
				t.Fatalf("the child was not sampled twice within 30s")
			case <-time.After(5 * time.Millisecond):
			}
		}
	}

	tid := line("idle")
	idle := atRest()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	want := time.Duration(line("ready"))
	// The thread has ended: it is no longer in the child's task list.
	for {
		if _, err := os.Stat("/proc/" + strconv.Itoa(kid) + "/task/" + strconv.FormatInt(tid, 10)); os.IsNotExist(err) {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("thread %d of the child did not end within 30s", tid)
		case <-time.After(5 * time.Millisecond):
		}
	}
	got := atRest()
	if l, ok := readProc(kid); !ok || l.hasClock != clock || (l.threads == nil) != clock {
		t.Errorf("readProc(child) = %+v, %v; want the clock %v", l, ok, clock)
	}
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	<-read
	if err := child.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	waited = true
	samples := s.Stop()
	stopped = true
	total := child.ProcessState.UserTime() + child.ProcessState.SystemTime()
	t.Logf("child CPU: %v when the thread had burnt (sampler), %v at ready (child), %v (sampler) at rest after it, %v at exit (wait4); %d samples",
		idle.CPU, want, got.CPU, total, len(samples))
	// Either way of the child's count: the child uses a little more after
	// it (writing, going to sleep), and the sampler misses what the ended
	// thread used between its last look and its end (waking, exiting):
	// tens of microseconds each. A count in ticks is at least 5 ms short.
	if got.CPU < want-cpuTolerance || got.CPU > want+cpuTolerance {
		t.Errorf("sampled CPU at rest %v, want %v ± %v (the child's own count)", got.CPU, want, cpuTolerance)
	}
	// wait4 counts in microseconds, schedstat in nanoseconds.
	if got.CPU > total+time.Microsecond {
		t.Errorf("sampled CPU %v is more than the %v the child used in all", got.CPU, total)
	}
	if idle.CPU < 180*time.Millisecond || idle.CPU > got.CPU-30*time.Millisecond {
		t.Errorf("sampled CPU with the thread idle %v, want at least the 180 ms burnt by then and 30 ms less than %v", idle.CPU, got.CPU)
	}
	var prev time.Duration
	for _, p := range samples {
		if p.PID != kid {
			continue
		}
		if p.CPU < prev {
			t.Errorf("the child's CPU went down from %v to %v", prev, p.CPU)
		}
		prev = p.CPU
	}
}

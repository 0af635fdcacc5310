package timeline

import (
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
	cpu, rss, ok := readProc(os.Getpid())
	if !ok || rss <= 0 || cpu < 0 {
		t.Fatalf("readProc(self) = %v, %d, %v", cpu, rss, ok)
	}
	if _, _, ok := readProc(unusedPID(t)); ok {
		t.Error("readProc of a PID that does not exist succeeded")
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

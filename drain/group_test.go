package drain

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fake is a Drainer that takes a fixed time, or is cut at the deadline.
type fake struct {
	name  string
	takes time.Duration
	began atomic.Int64 // unix nanos
}

func (f *fake) Drain(ctx context.Context) (Report, error) {
	f.began.Store(time.Now().UnixNano())
	start := time.Now()
	select {
	case <-time.After(f.takes):
		return Report{Name: f.name, Open: 2, Ended: 2, Duration: time.Since(start), LastEnded: time.Since(start)}, nil
	case <-ctx.Done():
		return Report{Name: f.name, Open: 2, Ended: 1, Cut: 1, Duration: time.Since(start), LastEnded: time.Millisecond},
			cutError(f.name, 1, ctx.Err())
	}
}

func TestGroupDrainsInParallelUnderOneDeadline(t *testing.T) {
	var g Group
	fast := &fake{name: "fast", takes: 50 * time.Millisecond}
	slow := &fake{name: "slow", takes: 10 * time.Second}
	g.Add(fast, slow)
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	r, err := g.Drain(ctx)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "drain slow: 1 connection(s) cut") {
		t.Fatalf("err = %v, want the slow server's cut, wrapping DeadlineExceeded", err)
	}
	if took < 390*time.Millisecond || took > 700*time.Millisecond {
		t.Fatalf("group drain took %v, want the one 400ms deadline", took)
	}
	if r.Name != "group" || r.Open != 4 || r.Ended != 3 || r.Cut != 1 || len(r.Servers) != 2 ||
		r.Servers[0].Name != "fast" || r.Servers[1].Name != "slow" {
		t.Fatalf("report %v", r)
	}
	if r.LastEnded < 50*time.Millisecond || r.LastEnded > 300*time.Millisecond {
		t.Fatalf("LastEnded %v, want the fast server's ~50ms", r.LastEnded)
	}
	if d := time.Duration(slow.began.Load() - fast.began.Load()); d.Abs() > 50*time.Millisecond {
		t.Fatalf("servers began %v apart, want in parallel", d)
	}
	// The report is a value to log.
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("drained", "report", r)
	for _, want := range []string{"report.cut=1", "report.slow.cut=1", "report.fast.ended=2"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("log line %q lacks %q", b.String(), want)
		}
	}
	if s := r.String(); !strings.Contains(s, "group: open=4 ended=3 cut=1") || !strings.Contains(s, "[slow: open=2") {
		t.Errorf("String() = %q", s)
	}
}

func TestGroupHooksRunBeforeServersThenDelay(t *testing.T) {
	var g Group
	g.Delay = 150 * time.Millisecond
	var hookAt atomic.Int64
	g.OnDrain(func() { hookAt.Store(time.Now().UnixNano()) })
	f := &fake{name: "f", takes: time.Millisecond}
	g.Add(f)
	r, err := (&g).Drain(context.Background())
	if err != nil || r.Cut != 0 || r.Ended != 2 {
		t.Fatalf("Drain = %v, %v", r, err)
	}
	if d := time.Duration(f.began.Load() - hookAt.Load()); d < 140*time.Millisecond || d > 400*time.Millisecond {
		t.Fatalf("server began %v after the hook, want Delay (150ms)", d)
	}
}

func TestGroupDelayBoundedByDeadline(t *testing.T) {
	g := Group{Delay: time.Minute}
	g.Add(&fake{name: "f", takes: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	r, err := g.Drain(ctx)
	if took := time.Since(start); took > 500*time.Millisecond || !errors.Is(err, context.DeadlineExceeded) || r.Cut != 1 {
		t.Fatalf("Drain took %v: %v, %v", took, r, err)
	}
}

func TestGroupHeartbeat(t *testing.T) {
	var (
		mu    sync.Mutex
		beats []time.Duration
	)
	g := Group{HeartbeatInterval: 40 * time.Millisecond, Heartbeat: func(d time.Duration) {
		mu.Lock()
		beats = append(beats, d)
		mu.Unlock()
	}}
	g.Add(&fake{name: "f", takes: 190 * time.Millisecond})
	if _, err := g.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// One at the start, then one every 40ms during the 190ms drain.
	if len(beats) < 3 || len(beats) > 7 || beats[0] != 80*time.Millisecond {
		t.Fatalf("heartbeats %v, want about 5 of 80ms", beats)
	}
	n := len(beats)
	time.Sleep(100 * time.Millisecond)
	if len(beats) != n {
		t.Fatal("heartbeat went on after Drain returned")
	}
}

func TestEmptyGroup(t *testing.T) {
	var g Group
	r, err := g.Drain(context.Background())
	if err != nil || r.Open != 0 || len(r.Servers) != 0 {
		t.Fatalf("Drain = %v, %v", r, err)
	}
}

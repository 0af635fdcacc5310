package drain

import (
	"context"
	"errors"
	"sync"
	"time"
)

// DefaultHeartbeatInterval is the default for Group.HeartbeatInterval.
const DefaultHeartbeatInterval = 5 * time.Second

// Group drains several servers in parallel under one deadline. The zero
// value is an empty group ready to use:
//
//	var g drain.Group
//	g.OnDrain(health.SetDraining) // a readiness handler turns 503 first
//	g.Add(httpSrv, tcpLn, grpcStopper)
//	report, err := g.Drain(ctx) // ctx carries the one deadline
//
// A Group is itself a Drainer, so groups nest. Its fields must not change
// once Drain has begun.
type Group struct {
	// Name names the group in its report. Empty means "group".
	Name string
	// Delay is how long Drain waits, after running the OnDrain hooks and
	// before any server stops accepting, so that load balancers polling a
	// readiness handler see it fail while the servers still accept (on
	// Kubernetes, about the readiness probe's period). Zero or negative
	// means no wait, which is right for an upgrade: the next generation
	// accepts on the same sockets. The delay counts against ctx.
	Delay time.Duration
	// Heartbeat, if set, is called when Drain begins and then every
	// HeartbeatInterval until it returns, with how long the caller should
	// wait for the next call (twice the interval). It keeps a supervisor
	// informed during a long drain, for example:
	//
	//	g.Heartbeat = func(d time.Duration) { readiness.Notify(readiness.ExtendTimeout(d)) }
	//
	// It is called from one goroutine and must not block for long.
	Heartbeat func(next time.Duration)
	// HeartbeatInterval is the period of Heartbeat. Zero or negative
	// means DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration

	mu      sync.Mutex
	servers []Drainer
	hooks   []func()
}

// Add adds servers to the group. Safe for concurrent use; servers added
// after Drain began are not drained by it.
func (g *Group) Add(servers ...Drainer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.servers = append(g.servers, servers...)
}

// OnDrain registers f to be called when Drain begins, before any server
// stops accepting (and before Delay). Hooks run in the order registered,
// in the goroutine calling Drain; like http.Server.RegisterOnShutdown
// hooks, they should start work, not wait for it.
func (g *Group) OnDrain(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hooks = append(g.hooks, f)
}

// Drain runs the OnDrain hooks, waits Delay, then drains every server in
// parallel with ctx as their common deadline, and returns when all of them
// have returned. The report sums their counts and holds each one's report
// in Servers, in the order they were added; the error joins theirs (each
// wraps ctx.Err() and names its server), and is nil if nothing was cut.
//
// If ctx ends during Delay, the servers are drained at once with the
// expired ctx, so they cut what they hold and report it. Drain is not
// meant to be called twice.
func (g *Group) Drain(ctx context.Context) (Report, error) {
	start := time.Now()
	g.mu.Lock()
	servers := append([]Drainer(nil), g.servers...)
	hooks := append([]func(){}, g.hooks...)
	g.mu.Unlock()
	name := g.Name
	if name == "" {
		name = "group"
	}

	stopBeat := g.heartbeat()
	defer stopBeat()
	for _, f := range hooks {
		f()
	}
	if g.Delay > 0 {
		t := time.NewTimer(g.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}

	phase := time.Since(start) // servers' reports count from here
	reports := make([]Report, len(servers))
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { reports[i], errs[i] = s.Drain(ctx) })
	}
	wg.Wait()

	r := Report{Name: name, Servers: reports, Duration: time.Since(start)}
	for _, s := range reports {
		r.Open += s.Open
		r.Ended += s.Ended
		r.Cut += s.Cut
		r.Datagrams += s.Datagrams
		r.Answers += s.Answers
		if s.Ended > 0 {
			r.LastEnded = max(r.LastEnded, phase+s.LastEnded)
		}
	}
	return r, errors.Join(errs...)
}

// heartbeat starts calling g.Heartbeat, if set, and returns a function
// that stops it and waits for the goroutine to end.
func (g *Group) heartbeat() (stop func()) {
	if g.Heartbeat == nil {
		return func() {}
	}
	every := g.HeartbeatInterval
	if every <= 0 {
		every = DefaultHeartbeatInterval
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	g.Heartbeat(2 * every)
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				g.Heartbeat(2 * every)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

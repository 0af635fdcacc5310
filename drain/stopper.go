package drain

import (
	"context"
	"time"
)

// GracefulStopper is a server that can stop gracefully (stop accepting,
// let work in flight finish, then return) and forcefully (close everything
// at once, which also makes a GracefulStop in progress return). A
// *grpc.Server is one.
type GracefulStopper interface {
	GracefulStop()
	Stop()
}

// Stopper drains a GracefulStopper, such as a gRPC server, within a
// deadline: GracefulStop waits for every RPC to end, however long a stream
// runs (grpc/grpc-go#2448), so at the deadline Stopper calls Stop.
//
// Long-running handlers (server-streaming RPCs) should select on WrapUp
// and end their stream cleanly when it closes; the client then sees the
// stream end after its last complete message and can start a new one,
// which reaches the next generation.
//
// Serve the server from a [Listener] and set [Stopper.Listener]: then a
// connection that reaches this generation just as it begins to drain is
// served (and sent a GOAWAY) rather than closed unanswered. GracefulStop
// alone does not promise that: grpc.Server.GracefulStop closes any
// connection its accept loop has taken but not yet begun serving, which in
// a single process is a connection refused at shutdown, but during an
// upgrade is a connection the next generation would have served. See
// [Stopper.Drain].
//
// A Stopper may not be reused after Drain.
type Stopper struct {
	// Server is the server to stop; required.
	Server GracefulStopper
	// Name names the server in reports. Empty means "grpc".
	Name string
	// Listener, if set, is the listener the server serves from; Drain
	// then stops accepting itself before GracefulStop, and the report
	// counts its connections (open, ended, cut). Without it the report
	// says only how long the drain took, and Cut is 1 if Stop had to be
	// called. Stopper drains Listener itself: do not add it to a Group as
	// well.
	Listener *Listener
	// Spread is how long, with a Listener, Drain takes to tell the clients
	// of its cleartext HTTP/2 connections (gRPC without TLS) to go away,
	// one connection after another at even intervals, before GracefulStop:
	// every client told reconnects to the next generation, and all of them
	// at once queue there (see HTTP.Spread). Each is told as [HTTP] tells
	// an HTTP/2 client, with a GOAWAY that refuses nothing and PINGs
	// around it, which the server does not see; GracefulStop's own GOAWAY
	// then finds clients that have already gone. Connections over TLS
	// cannot be reached below the server's encryption and are told by
	// GracefulStop alone. Capped at half the time ctx leaves; zero means
	// DefaultSpread, negative none.
	Spread time.Duration

	wrap wrapUp
}

// WrapUp returns a channel that is closed when Drain begins. Safe for
// concurrent use, at any time.
func (s *Stopper) WrapUp() <-chan struct{} { return s.wrap.channel() }

// Drain stops accepting, closes WrapUp and calls GracefulStop, which sends
// GOAWAY, lets the RPCs in flight finish and returns. If ctx is done
// first, it calls Stop, waits for GracefulStop to return, and returns an
// error wrapping ctx.Err() with the report. Drain is not meant to be
// called twice.
//
// With a Listener, Drain first stops accepting (the server's Accept is held
// until GracefulStop closes the Listener, so Serve still returns nil) and
// waits until the server has begun serving every connection it accepted —
// at most a second for each, and never past ctx — before it calls
// GracefulStop. grpc-go's accept loop starts a goroutine per connection,
// and that goroutine closes its connection without a word if GracefulStop
// has begun by the time it runs (grpc/grpc-go#1737 describes the race; the
// check that closes is in Server.handleRawConn); the client then sees its
// connection reset before the server's HTTP/2 preface and fails the RPCs
// waiting for it. Once the server has begun serving a connection,
// GracefulStop sends it a GOAWAY like every other. Then, still before
// GracefulStop, it tells the clients of its cleartext HTTP/2 connections
// to go, in turn over Spread, and waits for each to have read it (see
// Spread).
func (s *Stopper) Drain(ctx context.Context) (Report, error) {
	start := time.Now()
	name := s.Name
	if name == "" {
		name = "grpc"
	}
	if s.Listener != nil {
		// The connections' turns are for WrapUpConn, which a gRPC server
		// does not use: they all come at once, and the spread is
		// noticeInTurn's.
		s.Listener.begin(0)
		s.Listener.holdAccepts()
		s.Listener.handedOver(ctx)
		// If the server returns from GracefulStop or Stop without closing
		// its listener, its Accept must not stay held.
		defer s.Listener.releaseAccepts()
		s.Listener.wrap.fire()
		s.wrap.fire() // streams may end while the clients are told
		s.Listener.noticeInTurn(ctx, spreadFor(ctx, s.Spread), DefaultNoticeTimeout)
	}
	s.wrap.fire()
	graceful := make(chan struct{})
	go func() {
		defer close(graceful)
		s.Server.GracefulStop()
	}()
	var stopped bool
	select {
	case <-graceful:
	case <-ctx.Done():
		stopped = true
		if s.Listener != nil {
			s.Listener.mu.Lock()
			s.Listener.cutting = true
			s.Listener.mu.Unlock()
			// A server whose GracefulStop waits for its accept loop
			// without closing its listener first must get out of it now.
			s.Listener.releaseAccepts()
		}
		s.Server.Stop()
		<-graceful
	}
	r := Report{Name: name, Duration: time.Since(start)}
	if s.Listener != nil {
		// The server closed every connection it had before GracefulStop
		// or Stop returned; closes after this would be connections the
		// server never saw, cut by the listener.
		cr, _ := s.Listener.wait(ctx)
		r.Open, r.Ended, r.Cut, r.LastEnded = cr.Open, cr.Ended, cr.Cut, cr.LastEnded
	} else if stopped {
		r.Cut = 1
	}
	if stopped {
		return r, cutError(name, r.Cut, ctx.Err())
	}
	return r, nil
}

package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/internal/ctlproto"
	"github.com/hitlessgo/hitless/internal/proc"
)

// ErrForwarded is how a Handler says that a reload arrived while another
// upgrade ran and succeeded: this generation is exiting, and the request
// must be carried out by the new one. The Server answers so, and
// Client.Reload sends the request again, to the new generation; it never
// returns ErrForwarded. Match it with errors.Is.
var ErrForwarded = errors.New("hitless: passed on to the new generation")

// Handler is what a Server serves; package upgrade implements it. Its
// methods are called from the Server's goroutines, several at once.
type Handler interface {
	// Status returns the generation's status; it must not block. Every
	// answer carries it, except a refusal.
	Status() Status
	// Reload carries out (or queues) an upgrade and returns its outcome,
	// as Client.Reload documents: nil, a *ChildError, a *BackoffError,
	// ErrStopped, ErrUpgraded, ErrNotReady, ErrForwarded, or ctx's error.
	// ctx is done when the requester's deadline passes or it disconnects
	// (context.Cause then says which), and then the request must not be
	// carried out later.
	Reload(ctx context.Context, hurry bool) error
	// Stop starts draining and stopping the service; it must not wait for
	// that (Client.Stop waits for the process to exit). It is not called
	// while Status says StateDraining: that generation has handed over, so
	// the Server answers ErrUpgraded and Client.Stop asks the new one.
	Stop()
}

// RollbackHandler is a Handler that can also roll back (package upgrade's
// does). A Server whose Handler is not one refuses the rollback verb.
type RollbackHandler interface {
	Handler
	// Rollback is Reload to the previous build; it also returns an error
	// matching ErrNoRollback when there is nothing to roll back to.
	Rollback(ctx context.Context, hurry bool) error
}

// Server answers a control socket: one request and one response per
// connection, for peers that run as the service's user or as root.
//
// Set Handler before calling Serve. A Server must not be copied after
// first use, and may not be reused after Close.
type Server struct {
	// Handler carries out the requests. Required.
	Handler Handler
	// Logger receives a line for each request carried out or dropped, for
	// refused peers (at most one line a second) and for accept errors.
	// Nil means silent.
	Logger *slog.Logger

	// peerCred reads who is at the other end; nil means proc.PeerCred.
	// The tests replace it, since they cannot connect as another user.
	peerCred func(syscall.Conn) (proc.Cred, error)

	mu        sync.Mutex
	closed    bool
	listeners map[*trackedListener]struct{}
	reading   map[net.Conn]struct{} // connections whose request is still being read
	sem       chan struct{}         // one token per connection being served
	wg        sync.WaitGroup        // Serve calls and connections being served

	refusals   logLimiter
	acceptErrs logLimiter
}

const (
	// maxConns bounds the connections served at once. Beyond it, new ones
	// wait in the listen backlog rather than get a "busy" answer: a client
	// that waits gets its answer late instead of a spurious failure, and
	// its deadline still bounds the wait (a request read after its
	// deadline is not carried out). Refused peers cannot hold a slot for
	// long: they are answered before anything is read (review L1).
	maxConns = 32
	// readTimeout bounds reading a request. Our client writes it right
	// after connecting, so this is only for silent or slow peers.
	readTimeout = 2 * time.Second
	// writeTimeout bounds writing an answer.
	writeTimeout = 2 * time.Second
	// Accept errors that are temporary are retried after a delay that
	// starts at acceptDelayMin and doubles up to acceptDelayMax (review
	// M1: with descriptors exhausted, an accept loop that gave up lost the
	// control socket for good).
	acceptDelayMin = 5 * time.Millisecond
	acceptDelayMax = time.Second
	// logEvery is the least time between two log lines of one kind that a
	// peer can cause at will.
	logEvery = time.Second
)

// errRequesterGone is the cause of a Reload ctx when the requester closed
// its end.
var errRequesterGone = errors.New("control: the requester went away")

// Serve accepts connections on ln and answers them, each in its own
// goroutine, at most 32 at once. It blocks until ln is closed (by Close,
// StopAccepting or anyone else) and then returns nil; it returns earlier
// only for an Accept error that is not temporary. Temporary errors (too
// many open files, no buffer space, connection aborted, ...) are retried
// after 5 ms, doubling up to 1 s.
//
// ln should be a unix socket listener: peers are identified by their
// credentials, and a connection whose peer cannot be identified is
// refused. Serve may be called for several listeners, concurrently. After
// Close it closes ln and returns nil at once. It panics if Handler is nil.
func (s *Server) Serve(ln net.Listener) error {
	if s.Handler == nil {
		panic("control: Server.Handler is nil")
	}
	l := &trackedListener{Listener: ln, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	if s.listeners == nil {
		s.listeners = make(map[*trackedListener]struct{})
		s.reading = make(map[net.Conn]struct{})
		s.sem = make(chan struct{}, maxConns)
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		s.wg.Done()
	}()

	var delay time.Duration
	for {
		select {
		case s.sem <- struct{}{}:
		case <-l.done:
			return nil
		}
		c, err := l.Accept()
		if err != nil {
			<-s.sem
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !temporary(err) {
				return fmt.Errorf("control: accept: %w", err)
			}
			delay = nextAcceptDelay(delay)
			if ok, n := s.acceptErrs.allow(time.Now()); ok {
				s.logger().Warn("control socket: accept failed; retrying", "err", err, "retry_in", delay, "suppressed", n)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return nil
			}
			continue
		}
		delay = 0
		if !s.track(c) {
			c.Close()
			<-s.sem
			return nil
		}
		go s.serveConn(c)
	}
}

// StopAccepting closes the listeners without waiting for anything: Serve
// returns, and requests in progress go on. It is for a generation that
// hands over, whose successor accepts on the same socket. Safe to call
// from any goroutine, also from a Handler call, and more than once.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.listeners {
		l.close()
	}
}

// Close stops accepting, interrupts connections whose request has not
// arrived yet (they are answered with an error), and waits until every
// request in progress has been answered and every Serve call has
// returned. It returns the first error closing a listener gave, other
// than its being closed already.
//
// Close is idempotent and safe to call from any goroutine, but NOT from
// inside a Handler call: it would wait for that call to return, forever.
// It does not cancel Reload calls in progress (they end when the Handler
// says); bound them in the Handler if Close must not wait for them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var err error
	for l := range s.listeners {
		if cerr := l.close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
	}
	for c := range s.reading {
		c.SetReadDeadline(aLongTimeAgo)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// track registers a new connection, unless the Server is closed.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.reading[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// doneReading says the request has been read (or failed to be), so that
// Close no longer interrupts the connection. It reports whether Close has
// been called, which then may have interrupted the read.
func (s *Server) doneReading(c net.Conn) (closing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reading, c)
	return s.closed
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() { <-s.sem }()
	defer c.Close()
	defer s.doneReading(c)
	s.handle(c)
}

func (s *Server) handle(c net.Conn) {
	// The peer is judged before anything is read from it (review L1): its
	// credentials were fixed by the kernel at connect time.
	cred, err := s.authorize(c)
	if err != nil {
		s.doneReading(c)
		if ok, n := s.refusals.allow(time.Now()); ok {
			s.logger().Warn("control socket: refused a peer", "err", err, "suppressed", n)
		}
		// No status: a stranger learns nothing about the service.
		s.write(c, ctlproto.Response{Code: ctlproto.CodeRefused, Error: err.Error()})
		return
	}
	log := s.logger().With("peer_uid", cred.UID, "peer_pid", cred.PID)

	c.SetReadDeadline(time.Now().Add(readTimeout))
	line, err := bufio.NewReaderSize(c, ctlproto.MaxMessage).ReadSlice('\n')
	closing := s.doneReading(c)
	// Clears both the read timeout and a deadline Close may have set:
	// Close touches only connections that are still reading.
	c.SetReadDeadline(time.Time{})
	switch {
	case err == nil:
	case closing && errors.Is(err, os.ErrDeadlineExceeded):
		s.respond(c, ctlproto.Response{Code: ctlproto.CodeInternal, Error: "control: this generation stopped answering before the request arrived"})
		return
	case errors.Is(err, bufio.ErrBufferFull):
		s.respond(c, ctlproto.Response{Code: ctlproto.CodeMalformed, Error: fmt.Sprintf("request longer than %d bytes", ctlproto.MaxMessage)})
		return
	default:
		s.respond(c, ctlproto.Response{Code: ctlproto.CodeMalformed, Error: "reading the request: " + err.Error()})
		return
	}
	req, err := ctlproto.ParseRequest(line)
	if err != nil {
		s.respond(c, ctlproto.Response{Code: ctlproto.CodeMalformed, Error: err.Error()})
		return
	}

	// A request its requester no longer waits for is not carried out: a
	// stop that waited in the backlog until after `hitless stop` timed
	// out must not stop the service later (review M2). The deadline is
	// checked before anything else; client and server read the same
	// clock.
	now := time.Now()
	deadline := req.Deadline(now)
	if !now.Before(deadline) {
		late := now.Sub(deadline).Round(time.Millisecond)
		log.Warn("control socket: dropped a request that arrived after its deadline", "verb", req.Verb, "late", late)
		s.respond(c, ctlproto.Response{Code: ctlproto.CodeExpired,
			Error: fmt.Sprintf("control: the %s request was read %v after its deadline and was not carried out", req.Verb, late)})
		return
	}
	if limit := now.Add(ctlproto.MaxTimeout); deadline.After(limit) {
		deadline = limit
	}
	if req.Verb != ctlproto.VerbStatus {
		// Closed (or half-closed) before its request was read: the
		// requester gave up, maybe interrupted, before its deadline.
		if gone, _ := proc.PeerClosed(c.(syscall.Conn)); gone {
			log.Warn("control socket: dropped a request whose requester had gone away", "verb", req.Verb)
			return
		}
	}

	switch req.Verb {
	case ctlproto.VerbStatus:
		s.respondStatus(c, ctlproto.Response{OK: true}, req.History)
	case ctlproto.VerbStop:
		if s.Handler.Status().State == StateDraining {
			log.Info("control socket: stop requested of a generation that has handed over; passed on")
			s.respond(c, ctlproto.Response{Code: ctlproto.CodeUpgraded,
				Error: ErrUpgraded.Error() + "; ask the serving generation"})
			return
		}
		log.Info("control socket: stop requested")
		s.Handler.Stop()
		s.respond(c, ctlproto.Response{OK: true})
	case ctlproto.VerbReload:
		log.Info("control socket: reload requested", "hurry", req.Hurry)
		err := s.reload(c, deadline, func(ctx context.Context) error { return s.Handler.Reload(ctx, req.Hurry) })
		if errors.Is(err, errRequesterGone) {
			log.Warn("control socket: the requester of a reload went away; its request was given up")
			return
		}
		s.respond(c, errorResponse(err))
	case ctlproto.VerbRollback:
		rh, ok := s.Handler.(RollbackHandler)
		if !ok {
			s.respond(c, ctlproto.Response{Code: ctlproto.CodeInternal, Error: "this service cannot roll back"})
			return
		}
		if s.Handler.Status().State == StateDraining {
			s.respond(c, ctlproto.Response{Code: ctlproto.CodeUpgraded,
				Error: ErrUpgraded.Error() + "; ask the serving generation"})
			return
		}
		log.Info("control socket: rollback requested", "hurry", req.Hurry)
		err := s.reload(c, deadline, func(ctx context.Context) error { return rh.Rollback(ctx, req.Hurry) })
		if errors.Is(err, errRequesterGone) {
			log.Warn("control socket: the requester of a rollback went away; its request was given up")
			return
		}
		s.respond(c, errorResponse(err))
	}
}

// reload runs do (Handler.Reload or Rollback) under a ctx that ends at
// the deadline or when the requester closes its end, whichever is first.
// It returns errRequesterGone in the second case.
func (s *Server) reload(c net.Conn, deadline time.Time, do func(context.Context) error) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)

	// The watcher is owned by this goroutine: it is stopped (by a past
	// read deadline) and waited for before reload returns.
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var b [64]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					cancelCause(errRequesterGone)
				}
				return
			}
			// Bytes after the request are ignored.
		}
	}()
	err := do(ctx)
	c.SetReadDeadline(aLongTimeAgo)
	<-watched
	if errors.Is(context.Cause(ctx), errRequesterGone) {
		return errRequesterGone
	}
	return err
}

// authorize admits peers running as the service's own user, or as root.
func (s *Server) authorize(c net.Conn) (proc.Cred, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return proc.Cred{}, fmt.Errorf("not a socket connection (%T)", c)
	}
	read := s.peerCred
	if read == nil {
		read = proc.PeerCred
	}
	cred, err := read(sc)
	if err != nil {
		return proc.Cred{}, err
	}
	return cred, admit(cred.UID, os.Geteuid())
}

func admit(uid, me int) error {
	if uid == me || uid == 0 {
		return nil
	}
	return fmt.Errorf("peer runs as uid %d; only uid %d (the service's user) or root may use this socket", uid, me)
}

// respond writes r with the Handler's status, without its history.
func (s *Server) respond(c net.Conn, r ctlproto.Response) { s.respondStatus(c, r, false) }

// respondStatus writes r with the Handler's status, and its history if
// asked.
func (s *Server) respondStatus(c net.Conn, r ctlproto.Response, history bool) {
	st := s.Handler.Status()
	if !history {
		st.History = nil
	}
	// A back-off that has lapsed is not reported.
	if !time.Now().Before(st.BackoffUntil) {
		st.BackoffUntil = time.Time{}
	}
	w := toWire(st)
	r.Status = &w
	s.write(c, r)
}

func (s *Server) write(c net.Conn, r ctlproto.Response) {
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write(r.Marshal()); err != nil {
		s.logger().Debug("control socket: writing the answer", "err", err)
	}
}

var discard = slog.New(slog.DiscardHandler)

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return discard
	}
	return s.Logger
}

// temporaryAcceptErrors are the accept(2) errors after which a later
// accept may succeed: resources exhausted, a connection that died in the
// backlog, and (for TCP) network errors Linux passes on from the new
// connection.
var temporaryAcceptErrors = []syscall.Errno{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
	syscall.EPROTO, syscall.ETIMEDOUT, syscall.ENETDOWN, syscall.ENETUNREACH,
	syscall.EHOSTDOWN, syscall.EHOSTUNREACH,
}

// nextAcceptDelay is the delay before the next Accept after one more
// temporary error, d being the last delay (zero after a success).
func nextAcceptDelay(d time.Duration) time.Duration {
	return min(max(2*d, acceptDelayMin), acceptDelayMax)
}

func temporary(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && slices.Contains(temporaryAcceptErrors, errno)
}

// trackedListener lets Serve tell that its listener was closed while it
// waits for a connection slot or before retrying an Accept.
type trackedListener struct {
	net.Listener
	once sync.Once
	done chan struct{}
	err  error
}

func (l *trackedListener) close() error {
	l.once.Do(func() {
		close(l.done)
		l.err = l.Listener.Close()
	})
	return l.err
}

func (l *trackedListener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// logLimiter lets one log line through per logEvery, and counts the
// others, so that a peer cannot fill the log at will.
type logLimiter struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether a line may be logged now, and how many were
// suppressed since the last one.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	l.next = now.Add(logEvery)
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

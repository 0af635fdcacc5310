package upgrade

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hitlessgo/hitless/internal/ctlproto"
)

// controlListenerName is the logical name under which the control socket is
// handed from generation to generation.
const controlListenerName = "hitless-control"

// controlIOTimeout bounds reading a request and writing a response.
const controlIOTimeout = 5 * time.Second

// controlServer answers the control socket: one request and one response
// per connection.
type controlServer struct {
	u         *Upgrader
	ln        net.Listener
	wg        sync.WaitGroup
	closeOnce sync.Once
}

func newControlServer(u *Upgrader, ln net.Listener, path string) *controlServer {
	// The mode is a first fence; the peer's credentials are the real check.
	if err := os.Chmod(path, 0o600); err != nil {
		u.log.Warn("restricting the control socket's mode", "err", err)
	}
	s := &controlServer{u: u, ln: ln}
	s.wg.Add(1)
	go s.serve()
	return s
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(c)
		}()
	}
}

// stopAccepting hands the control socket to the next generation, which
// accepts on the same socket: a client that asks for the status right after
// its reload succeeded must reach the new generation. Nil-safe.
func (s *controlServer) stopAccepting() {
	if s != nil {
		s.ln.Close()
	}
}

// close stops accepting and waits for the requests in progress to be
// answered. Nil-safe.
func (s *controlServer) close() {
	if s == nil {
		return
	}
	s.closeOnce.Do(func() {
		s.ln.Close()
		s.wg.Wait()
	})
}

func (s *controlServer) handle(c net.Conn) {
	respond := func(r ctlproto.Response) {
		st := s.u.Status()
		r.Status = wireStatus(st)
		c.SetWriteDeadline(time.Now().Add(controlIOTimeout))
		c.Write(r.Marshal())
	}
	// The request is read before the peer is judged, so that a refused
	// client reads the refusal instead of failing to write its request.
	c.SetReadDeadline(time.Now().Add(controlIOTimeout))
	line, err := bufio.NewReaderSize(c, ctlproto.MaxMessage).ReadSlice('\n')
	if aerr := s.authorize(c); aerr != nil {
		s.u.log.Warn("control socket: refused a peer", "err", aerr)
		c.SetWriteDeadline(time.Now().Add(controlIOTimeout))
		c.Write(ctlproto.Response{Code: "refused", Error: aerr.Error()}.Marshal())
		return
	}
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		respond(ctlproto.Response{Code: "malformed", Error: fmt.Sprintf("request longer than %d bytes", ctlproto.MaxMessage)})
		return
	case err != nil:
		respond(ctlproto.Response{Code: "malformed", Error: "reading the request: " + err.Error()})
		return
	}
	req, err := ctlproto.ParseRequest(line)
	if err != nil {
		respond(ctlproto.Response{Code: "malformed", Error: err.Error()})
		return
	}
	c.SetReadDeadline(time.Time{})
	switch req.Verb {
	case ctlproto.VerbStatus:
		respond(ctlproto.Response{OK: true})
	case ctlproto.VerbStop:
		s.u.log.Info("stop requested on the control socket")
		s.u.Stop()
		respond(ctlproto.Response{OK: true})
	case ctlproto.VerbReload:
		timeout := req.Timeout()
		if timeout == 0 {
			timeout = 2*s.u.opts.UpgradeTimeout + s.u.opts.DrainTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		s.u.log.Info("reload requested on the control socket", "hurry", req.Hurry)
		respond(errorResponse(s.u.request(ctx, req.Hurry)))
	}
}

// authorize admits peers running as the service's own user, or as root.
func (s *controlServer) authorize(c net.Conn) error {
	var uid int
	var uerr error
	sc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("not a unix connection (%T)", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	if err := raw.Control(func(fd uintptr) { uid, uerr = peerUID(fd) }); err != nil {
		return err
	}
	if uerr != nil {
		return fmt.Errorf("reading the peer's credentials: %w", uerr)
	}
	if me := os.Geteuid(); uid != me && uid != 0 {
		return fmt.Errorf("peer runs as uid %d; only uid %d (the service's user) or root may use this socket", uid, me)
	}
	return nil
}

func wireStatus(st Status) *ctlproto.Status {
	w := &ctlproto.Status{PID: st.PID, Generation: st.Generation, State: st.State,
		LastUpgrade: st.LastUpgrade, Failures: st.Failures}
	if !st.LastUpgradeAt.IsZero() {
		w.LastUpgradeAt = st.LastUpgradeAt.Format(time.RFC3339Nano)
	}
	if time.Now().Before(st.BackoffUntil) {
		w.BackoffUntil = st.BackoffUntil.Format(time.RFC3339Nano)
	}
	return w
}

// Failure codes on the wire for each ChildError reason.
var reasonCodes = map[Reason]string{
	StartFailed: "start-failed",
	Crashed:     "crashed",
	Exited:      "exited",
	TimedOut:    "timed-out",
	CheckFailed: "check-failed",
}

func errorResponse(err error) ctlproto.Response {
	if err == nil {
		return ctlproto.Response{OK: true}
	}
	r := ctlproto.Response{Error: err.Error(), Code: "internal"}
	var ce *ChildError
	switch {
	case errors.As(err, &ce):
		r.Code = reasonCodes[ce.Reason]
		r.Child = &ctlproto.Child{PID: ce.PID, Reason: r.Code, ExitStatus: ce.ExitStatus,
			Signal: int(ce.Signal), TimeoutMS: ce.Timeout.Milliseconds(), Detail: ce.Detail, Stderr: ce.Stderr}
	case errors.Is(err, ErrBackoff):
		r.Code = "backoff"
	case errors.Is(err, ErrForwarded):
		r.Code = "forwarded"
	case errors.Is(err, ErrStopped):
		r.Code = "stopped"
	case errors.Is(err, ErrUpgraded):
		r.Code = "upgraded"
	case errors.Is(err, ErrNotReady):
		r.Code = "not-ready"
	case errors.Is(err, context.DeadlineExceeded):
		r.Code = "timeout"
	}
	return r
}

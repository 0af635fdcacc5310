package upgrade

import (
	"context"
	"net"
	"os"

	"github.com/hitlessgo/hitless/control"
)

// controlListenerName is the logical name under which the control socket is
// handed from generation to generation.
const controlListenerName = "hitless-control"

// controlServer serves the control socket (package control does the
// protocol) for this generation.
type controlServer struct {
	srv  *control.Server
	done chan struct{}
}

func (u *Upgrader) startControl(path string) (*controlServer, error) {
	ln, err := u.listeners.Listen(context.Background(), controlListenerName, "unix", path)
	if err != nil {
		return nil, err
	}
	if u.listeners.Source(controlListenerName) == "bound" {
		// The mode is a first fence, set by the generation that made the
		// file; the peer's credentials are the real check.
		if err := os.Chmod(path, 0o600); err != nil {
			u.log.Warn("restricting the control socket's mode", "err", err)
		}
	}
	s := &controlServer{srv: &control.Server{Handler: controlHandler{u}, Logger: u.log}, done: make(chan struct{})}
	gated := net.Listener(&gatedListener{Listener: ln, ready: u.readyC, closed: make(chan struct{})})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(gated); err != nil {
			u.log.Warn("control socket", "err", err)
		}
	}()
	return s, nil
}

// stopAccepting hands the control socket to the next generation, which
// accepts on the same socket: a client that asks for the status right after
// its reload succeeded must reach the new generation. Nil-safe.
func (s *controlServer) stopAccepting() {
	if s != nil {
		s.srv.StopAccepting()
	}
}

// close stops accepting and waits for the requests in progress. Nil-safe.
func (s *controlServer) close() {
	if s != nil {
		s.srv.Close()
		<-s.done
	}
}

// controlHandler gives the control socket's verbs to the Upgrader.
type controlHandler struct{ u *Upgrader }

func (h controlHandler) Status() control.Status { return h.u.Status() }

func (h controlHandler) Reload(ctx context.Context, hurry bool) error {
	h.u.log.Info("reload requested on the control socket", "hurry", hurry)
	return h.u.request(ctx, hurry)
}

func (h controlHandler) Stop() {
	h.u.log.Info("stop requested on the control socket")
	h.u.stop()
}

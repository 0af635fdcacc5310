package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

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
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		// A warning, not a refusal as for the PID file: the peer checks
		// both ways keep others from using or faking the service here;
		// what they can still do is make the socket unreachable.
		if err := unsafeDir(filepath.Dir(path)); err != nil {
			u.log.Warn("other users can replace the control socket, and so make it unreachable", "socket", path, "err", err)
		}
	}
	ln, err := u.listeners.Listen(context.Background(), controlListenerName, "unix", path)
	if err != nil {
		return nil, err
	}
	if !abstract && u.listeners.Source(controlListenerName) == "bound" {
		// The mode is a first fence, set by the generation that made the
		// file; the peer's credentials are the real check.
		err := restrictMode(path, 0o600)
		if errors.Is(err, errSocketReplaced) {
			return nil, err
		}
		if err != nil {
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

func (h controlHandler) Rollback(ctx context.Context, hurry bool) error {
	h.u.log.Info("rollback requested on the control socket", "hurry", hurry)
	return h.u.rollback(ctx, hurry)
}

func (h controlHandler) Stop() {
	h.u.log.Info("stop requested on the control socket")
	h.u.stop()
}

// errSocketReplaced says that the control socket's path no longer leads to
// the socket this generation bound: someone replaced it right after bind.
// Nobody would reach this generation there, so New fails.
var errSocketReplaced = errors.New("the path no longer leads to the socket this process bound (someone who can write its directory replaced it)")

// testHookControlBound, if set, runs between the look at the socket file
// right after bind and the change of its mode: a test replaces the path
// there, as another user could.
var testHookControlBound func(path string)

// restrictMode sets the mode of the unix socket file at path, which this
// process has just bound, through that file's inode and never through a
// symbolic link (security review M4: a root service chmod-ed whatever a
// symlink planted at the path led to, /etc/passwd for one). The file's
// identity (device, inode, owner) is taken right after bind; if what is
// at the path then differs, nothing is changed and the error matches
// errSocketReplaced.
//
// What is left is the moment between bind (in package listener) and that
// first look: a user who can write the directory could put there a hard
// link to another socket file of this process's user, which would then get
// mode 0600 (the kernel lets one link only files one owns or may read and
// write, fs.protected_hardlinks). Binding under a temporary name in a
// private directory and renaming it into place would close that too; it
// belongs in package listener, which must also find a stale or live
// socket at the real path. New warns about such directories.
func restrictMode(path string, mode uint32) error {
	want, err := statSocket(path)
	if err != nil {
		return fmt.Errorf("control socket %s: %w: %v", path, errSocketReplaced, err)
	}
	if testHookControlBound != nil {
		testHookControlBound(path)
	}
	return chmodSocket(path, want, mode)
}

// socketID identifies the file of a socket.
type socketID struct {
	dev, ino uint64
	uid      int
}

package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/internal/ctlproto"
	"github.com/hitlessgo/hitless/internal/proc"
)

// Client talks to a running service through its control socket. It is
// what `hitless reload|stop|status` use, and a service can use it to offer
// the same verbs as its own subcommands.
//
// The zero value is not usable: set Socket. A Client holds no connection
// (each call makes its own), so it may be copied and used from several
// goroutines at once.
//
// Every call first checks who answers: the server must run as our own
// user, as root, or as the owner of the socket file when nobody else could
// have put that file there (see [Client.Reload]). Otherwise the call fails
// before it sends anything.
type Client struct {
	// Socket is the control socket's path (on Linux, "@name" for an
	// abstract socket).
	Socket string
}

// A ReloadOption changes how [Client.Reload] asks for an upgrade.
type ReloadOption interface{ applyReload(*reloadConfig) }

type reloadConfig struct{ hurry bool }

type hurryOption struct{}

func (hurryOption) applyReload(c *reloadConfig) { c.hurry = true }

// Hurry asks a previous generation that is still draining to cut its drain
// short, so that the upgrade can start sooner (package upgrade does so only
// when the service set a hurry signal). What it cuts is in the service's
// log.
func Hurry() ReloadOption { return hurryOption{} }

// maxForwards bounds how often Reload sends a request again after the
// service passed it on to a newer generation. Each forward means an
// upgrade succeeded meanwhile, so more than a few in a row means
// something keeps upgrading the service.
const maxForwards = 5

// Reload asks the service to upgrade and waits for the outcome: nil once
// the new generation is ready and serving, or the error the upgrade ended
// with, as the service's Handler returned it:
//
//   - a *ChildError when the new generation did not take over (errors.As
//     tells a crash, with its signal, from an exit, with its status, a
//     hang, a failed pre-flight check or a binary that could not be
//     started; Err holds the cause's text, Stderr its last output);
//   - a *BackoffError while upgrades are held back after repeated
//     failures (Last is a *ChildError when the last failure was one);
//   - errors matching ErrStopped, ErrUpgraded or ErrNotReady;
//   - an error matching context.DeadlineExceeded or context.Canceled when
//     ctx ended first, or the service gave up at the same deadline;
//   - other errors for a socket nobody listens on, a server that is not
//     trusted (runs as neither our user, root, nor the socket file's owner
//     when that file is in directories only its owner and root can write,
//     security review M4), or an answer that makes no sense.
//
// If the request reaches a generation that is just handing over, the
// service answers that it was passed on (ErrForwarded), and if it reaches
// one that has already handed over (it drains while a newer one serves),
// that it was upgraded (ErrUpgraded): either way Reload sends it again, to
// the serving generation, at most 5 times in all; that is not a retry of a
// failed upgrade, none was tried for it. Reload never returns
// ErrForwarded, and returns ErrUpgraded only if it never reached a
// generation that could carry it out. (Before, a reload that met a
// draining generation failed although the service had just upgraded:
// measured with systemd 257, whose Type=notify-reload sends a SIGHUP
// before running ExecReload=.)
//
// ctx bounds the whole wait, and its deadline goes with the request
// (clamped to an hour from now; an hour from now when ctx has none), so
// that a service that reads the request late does not carry it out after
// the caller gave up. Cancelling ctx closes the connection, which makes
// the service give up the request if it has not started it.
func (c Client) Reload(ctx context.Context, opts ...ReloadOption) error {
	var cfg reloadConfig
	for _, o := range opts {
		if o == nil {
			panic("control: nil ReloadOption")
		}
		o.applyReload(&cfg)
	}
	return c.upgrade(ctx, ctlproto.Request{Verb: ctlproto.VerbReload, Hurry: cfg.hurry})
}

// Rollback asks the service to start its previous build again (see
// upgrade.Upgrader.Rollback) and waits for the outcome, as Reload does,
// with the same errors and Hurry, and one more: an error matching
// ErrNoRollback, which says why, when there is nothing to roll back to.
// A service of a release without rollbacks refuses the verb.
func (c Client) Rollback(ctx context.Context, opts ...ReloadOption) error {
	var cfg reloadConfig
	for _, o := range opts {
		if o != nil {
			o.applyReload(&cfg)
		}
	}
	return c.upgrade(ctx, ctlproto.Request{Verb: ctlproto.VerbRollback, Hurry: cfg.hurry})
}

// upgrade sends a reload or a rollback, following it to the serving
// generation.
func (c Client) upgrade(ctx context.Context, req ctlproto.Request) error {
	var resp ctlproto.Response
	for range 1 + maxForwards {
		var err error
		if resp, err = c.do(ctx, req); err != nil {
			return err
		}
		switch resp.Code {
		case ctlproto.CodeForwarded:
			continue
		case ctlproto.CodeUpgraded:
			// A generation that has handed over: its upgrade is done,
			// but it did not carry this request out (it came too late
			// for it), so the serving generation must.
			continue
		}
		return responseError(resp)
	}
	if resp.Code == ctlproto.CodeUpgraded {
		return responseError(resp)
	}
	return fmt.Errorf("control: the %s was passed on to a newer generation %d times in a row without an outcome", req.Verb, 1+maxForwards)
}

// Stop asks the service to drain and stop, and waits until its process is
// gone (it polls for the PID the service answered with). It returns nil
// then, or, if ctx ends first, an error matching ctx.Err(), in which case
// the service may still be draining (or, if the request had not been read
// yet, will not stop for it).
//
// A generation that has already handed over (it drains while a newer one
// serves) answers that it was upgraded, and Stop sends the request again,
// to the serving generation, at most 5 times; otherwise `hitless stop`
// would stop only the draining process and report success while the new
// one served on.
func (c Client) Stop(ctx context.Context) error {
	var resp ctlproto.Response
	for range 1 + maxForwards {
		var err error
		if resp, err = c.do(ctx, ctlproto.Request{Verb: ctlproto.VerbStop}); err != nil {
			return err
		}
		if resp.Code != ctlproto.CodeUpgraded {
			break
		}
	}
	if err := responseError(resp); err != nil {
		return err
	}
	if resp.Status == nil || resp.Status.PID < 1 {
		return errors.New("control: the service accepted the stop but did not say its pid")
	}
	if err := proc.WaitGone(ctx, resp.Status.PID); err != nil {
		return fmt.Errorf("control: waiting for the service to exit: %w", err)
	}
	return nil
}

// Status returns the status of the generation that answers the control
// socket (the serving one). Errors are those of [Client.Reload] that apply:
// ctx's, and those of reaching a trusted server.
func (c Client) Status(ctx context.Context) (Status, error) {
	resp, err := c.do(ctx, ctlproto.Request{Verb: ctlproto.VerbStatus, History: true})
	if err == nil && resp.Code == ctlproto.CodeMalformed && strings.Contains(resp.Error, `"history"`) {
		// A service of an earlier release, which has no history to give.
		resp, err = c.do(ctx, ctlproto.Request{Verb: ctlproto.VerbStatus})
	}
	if err != nil {
		return Status{}, err
	}
	if err := responseError(resp); err != nil {
		return Status{}, err
	}
	if resp.Status == nil {
		return Status{}, errors.New("control: the service sent no status")
	}
	st, err := fromWire(*resp.Status)
	if err != nil {
		return Status{}, fmt.Errorf("control: malformed status from the service: %w", err)
	}
	return st, nil
}

// requestDeadline is the deadline a request carries: ctx's, at most
// MaxTimeout from now.
func requestDeadline(ctx context.Context, now time.Time) time.Time {
	limit := now.Add(ctlproto.MaxTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(limit) {
		return d
	}
	return limit
}

// aLongTimeAgo is a deadline that has passed: setting it interrupts a
// blocked Read or Write at once.
var aLongTimeAgo = time.Unix(1, 0)

// do sends one request and reads its answer.
func (c Client) do(ctx context.Context, req ctlproto.Request) (ctlproto.Response, error) {
	if c.Socket == "" {
		return ctlproto.Response{}, errors.New("control: Client.Socket is empty")
	}
	deadline := requestDeadline(ctx, time.Now())
	req.DeadlineUnixMS = deadline.UnixMilli()
	resp, err := c.roundTrip(ctx, req, deadline)
	if err == nil && resp.Code == ctlproto.CodeMalformed && strings.Contains(resp.Error, `unknown field "deadline_unix_ms"`) {
		// A service of the previous release (wire version 0): ask again
		// the way it understands, with a relative timeout.
		legacy := ctlproto.Request{Verb: req.Verb, Hurry: req.Hurry}
		if req.Verb == ctlproto.VerbReload {
			legacy.TimeoutMS = max(time.Until(deadline).Milliseconds(), 1)
		}
		return c.roundTrip(ctx, legacy, deadline)
	}
	return resp, err
}

// roundTrip sends req on a new connection to a trusted server and reads
// its answer, by deadline at the latest.
func (c Client) roundTrip(ctx context.Context, req ctlproto.Request, deadline time.Time) (ctlproto.Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if ctx.Err() != nil {
			return ctlproto.Response{}, fmt.Errorf("control: connecting to %s: %w", c.Socket, ctx.Err())
		}
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return ctlproto.Response{}, fmt.Errorf("control: no service is listening on the control socket %s: %w", c.Socket, err)
		}
		return ctlproto.Response{}, fmt.Errorf("control: control socket %s: %w", c.Socket, err)
	}
	defer conn.Close()
	if err := checkServer(conn.(*net.UnixConn), c.Socket); err != nil {
		return ctlproto.Response{}, err
	}
	// The deadline bounds the wait even when ctx has none; ctx's end
	// interrupts it at once.
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	defer stop()
	_, werr := conn.Write(req.Marshal())
	return c.read(ctx, conn, req, werr)
}

// read reads the answer to req.
func (c Client) read(ctx context.Context, conn net.Conn, req ctlproto.Request, werr error) (ctlproto.Response, error) {
	// Even when the write failed, the service may have answered (a
	// refusal is written before the request is read); its answer says
	// more than the write error.
	line, err := bufio.NewReaderSize(conn, ctlproto.MaxResponse).ReadSlice('\n')
	switch {
	case err == nil:
		resp, err := ctlproto.ParseResponse(line)
		if err != nil {
			return ctlproto.Response{}, fmt.Errorf("control: %s: %w", req.Verb, err)
		}
		return resp, nil
	case ctx.Err() != nil:
		return ctlproto.Response{}, fmt.Errorf("control: waiting for the answer to %s: %w", req.Verb, ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ctlproto.Response{}, fmt.Errorf("control: no answer to %s before its deadline: %w", req.Verb, context.DeadlineExceeded)
	case werr != nil:
		return ctlproto.Response{}, fmt.Errorf("control: sending %s: %w", req.Verb, werr)
	case errors.Is(err, bufio.ErrBufferFull):
		return ctlproto.Response{}, fmt.Errorf("control: the answer to %s is longer than %d bytes", req.Verb, ctlproto.MaxResponse)
	}
	return ctlproto.Response{}, fmt.Errorf("control: reading the answer to %s: %w", req.Verb, err)
}

// serverCred and socketOwner are seams for the tests, which cannot run a
// server as another user.
var (
	serverCred     = proc.PeerCred
	socketOwner    = proc.PrivateOwner
	behindRootOnly = proc.BehindRootOnly
)

// checkServer refuses to talk to a server we have no reason to trust: in
// a directory others can write, the path may lead to their socket, and
// what it answers would be believed (security review M4).
func checkServer(conn syscall.Conn, socket string) error {
	cred, err := serverCred(conn)
	if err != nil {
		return fmt.Errorf("control: cannot tell who answers on %s, so it is not trusted: %w", socket, err)
	}
	return trustServer(cred.UID, os.Geteuid(), socket, socketOwner, behindRootOnly)
}

// trustServer decides whether a server running as uid may be believed by
// a client running as me: its own user and root are; so is the owner of a
// socket in a directory nobody else can write; and, for root, whoever
// answers on a socket behind a directory only root may enter, since root
// (systemd) put it there. That last one is what makes `hitless status` as
// root work with DynamicUser=: systemd 257 mounts the service's preserved
// runtime directory id-mapped, so from outside the socket seems to be
// nobody's, not the service's uid's (measured in the hardened unit's test).
func trustServer(uid, me int, socket string, owner func(string) (int, error), rootOnly func(string) bool) error {
	if uid == me || uid == 0 {
		return nil
	}
	if runtime.GOOS == "linux" && strings.HasPrefix(socket, "@") {
		return fmt.Errorf("control: %s is answered by uid %d, which is neither ours (uid %d) nor root, and an abstract socket has no owner to vouch for it; not trusted", socket, uid, me)
	}
	o, err := owner(socket)
	if err != nil {
		return fmt.Errorf("control: %s is answered by uid %d, which is neither ours (uid %d) nor root, and the socket's owner cannot vouch for it: %w", socket, uid, me, err)
	}
	if o == uid || me == 0 && rootOnly(socket) {
		return nil
	}
	return fmt.Errorf("control: %s is answered by uid %d, which is neither ours (uid %d), root, nor the socket's owner (uid %d); not trusted", socket, uid, me, o)
}

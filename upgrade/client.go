package upgrade

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/hitlessgo/hitless/internal/ctlproto"
)

// Client talks to a running service through its control socket
// (Options.ControlSocket). It is what `hitless reload|stop|status` use, and a
// service can use it to offer the same verbs as its own subcommands. The
// zero value is not usable: set Socket.
type Client struct {
	// Socket is the control socket's path.
	Socket string
	// Hurry, for Reload, asks a previous generation that is still draining
	// to cut its drain short, so that the upgrade starts sooner (the
	// service must set Options.HurrySignal). Connections it cuts are
	// reported in its log.
	Hurry bool
}

// maxForwards bounds how often Reload follows a request that was passed on
// to a newer generation.
const maxForwards = 5

// Reload asks the service to upgrade and waits until the new generation is
// ready (nil) or the upgrade failed. Failures come back as the errors
// Upgrader.Upgrade returns, so errors.As(err, &*ChildError) tells a crash
// (with its signal) from an exit (with its status), a hang, a pre-flight
// failure or a missing binary; a *BackoffError says upgrades are held back.
//
// If the request reaches a generation that is just handing over, the
// service answers that it was passed on, and Reload sends it again to the
// new generation (that is not a retry of a failed upgrade: none was tried).
// ctx bounds the whole wait; its deadline is also sent to the service.
func (c Client) Reload(ctx context.Context) error {
	for range maxForwards {
		resp, err := c.do(ctx, ctlproto.Request{Verb: ctlproto.VerbReload, Hurry: c.Hurry, TimeoutMS: timeoutMS(ctx)})
		if err != nil {
			return err
		}
		if resp.Code == "forwarded" {
			continue
		}
		return responseError(resp)
	}
	return fmt.Errorf("upgrade: reload passed on %d times without an outcome", maxForwards)
}

// Stop asks the service to drain and stop, and waits until its process is
// gone.
func (c Client) Stop(ctx context.Context) error {
	resp, err := c.do(ctx, ctlproto.Request{Verb: ctlproto.VerbStop})
	if err != nil {
		return err
	}
	if err := responseError(resp); err != nil {
		return err
	}
	if resp.Status == nil || resp.Status.PID == 0 {
		return errors.New("upgrade: the service did not say its pid")
	}
	return waitGone(ctx, resp.Status.PID)
}

// Status returns the serving generation's status.
func (c Client) Status(ctx context.Context) (Status, error) {
	resp, err := c.do(ctx, ctlproto.Request{Verb: ctlproto.VerbStatus})
	if err != nil {
		return Status{}, err
	}
	if err := responseError(resp); err != nil {
		return Status{}, err
	}
	if resp.Status == nil {
		return Status{}, errors.New("upgrade: the service sent no status")
	}
	w := resp.Status
	st := Status{PID: w.PID, Generation: w.Generation, State: w.State, LastUpgrade: w.LastUpgrade, Failures: w.Failures}
	st.LastUpgradeAt, _ = time.Parse(time.RFC3339Nano, w.LastUpgradeAt)
	st.BackoffUntil, _ = time.Parse(time.RFC3339Nano, w.BackoffUntil)
	return st, nil
}

func timeoutMS(ctx context.Context) int64 {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	ms := time.Until(d).Milliseconds()
	if ms < 1 {
		ms = 1
	}
	if max := ctlproto.MaxTimeout.Milliseconds(); ms > max {
		ms = max
	}
	return ms
}

func (c Client) do(ctx context.Context, req ctlproto.Request) (ctlproto.Response, error) {
	if c.Socket == "" {
		return ctlproto.Response{}, errors.New("upgrade: Client.Socket is empty")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return ctlproto.Response{}, fmt.Errorf("upgrade: no service is listening on the control socket %s: %w", c.Socket, err)
		}
		return ctlproto.Response{}, fmt.Errorf("upgrade: control socket %s: %w", c.Socket, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	_, werr := conn.Write(req.Marshal())
	// Even when the write failed, the service may have answered (a
	// refusal); its answer says more than the write error.
	line, err := bufio.NewReaderSize(conn, ctlproto.MaxMessage).ReadSlice('\n')
	if err != nil && werr != nil {
		return ctlproto.Response{}, fmt.Errorf("upgrade: sending %s: %w", req.Verb, werr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctlproto.Response{}, fmt.Errorf("upgrade: waiting for the answer to %s: %w", req.Verb, ctx.Err())
		}
		return ctlproto.Response{}, fmt.Errorf("upgrade: reading the answer to %s: %w", req.Verb, err)
	}
	return ctlproto.ParseResponse(line)
}

// responseError turns a response back into the error the service saw.
func responseError(r ctlproto.Response) error {
	if r.OK {
		return nil
	}
	for reason, code := range reasonCodes {
		if code == r.Code && r.Child != nil {
			return &ChildError{Reason: reason, PID: r.Child.PID, ExitStatus: r.Child.ExitStatus,
				Signal: syscall.Signal(r.Child.Signal), Timeout: time.Duration(r.Child.TimeoutMS) * time.Millisecond,
				Detail: r.Child.Detail, Stderr: r.Child.Stderr}
		}
	}
	var base error
	switch r.Code {
	case "backoff":
		base = ErrBackoff
	case "stopped":
		base = ErrStopped
	case "upgraded":
		base = ErrUpgraded
	case "not-ready":
		base = ErrNotReady
	case "timeout":
		base = context.DeadlineExceeded
	default:
		return fmt.Errorf("upgrade: the service answered: %s (%s)", r.Error, r.Code)
	}
	return &remoteError{msg: r.Error, base: base}
}

// remoteError carries the service's words and matches the sentinel they
// stand for.
type remoteError struct {
	msg  string
	base error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.base }

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hitlessgo/hitless/internal/timeline"
)

// lineTimeout bounds one message (with the dial and HELLO when it opens a
// connection) and one leave: far above any latency an upgrade causes, so
// it only ends a connection that is really stuck.
const lineTimeout = 5 * time.Second

// rawTCP drives examples/tcp's line protocol: each of t.Conns connections
// sends one line every Conns/Rate and reads its echo. The server greets a
// connection with "HELLO <pid>" (the Request's PID); when it drains it
// sends "BYE" before the echo still owed, and the client leaves
// (half-close, then EOF from the server) and the next message opens a new
// connection, to the next generation. A message is never sent twice: one
// that fails is recorded and the next one starts afresh.
func rawTCP(ctx context.Context, t target) ([]timeline.Request, error) {
	every := time.Duration(t.Conns) * time.Second / time.Duration(t.Rate)
	out := make([][]timeline.Request, t.Conns)
	var wg sync.WaitGroup
	for i := range t.Conns {
		// Spread the connections' first messages over one interval, so
		// the load is even rather than in bursts of Conns.
		first := time.Now().Add(every * time.Duration(i) / time.Duration(t.Conns))
		wg.Go(func() { out[i] = lineWorker(ctx, t.Addr, i, first, every) })
	}
	wg.Wait()
	return byStart(slices.Concat(out...)), nil
}

// lineConn is one connection of the line protocol.
type lineConn struct {
	c   net.Conn
	r   *bufio.Reader
	pid int
}

func dialLine(addr string, deadline time.Time) (*lineConn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	c.SetDeadline(deadline)
	r := bufio.NewReader(c)
	hello, err := r.ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimPrefix(strings.TrimSuffix(hello, "\n"), "HELLO "))
	if err != nil || perr != nil {
		c.Close()
		return nil, fmt.Errorf("greeting %q: %v", hello, errors.Join(err, perr))
	}
	return &lineConn{c: c, r: r, pid: pid}, nil
}

// exchange sends msg and reads its echo, and says whether the server sent
// BYE before it.
func (l *lineConn) exchange(msg string, deadline time.Time) (bye bool, err error) {
	l.c.SetDeadline(deadline)
	if _, err := io.WriteString(l.c, msg); err != nil {
		return false, err
	}
	got, err := l.r.ReadString('\n')
	if err == nil && got == "BYE\n" {
		bye = true
		got, err = l.r.ReadString('\n')
	}
	if err == nil && got != msg {
		err = fmt.Errorf("echo %q, want %q", got, msg)
	}
	return bye, err
}

// leave ends the connection the way the protocol asks: half-close, then
// nothing from the server but EOF (or the BYE it sent meanwhile, if it had
// not yet).
func (l *lineConn) leave(byeSeen bool) error {
	defer l.c.Close()
	l.c.SetDeadline(time.Now().Add(lineTimeout))
	if err := l.c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	rest, err := io.ReadAll(l.r)
	if err != nil {
		return err
	}
	if s := string(rest); s != "" && (byeSeen || s != "BYE\n") {
		return fmt.Errorf("%q before EOF", s)
	}
	return nil
}

func lineWorker(ctx context.Context, addr string, id int, next time.Time, every time.Duration) []timeline.Request {
	var (
		reqs []timeline.Request
		conn *lineConn
	)
	// A leave that breaks (a reset, bytes the server should not have
	// sent) is counted as a failed request although no message was lost:
	// an upgrade must not show clients errors of any kind.
	leave := func(byeSeen bool) {
		start := time.Now()
		if err := conn.leave(byeSeen); err != nil {
			reqs = append(reqs, timeline.Request{Start: start, Latency: time.Since(start), Failed: true, PID: conn.pid})
		}
		conn = nil
	}
	defer func() {
		if conn != nil {
			leave(false)
		}
	}()
	for n := 1; ; n++ {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return reqs
		case <-t.C:
		}
		start := time.Now()
		// Keep the schedule, but do not make up for a slow message with
		// a burst.
		if next = next.Add(every); next.Before(start) {
			next = start
		}
		deadline := start.Add(lineTimeout)
		req := timeline.Request{Start: start}
		var bye bool
		var err error
		if conn == nil {
			conn, err = dialLine(addr, deadline)
			if n > 1 {
				// The server ended the last connection (BYE, or a
				// failure): this one is a reconnection.
				req.Reconnect = time.Since(start)
			}
		}
		if err == nil {
			req.PID = conn.pid
			bye, err = conn.exchange(fmt.Sprintf("conn %d line %d\n", id, n), deadline)
		}
		req.Latency = time.Since(start)
		req.Failed = err != nil
		reqs = append(reqs, req)
		switch {
		case err != nil && conn != nil:
			// After a failure the connection's state is unknown: the next
			// message gets a new one.
			conn.c.Close()
			conn = nil
		case bye:
			leave(true)
		}
	}
}

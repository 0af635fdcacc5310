//go:build unix

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/hitlessgo/hitless/internal/loadgen"
)

// The load client: HTTP/3 clients that never resend a request the server
// may have seen. Each keeps one QUIC connection at a time and sends one
// request at a time on it, with http3.ClientConn.RoundTrip (not
// http3.Transport.RoundTrip, which silently resends requests a GOAWAY
// turned away).

// stats is what the clients of one kind saw.
type stats struct {
	kind string
	mu   sync.Mutex
	ok   int64 // answered with 200 and a whole body
	// failed: anything else, the request rejected (H3_REQUEST_REJECTED)
	// or a connection closed under it included. Must be 0.
	failed int64
	// reconnects: requests the client connection refused to send because
	// a GOAWAY had arrived ("connection in graceful shutdown"), or whose
	// connection had ended before they were sent; sent once, on a new
	// connection.
	reconnects int64
	pids       map[int]int
	errs       []string
	lat        loadgen.Recorder
	long       []answer // every answered request (long responses only)
}

// answer is one answered request: who answered it, and when.
type answer struct {
	pid        int
	start, end time.Time
}

func newStats(kind string) *stats { return &stats{kind: kind, pids: make(map[int]int)} }

func (s *stats) add(f func(s *stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *stats) fail(format string, args ...any) {
	s.add(func(s *stats) {
		s.failed++
		if len(s.errs) < 20 {
			s.errs = append(s.errs, time.Now().Format("15:04:05.000000 ")+fmt.Sprintf(format, args...))
		}
	})
}

func (s *stats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%s: %d ok, %d failed, %d reconnects (GOAWAY had arrived, not sent), %d generations",
		s.kind, s.ok, s.failed, s.reconnects, len(s.pids))
}

// errGoAway is the text of quic-go's error for a request a ClientConn did
// not send because the server's GOAWAY had arrived.
const errGoAway = "connection in graceful shutdown"

// client is one load client: one QUIC connection at a time.
type client struct {
	addr string
	id   int
	st   *stats
	qc   *quic.Conn
	cc   *http3.ClientConn
}

func (c *client) dial() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// DialAddr gives the connection a UDP socket of its own, closed with it.
	qc, err := quic.DialAddr(ctx, c.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
	if err != nil {
		return err
	}
	c.qc, c.cc = qc, (&http3.Transport{}).NewClientConn(qc)
	return nil
}

func (c *client) close() {
	if c.qc != nil {
		c.qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		c.qc, c.cc = nil, nil
	}
}

// get sends one request for path and checks its answer. A request the
// connection refuses to send (GOAWAY arrived), or a connection that ended
// before the request was sent, is a reconnect: the same request goes once
// on a new connection. sleep is the long response's length, or zero.
func (c *client) get(path string, sleep time.Duration) {
	for attempt := 0; ; attempt++ {
		if c.qc != nil && c.qc.Context().Err() != nil {
			// Ended before this request was sent: the client closed it
			// after a GOAWAY once its last response was read, or the
			// server did.
			c.close()
			if attempt == 0 {
				c.st.add(func(s *stats) { s.reconnects++ })
			}
		}
		if c.qc == nil {
			if err := c.dial(); err != nil {
				c.st.fail("client %d: dial: %v", c.id, err)
				time.Sleep(10 * time.Millisecond)
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+sleep)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+c.addr+path, nil)
		start := time.Now()
		resp, err := c.cc.RoundTrip(req)
		if err != nil {
			cancel()
			if err.Error() == errGoAway && attempt == 0 {
				c.st.add(func(s *stats) { s.reconnects++ })
				c.close()
				continue
			}
			c.st.fail("client %d: %s: %v", c.id, path, err)
			c.close()
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		end := time.Now()
		pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
		if err == nil {
			err = checkBody(resp.StatusCode, pid, string(body), sleep)
		}
		if err != nil {
			c.st.fail("client %d: %s (pid %d): %v", c.id, path, pid, err)
			c.close()
			return
		}
		c.st.lat.Record(start, end.Sub(start))
		c.st.add(func(s *stats) {
			s.ok++
			s.pids[pid]++
			if sleep > 0 {
				s.long = append(s.long, answer{pid, start, end})
			}
		})
		return
	}
}

// checkBody says what is wrong with an answer, if anything.
func checkBody(status, pid int, body string, sleep time.Duration) error {
	if status != http.StatusOK {
		return fmt.Errorf("status %d", status)
	}
	if pid == 0 {
		return errors.New("no X-Pid")
	}
	var want strings.Builder
	if sleep == 0 {
		fmt.Fprintln(&want, "ok", pid)
	} else {
		for i := 0; time.Duration(i)*100*time.Millisecond < sleep; i++ {
			fmt.Fprintln(&want, i)
		}
		fmt.Fprintln(&want, "done")
	}
	if body != want.String() {
		return fmt.Errorf("body %q, want %q", trim(body), trim(want.String()))
	}
	return nil
}

func trim(s string) string {
	if len(s) > 60 {
		return s[:30] + "..." + s[len(s)-30:]
	}
	return s
}

// keepAlive sends requests back to back on one connection at a time.
func keepAlive(ctx context.Context, addr string, id int, path string, sleep time.Duration, st *stats) {
	c := &client{addr: addr, id: id, st: st}
	defer c.close()
	for ctx.Err() == nil {
		c.get(path, sleep)
	}
}

// perRequest sends each request on a new connection, closed after it.
func perRequest(ctx context.Context, addr string, id int, st *stats) {
	for ctx.Err() == nil {
		c := &client{addr: addr, id: id, st: st}
		c.get("/", 0)
		c.close()
	}
}

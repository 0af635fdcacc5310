package drain

import (
	"net/http"
	"testing"
	"time"
)

// TestSlowClientIsNotClosedUnderItsRequest: a client that leaves its
// keep-alive connection idle longer than IdleTimeout between requests (a
// poller; a client too loaded to keep up) would, with a plain IdleTimeout,
// have the connection closed under its next request. The drain waits for
// twice its longest gap instead, and the request is answered and told to
// close.
func TestSlowClientIsNotClosedUnderItsRequest(t *testing.T) {
	const idle, gap = 200 * time.Millisecond, 350 * time.Millisecond
	h := &HTTP{Server: &http.Server{Handler: handler()}, IdleTimeout: idle}
	addr, _ := serve(t, h)
	c := dial(t, addr)
	for range 3 {
		c.get("/")
		time.Sleep(gap)
	}
	c.get("/")
	res := drainAsync(h, 10*time.Second)
	time.Sleep(gap) // idle longer than IdleTimeout, as before the drain
	if resp := c.get("/"); !resp.Close {
		t.Fatal("response during the drain lacks Connection: close")
	}
	if !c.closedByServer() {
		t.Fatal("server kept the connection after Connection: close")
	}
	r := <-res
	if r.err != nil || r.r.Open != 1 || r.r.Ended != 1 || r.r.Cut != 0 {
		t.Fatalf("Drain = %+v, %v; want 1 open, 1 ended", r.r, r.err)
	}
}

// TestIdleWaitBounds: the wait follows the client's longest gap, never
// below IdleTimeout, never above maxIdleWaits of them; a connection that
// has not sent a request gets IdleTimeout.
func TestIdleWaitBounds(t *testing.T) {
	const idle = time.Second
	for _, tc := range []struct {
		state   http.ConnState
		longest time.Duration
		want    time.Duration
	}{
		{http.StateNew, 0, idle},
		{http.StateNew, 3 * time.Second, idle},
		{http.StateIdle, 0, idle},
		{http.StateIdle, 400 * time.Millisecond, idle},
		{http.StateIdle, 1400 * time.Millisecond, 2800 * time.Millisecond},
		{http.StateIdle, time.Hour, maxIdleWaits * idle},
	} {
		if got := idleWait(idle, &connInfo{state: tc.state, longestIdle: tc.longest}); got != tc.want {
			t.Errorf("idleWait(%v, %v after a gap of %v) = %v, want %v", idle, tc.state, tc.longest, got, tc.want)
		}
	}
}

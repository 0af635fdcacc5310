package control

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/ctlproto"
)

// rollbackHandler is a fakeHandler that can roll back.
type rollbackHandler struct {
	*fakeHandler
	rollback func(ctx context.Context, hurry bool) error
}

func (h rollbackHandler) Rollback(ctx context.Context, hurry bool) error {
	return h.rollback(ctx, hurry)
}

// TestRollbackVerb: Client.Rollback reaches a RollbackHandler's Rollback
// (not Reload), with hurry; ErrNoRollback survives the wire with its
// words; a Handler that cannot roll back refuses the verb.
func TestRollbackVerb(t *testing.T) {
	var hurried []bool
	h := rollbackHandler{fakeHandler: &fakeHandler{status: Status{PID: 1, State: StateServing}}}
	why := errors.Join(ErrNoRollback, errors.New("this generation was started by a rollback"))
	calls := 0
	h.rollback = func(ctx context.Context, hurry bool) error {
		hurried = append(hurried, hurry)
		if calls++; calls == 2 {
			return why
		}
		return nil
	}
	ts := serve(t, h, nil)
	if err := ts.client().Rollback(timeout(t, 10*time.Second), Hurry()); err != nil {
		t.Fatalf("Rollback: %v", err)
	}
	err := ts.client().Rollback(timeout(t, 10*time.Second))
	if !errors.Is(err, ErrNoRollback) || !strings.Contains(err.Error(), "started by a rollback") {
		t.Fatalf("Rollback with nothing to roll back to: %v; want ErrNoRollback saying why", err)
	}
	if reloads, _, _ := h.counts(); reloads != 0 || len(hurried) != 2 || !hurried[0] || hurried[1] {
		t.Fatalf("reloads %d, rollbacks' hurry %v; want 0 reloads and [true false]", reloads, hurried)
	}

	plain := serve(t, &fakeHandler{status: Status{PID: 1, State: StateServing}}, nil)
	if err := plain.client().Rollback(timeout(t, 10*time.Second)); err == nil || !strings.Contains(err.Error(), "cannot roll back") {
		t.Fatalf("Rollback of a service that cannot: %v", err)
	}
}

// TestHistoryOnlyWhenAsked: the history goes only to a status request
// that asks for it (Client.Status does), so that an answer to a client of
// an earlier release, which reads at most ctlproto.MaxMessage bytes, stays
// within that however long the history.
func TestHistoryOnlyWhenAsked(t *testing.T) {
	st := Status{PID: 1, State: StateServing, Version: "v2", RollbackTo: "v1"}
	for i := range 200 {
		st.History = append(st.History, Upgrade{Kind: KindUpgrade, Outcome: OutcomeOK,
			Started: time.Now(), From: Process{PID: 1000 + i, Generation: i + 1, Version: "v1"}, To: Process{PID: 1001 + i, Generation: i + 2, Version: "v2"}})
	}
	ts := serve(t, &fakeHandler{status: st}, nil)
	got, err := ts.client().Status(timeout(t, 10*time.Second))
	if err != nil || len(got.History) == 0 || got.RollbackTo != "v1" {
		t.Fatalf("Status: %d history entries, rollback_to %q, %v; want the history and v1", len(got.History), got.RollbackTo, err)
	}
	for _, req := range []string{
		`{"verb":"status"}`, // a client of the release before the deadline
		`{"verb":"reload","deadline_unix_ms":` + deadlineMS() + `}`,
	} {
		line := rawRequest(t, ts.sock, req)
		if len(line) > ctlproto.MaxMessage {
			t.Errorf("answer to %s: %d bytes, over the %d an earlier client reads", req, len(line), ctlproto.MaxMessage)
		}
		if strings.Contains(line, `"history"`) {
			t.Errorf("answer to %s carries the history", req)
		}
	}
}

func deadlineMS() string { return strconv.FormatInt(time.Now().Add(10*time.Second).UnixMilli(), 10) }

// rawRequest sends line as a request and returns the answer's line.
func rawRequest(t *testing.T, sock, line string) string {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	var b []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil || (len(b) > 0 && b[len(b)-1] == '\n') {
			break
		}
	}
	return string(b)
}

package ctlproto

import (
	"strings"
	"testing"
)

func TestResponseWithHistoryFitsMaxResponse(t *testing.T) {
	entry := Upgrade{Kind: "upgrade", Started: "2026-12-01T10:00:00Z", Outcome: "failed", Reason: "exited",
		Error: strings.Repeat("e", 200), From: &Process{PID: 1, Generation: 1, Version: "v1"}, To: &Process{PID: 2, Generation: 2}}
	long := strings.Repeat("x", 3*MaxMessage)
	for _, tc := range []struct {
		name    string
		entries int
		all     bool // every entry fits
	}{{"a few", 16, true}, {"too many", 1000, false}} {
		t.Run(tc.name, func(t *testing.T) {
			h := make([]Upgrade, tc.entries)
			for i := range h {
				h[i] = entry
				h[i].To = &Process{PID: 1000 + i}
			}
			st := &Status{PID: 1, LastUpgrade: long, History: h}
			r := Response{OK: true, Error: long, Status: st}
			b := r.Marshal()
			if len(b) > MaxResponse {
				t.Fatalf("%d bytes", len(b))
			}
			if len(b) <= MaxMessage {
				t.Fatalf("only %d bytes: the history was cut to MaxMessage", len(b))
			}
			back, err := ParseResponse(b)
			if err != nil {
				t.Fatal(err)
			}
			// The texts are cut as if there were no history.
			if len(back.Status.LastUpgrade)+len(back.Error) > MaxMessage {
				t.Errorf("texts of %d bytes kept", len(back.Status.LastUpgrade)+len(back.Error))
			}
			n := len(back.Status.History)
			if tc.all != (n == tc.entries) || n == 0 {
				t.Errorf("%d of %d entries kept", n, tc.entries)
			}
			if last := back.Status.History[n-1].To.PID; last != 1000+tc.entries-1 {
				t.Errorf("the newest entry kept is %d: the oldest must go first", last)
			}
			if len(st.History) != tc.entries || st.LastUpgrade != long {
				t.Error("Marshal changed the caller's status")
			}
		})
	}
	if _, err := ParseResponse([]byte(`{"ok":true,"pad":"` + strings.Repeat("a", MaxResponse) + `"}`)); err == nil {
		t.Error("a response over MaxResponse was parsed")
	}
}

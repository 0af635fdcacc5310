package control

import (
	"encoding/json"
	"testing"
	"time"
)

func TestStatusJSON(t *testing.T) {
	zone := time.FixedZone("", 3600)
	full := Status{PID: 42, Generation: 3, State: StateServing, LastUpgrade: "ok",
		LastUpgradeAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Failures: 2,
		BackoffUntil: time.Date(2026, 12, 1, 11, 5, 0, 500_000_000, zone)}
	for _, tc := range []struct {
		name string
		st   Status
		want string
	}{
		{"full", full, `{"pid":42,"generation":3,"state":"serving","last_upgrade":"ok","last_upgrade_at":"2026-12-01T10:00:00Z","consecutive_failures":2,"backoff_until":"2026-12-01T11:05:00.5+01:00"}`},
		{"zero fields left out", Status{PID: 7, Generation: 1, State: StateStarting}, `{"pid":7,"generation":1,"state":"starting"}`},
		{"zero", Status{}, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.st)
			if err != nil || string(b) != tc.want {
				t.Fatalf("Marshal = %s, %v\nwant %s", b, err, tc.want)
			}
			var back Status
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.PID != tc.st.PID || back.State != tc.st.State || !back.LastUpgradeAt.Equal(tc.st.LastUpgradeAt) || !back.BackoffUntil.Equal(tc.st.BackoffUntil) || back.Failures != tc.st.Failures {
				t.Fatalf("round trip: %+v; want %+v", back, tc.st)
			}
		})
	}
	var st Status
	if err := json.Unmarshal([]byte(`{"pid":1,"last_upgrade_at":"yesterday"}`), &st); err == nil {
		t.Fatal("a time that is not RFC 3339 was accepted")
	}
}

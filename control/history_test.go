package control

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// fullStatus has every field set, so that its JSON has every key.
func fullStatus() Status {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	return Status{PID: 42, Generation: 3, State: StateServing, LastUpgrade: "ok", LastUpgradeAt: at, Failures: 1,
		BackoffUntil: at.Add(time.Minute), Version: "v1.4.2", RollbackTo: "v1.4.1",
		History: []Upgrade{{Kind: KindUpgrade, Requested: at, Started: at.Add(time.Millisecond), Finished: at.Add(time.Second),
			From: Process{PID: 41, Generation: 2, Version: "v1.4.1"}, To: Process{PID: 42, Generation: 3, Version: "v1.4.2"},
			Outcome: OutcomeFailed, Reason: ReasonExited.Code(), Error: "exited with status 3", Took: 999 * time.Millisecond,
			DrainedAt: at.Add(2 * time.Second), DrainTook: 500 * time.Millisecond, DrainEnded: 7, DrainCut: 1}},
		Totals: Totals{Upgrades: 5, Failures: 2, FailuresByReason: map[string]int64{"exited": 2}, TakeBacks: 1, DrainEnded: 30, DrainCut: 1}}
}

func TestStatusHistoryJSONRoundTrip(t *testing.T) {
	st := fullStatus()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"version":"v1.4.2"`, `"outcome":"failed"`, `"reason":"exited"`, `"took_ns":999000000`,
		`"from":{"pid":41,"generation":2,"version":"v1.4.1"}`, `"totals":{"upgrades":5,"failures":2,"failures_by_reason":{"exited":2},"take_backs":1,"drain_ended":30,"drain_cut":1}`,
		`"started":"2026-12-01T10:00:00.001Z"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", back, st)
	}
	// Zero fields are left out, down to the history's.
	b, _ = json.Marshal(Status{PID: 1, History: []Upgrade{{Kind: KindUpgrade, Outcome: OutcomeInProgress}}})
	if want := `{"pid":1,"history":[{"kind":"upgrade","outcome":"in progress"}]}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
	if err := json.Unmarshal([]byte(`{"history":[{"started":"soon"}]}`), &back); err == nil || !strings.Contains(err.Error(), "started") {
		t.Errorf("a malformed time in the history: %v", err)
	}
}

// TestStatusSchemaMatches checks a fully populated status against the
// embedded schema, both ways: every key the status has is in the schema
// with the right type, and every key of the schema is in the status.
func TestStatusSchemaMatches(t *testing.T) {
	var schema map[string]any
	if err := json.Unmarshal(StatusSchema(), &schema); err != nil {
		t.Fatalf("the schema is not JSON: %v", err)
	}
	b, err := json.Marshal(fullStatus())
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	defs, _ := schema["$defs"].(map[string]any)
	var problems []string
	var check func(path string, s map[string]any, v any)
	check = func(path string, s map[string]any, v any) {
		if ref, ok := s["$ref"].(string); ok {
			name, ok := strings.CutPrefix(ref, "#/$defs/")
			d, found := defs[name].(map[string]any)
			if !ok || !found {
				problems = append(problems, fmt.Sprintf("%s: unresolved $ref %q", path, ref))
				return
			}
			s = d
		}
		typ, _ := s["type"].(string)
		switch v := v.(type) {
		case map[string]any:
			if typ != "object" {
				problems = append(problems, fmt.Sprintf("%s: an object, the schema says %q", path, typ))
				return
			}
			if extra, ok := s["additionalProperties"].(map[string]any); ok {
				for k, x := range v {
					check(path+"."+k, extra, x)
				}
				return
			}
			props, _ := s["properties"].(map[string]any)
			for k, x := range v {
				p, ok := props[k].(map[string]any)
				if !ok {
					problems = append(problems, fmt.Sprintf("%s.%s: not in the schema", path, k))
					continue
				}
				check(path+"."+k, p, x)
			}
			for k := range props {
				if _, ok := v[k]; !ok {
					problems = append(problems, fmt.Sprintf("%s.%s: in the schema, not in a full status", path, k))
				}
			}
		case []any:
			items, _ := s["items"].(map[string]any)
			if typ != "array" || items == nil {
				problems = append(problems, fmt.Sprintf("%s: an array, the schema says %q", path, typ))
				return
			}
			for i, x := range v {
				check(fmt.Sprintf("%s[%d]", path, i), items, x)
			}
		case string:
			if typ != "string" {
				problems = append(problems, fmt.Sprintf("%s: a string, the schema says %q", path, typ))
			}
			if enum, ok := s["enum"].([]any); ok && !containsAny(enum, v) {
				problems = append(problems, fmt.Sprintf("%s: %q not in %v", path, v, enum))
			}
			if s["format"] == "date-time" {
				if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
					problems = append(problems, fmt.Sprintf("%s: %v", path, err))
				}
			}
		case float64:
			if typ != "integer" || v != float64(int64(v)) {
				problems = append(problems, fmt.Sprintf("%s: %v, the schema says %q", path, v, typ))
			}
		default:
			problems = append(problems, fmt.Sprintf("%s: unexpected %T", path, v))
		}
	}
	check("status", schema, doc)
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
}

func containsAny(list []any, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestReasonCodesAndErrorCode(t *testing.T) {
	if got := ReasonTimedOut.Code(); got != "timed-out" {
		t.Errorf("ReasonTimedOut.Code() = %q", got)
	}
	if got := Reason(99).Code(); got != "internal" {
		t.Errorf("Reason(99).Code() = %q", got)
	}
	for err, want := range map[error]string{nil: "", &ChildError{Reason: ReasonCrashed}: "crashed",
		ErrStopped: "stopped", fmt.Errorf("x: %w", &ChildError{Reason: ReasonCheckFailed}): "check-failed"} {
		if got := ErrorCode(err); got != want {
			t.Errorf("ErrorCode(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestTotalsClone(t *testing.T) {
	a := Totals{FailuresByReason: map[string]int64{"exited": 1}}
	b := a.Clone()
	b.FailuresByReason["exited"]++
	if a.FailuresByReason["exited"] != 1 {
		t.Error("Clone shares the map")
	}
}

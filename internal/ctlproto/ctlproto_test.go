package ctlproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
)

const dl = `,"deadline_unix_ms":1700000000000`

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Request
		err  string
	}{
		{"reload", `{"verb":"reload"` + dl + `}`, Request{Verb: "reload", DeadlineUnixMS: 1700000000000}, ""},
		{"reload hurry newline", `{"verb":"reload","hurry":true` + dl + `}` + "\n", Request{Verb: "reload", Hurry: true, DeadlineUnixMS: 1700000000000}, ""},
		{"status", `{"verb":"status"` + dl + `}`, Request{Verb: "status", DeadlineUnixMS: 1700000000000}, ""},
		{"stop, keys in any order", `{"deadline_unix_ms":1,"verb":"stop"}`, Request{Verb: "stop", DeadlineUnixMS: 1}, ""},
		{"hurry false on stop", `{"verb":"stop","hurry":false` + dl + `}`, Request{Verb: "stop", DeadlineUnixMS: 1700000000000}, ""},
		{"largest deadline", `{"verb":"stop","deadline_unix_ms":253402300799999}`, Request{Verb: "stop", DeadlineUnixMS: MaxDeadlineUnixMS}, ""},
		{"whitespace", " {\t\"verb\" : \"status\" , \"deadline_unix_ms\" : 5 } \n", Request{Verb: "status", DeadlineUnixMS: 5}, ""},

		{"empty", ``, Request{}, "empty"},
		{"blank", "   \n", Request{}, "empty"},
		{"unknown verb", `{"verb":"explode"` + dl + `}`, Request{}, "unknown verb"},
		{"unknown field", `{"verb":"reload","x":1` + dl + `}`, Request{}, `unknown field "x"`},
		// A client of the previous release (wire version 0) is served.
		{"old timeout_ms", `{"verb":"reload","timeout_ms":5000}`, Request{Verb: "reload", TimeoutMS: 5000}, ""},
		{"old timeout_ms zero", `{"verb":"reload","timeout_ms":0}`, Request{Verb: "reload"}, ""},
		{"old largest timeout_ms", `{"verb":"reload","timeout_ms":3600000}`, Request{Verb: "reload", TimeoutMS: 3600000}, ""},
		{"old stop without a deadline", `{"verb":"stop"}`, Request{Verb: "stop"}, ""},
		{"old timeout_ms past the range", `{"verb":"reload","timeout_ms":3600001}`, Request{}, "out of range"},
		{"old timeout_ms MaxInt64", `{"verb":"reload","timeout_ms":9223372036854775807}`, Request{}, "out of range"},
		{"old timeout_ms overflowing into 192µs", `{"verb":"reload","timeout_ms":9223372036854776}`, Request{}, "out of range"},
		{"old negative timeout_ms", `{"verb":"reload","timeout_ms":-1}`, Request{}, "out of range"},
		{"both timeout and deadline", `{"verb":"reload","timeout_ms":5` + dl + `}`, Request{}, "both"},
		{"key case differs", `{"verb":"status","Verb":"stop"` + dl + `}`, Request{}, `unknown field "Verb"`},
		{"key given twice", `{"verb":"status","verb":"stop"` + dl + `}`, Request{}, `field "verb" given twice`},
		{"key given twice, escaped", `{"verb":"status","v\u0065rb":"stop"` + dl + `}`, Request{}, `given twice`},
		{"no verb", `{"deadline_unix_ms":1}`, Request{}, "no verb"},
		{"null verb", `{"verb":null` + dl + `}`, Request{}, "verb: null"},
		{"verb not a string", `{"verb":1` + dl + `}`, Request{}, "verb: json"},
		{"null hurry", `{"verb":"reload","hurry":null` + dl + `}`, Request{}, "hurry: null"},
		{"hurry on status", `{"verb":"status","hurry":true` + dl + `}`, Request{}, "hurry applies to reload and rollback only"},
		{"rollback hurry", `{"verb":"rollback","hurry":true` + dl + `}`, Request{Verb: "rollback", Hurry: true, DeadlineUnixMS: 1700000000000}, ""},
		{"status with history", `{"verb":"status","history":true` + dl + `}`, Request{Verb: "status", History: true, DeadlineUnixMS: 1700000000000}, ""},
		{"history on reload", `{"verb":"reload","history":true` + dl + `}`, Request{}, "history applies to status only"},
		{"null history", `{"verb":"status","history":null` + dl + `}`, Request{}, "history: null"},
		{"zero deadline", `{"verb":"stop","deadline_unix_ms":0}`, Request{}, "out of range"},
		{"negative deadline", `{"verb":"stop","deadline_unix_ms":-1}`, Request{}, "out of range"},
		{"deadline past the range", `{"verb":"stop","deadline_unix_ms":253402300800000}`, Request{}, "out of range"},
		// Review L4: these passed the old range check through overflow.
		{"deadline MaxInt64", `{"verb":"stop","deadline_unix_ms":9223372036854775807}`, Request{}, "out of range"},
		{"deadline that overflowed into 192µs", `{"verb":"stop","deadline_unix_ms":9223372036854776}`, Request{}, "out of range"},
		{"deadline beyond int64", `{"verb":"stop","deadline_unix_ms":9223372036854775808}`, Request{}, "deadline_unix_ms: json"},
		{"fractional deadline", `{"verb":"stop","deadline_unix_ms":1.5}`, Request{}, "deadline_unix_ms: json"},
		{"exponent deadline", `{"verb":"stop","deadline_unix_ms":1e3}`, Request{}, "deadline_unix_ms: json"},
		{"string deadline", `{"verb":"stop","deadline_unix_ms":"1"}`, Request{}, "deadline_unix_ms: json"},
		{"two objects", `{"verb":"reload"` + dl + `} {"verb":"stop"}`, Request{}, "trailing data"},
		{"array", `[1,2]`, Request{}, "want a JSON object"},
		{"string", `"verb"`, Request{}, "want a JSON object"},
		{"truncated", `{"verb":`, Request{}, "EOF"},
		{"too long", `{"verb":"reload","pad":"` + strings.Repeat("a", MaxMessage) + `"}`, Request{}, "the limit is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(tc.in))
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseRequest(%.60q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseRequest(%.60q) error = %v; want ErrMalformed saying %q", tc.in, err, tc.err)
			}
			if got != (Request{}) {
				t.Fatalf("a refused request came back as %+v", got)
			}
		})
	}
}

func TestResponseFitsTheLimit(t *testing.T) {
	long := strings.Repeat("x", 3*MaxMessage)
	quotes := strings.Repeat("\"\x01", MaxMessage) // each byte takes 2 or 6 bytes escaped
	child := &Child{PID: 7, Stderr: long, Cause: quotes}
	for _, tc := range []struct {
		name string
		r    Response
		keep func(Response) bool
	}{
		{"error", Response{Error: long, Code: CodeInternal, Status: &Status{PID: 1, State: "serving"}},
			func(r Response) bool { return strings.HasSuffix(r.Error, "...") && r.Status.PID == 1 }},
		{"escaped error", Response{Error: quotes, Code: CodeInternal},
			func(r Response) bool { return strings.HasSuffix(r.Error, "...") }},
		{"child", Response{Error: long, Code: CodeExited, Child: child, Status: &Status{PID: 1, LastUpgrade: long}},
			func(r Response) bool { return r.Child.PID == 7 && r.Status.PID == 1 }},
		{"backoff", Response{Error: long, Code: CodeBackoff, Backoff: &Backoff{Until: "2026-01-01T00:00:00Z", Failures: 3, LastCode: CodeExited, LastChild: child}},
			func(r Response) bool { return r.Backoff.Failures == 3 && r.Backoff.LastChild.PID == 7 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.r.Marshal()
			if len(b) > MaxMessage {
				t.Fatalf("marshalled response is %d bytes", len(b))
			}
			if len(b) < MaxMessage/2 {
				t.Errorf("cut too much: %d bytes left", len(b))
			}
			back, err := ParseResponse(b)
			if err != nil || back.Code != tc.r.Code || !tc.keep(back) {
				t.Fatalf("round trip: %+v, %v", back, err)
			}
		})
	}
	if child.Stderr != long || child.Cause != quotes {
		t.Error("Marshal shortened the caller's Child")
	}
}

// FuzzParseRequest checks ParseRequest against an oracle that shares none
// of its code: a generic decode into map[string]any, a byte scanner that
// counts the top-level members (to see duplicate keys, which a map
// hides), and math/big for the deadline's range (so that no int64
// arithmetic can overflow the check, as it did in review L4).
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"verb":"reload","deadline_unix_ms":1}`, `{"verb":"reload","hurry":true,"deadline_unix_ms":1700000000000}`,
		`{"verb":"status","deadline_unix_ms":253402300799999}`, `{"verb":"stop","deadline_unix_ms":253402300800000}`,
		`{"verb":"stop","deadline_unix_ms":9223372036854775807}`, `{"verb":"stop","deadline_unix_ms":9223372036854776}`,
		`{"verb":"status","Verb":"stop","deadline_unix_ms":1}`, `{"verb":"status","verb":"stop","deadline_unix_ms":1}`,
		`{"verb":"stop","v\u0065rb":"stop","deadline_unix_ms":1}`, `{"verb":"stop","deadline_unix_ms":-0}`,
		`{"verb":"stop","deadline_unix_ms":1.0}`, `{"verb":"stop","deadline_unix_ms":1e2}`, `{"verb":null,"deadline_unix_ms":1}`,
		``, `{`, "\x00\xff", `{"verb":"\u0000"}`, `{"a":{"b":[1,{"c":2}]},"verb":"stop","deadline_unix_ms":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := ParseRequest(in)
		want, valid := oracle(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if got != (Request{}) {
				t.Fatalf("rejected request still returned %+v", got)
			}
			if valid {
				t.Fatalf("ParseRequest(%q) refused a valid request (%+v): %v", in, want, err)
			}
			return
		}
		if !valid {
			t.Fatalf("ParseRequest(%q) accepted an invalid request as %+v", in, got)
		}
		if got != want {
			t.Fatalf("ParseRequest(%q) = %+v; the oracle reads %+v", in, got, want)
		}
		back, err := ParseRequest(got.Marshal())
		if err != nil || back != got {
			t.Fatalf("round trip of %+v: %+v, %v", got, back, err)
		}
	})
}

var (
	minDeadline    = big.NewInt(1)
	maxDeadline, _ = new(big.Int).SetString("253402300799999", 10)
	maxTimeoutMS   = big.NewInt(3600000)
)

// oracle says whether in is a valid request, and what it asks.
func oracle(in []byte) (Request, bool) {
	if len(in) > MaxMessage || !json.Valid(in) {
		return Request{}, false
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	if dec.Decode(&m) != nil || m == nil {
		return Request{}, false
	}
	if topLevelMembers(in) != len(m) {
		return Request{}, false // a key repeated
	}
	var r Request
	for k, v := range m {
		switch k {
		case "verb":
			s, ok := v.(string)
			if !ok || s != "reload" && s != "stop" && s != "status" {
				return Request{}, false
			}
			r.Verb = s
		case "hurry":
			b, ok := v.(bool)
			if !ok {
				return Request{}, false
			}
			r.Hurry = b
		case "deadline_unix_ms":
			num, ok := v.(json.Number)
			if !ok {
				return Request{}, false
			}
			n, ok := new(big.Int).SetString(string(num), 10)
			if !ok || n.Cmp(minDeadline) < 0 || n.Cmp(maxDeadline) > 0 {
				return Request{}, false
			}
			r.DeadlineUnixMS = n.Int64()
		case "timeout_ms": // the previous release's clients
			num, ok := v.(json.Number)
			if !ok {
				return Request{}, false
			}
			n, ok := new(big.Int).SetString(string(num), 10)
			if !ok || n.Sign() < 0 || n.Cmp(maxTimeoutMS) > 0 {
				return Request{}, false
			}
			r.TimeoutMS = n.Int64()
			if _, both := m["deadline_unix_ms"]; both {
				return Request{}, false
			}
		default:
			return Request{}, false
		}
	}
	if r.Verb == "" || r.Hurry && r.Verb != "reload" {
		return Request{}, false
	}
	return r, true
}

// topLevelMembers counts the members of the JSON object in (which must be
// valid JSON) by counting the colons at depth 1 outside strings.
func topLevelMembers(in []byte) int {
	n, depth, inString, escaped := 0, 0, false, false
	for _, c := range in {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
		case c == ':' && depth == 1:
			n++
		}
	}
	return n
}

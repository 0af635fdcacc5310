package ctlproto

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Request
		err  string
	}{
		{`{"verb":"reload"}`, Request{Verb: "reload"}, ""},
		{`{"verb":"reload","timeout_ms":5000,"hurry":true}` + "\n", Request{Verb: "reload", TimeoutMS: 5000, Hurry: true}, ""},
		{`{"verb":"status"}`, Request{Verb: "status"}, ""},
		{`{"verb":"stop","timeout_ms":1}`, Request{Verb: "stop", TimeoutMS: 1}, ""},
		{``, Request{}, "empty"},
		{"   \n", Request{}, "empty"},
		{`{"verb":"explode"}`, Request{}, "unknown verb"},
		{`{"verb":"reload","x":1}`, Request{}, "unknown field"},
		{`{"verb":"reload"} {"verb":"stop"}`, Request{}, "trailing data"},
		{`{"verb":"reload","timeout_ms":-1}`, Request{}, "out of range"},
		{`{"verb":"reload","timeout_ms":99999999999}`, Request{}, "out of range"},
		{`{"verb":"status","hurry":true}`, Request{}, "hurry applies to reload only"},
		{`[1,2]`, Request{}, "cannot unmarshal"},
		{`{"verb":`, Request{}, "unexpected EOF"},
		{`{"verb":"reload","pad":"` + strings.Repeat("a", MaxMessage) + `"}`, Request{}, "the limit is"},
	} {
		got, err := ParseRequest([]byte(tc.in))
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseRequest(%.40q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseRequest(%.40q) error = %v; want ErrMalformed saying %q", tc.in, err, tc.err)
		}
	}
}

func TestResponseFitsTheLimit(t *testing.T) {
	r := Response{Error: strings.Repeat("x", 3*MaxMessage), Code: "crashed", Status: &Status{PID: 1, State: "serving"}}
	b := r.Marshal()
	if len(b) > MaxMessage {
		t.Fatalf("marshalled response is %d bytes", len(b))
	}
	back, err := ParseResponse(b)
	if err != nil || back.Code != "crashed" || !strings.HasSuffix(back.Error, "...") {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"verb":"reload"}`, `{"verb":"reload","timeout_ms":5000,"hurry":true}`, `{"verb":"status"}`,
		`{"verb":"stop"}`, ``, `{`, `{"verb":"reload","timeout_ms":-5}`, "\x00\xff", `{"verb":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseRequest(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if r != (Request{}) {
				t.Fatalf("rejected request still returned %+v", r)
			}
			return
		}
		// An accepted request is valid and survives a round trip.
		if r.Verb != VerbReload && r.Verb != VerbStop && r.Verb != VerbStatus {
			t.Fatalf("accepted unknown verb %q", r.Verb)
		}
		if r.TimeoutMS < 0 || r.Timeout() > MaxTimeout {
			t.Fatalf("accepted timeout %d", r.TimeoutMS)
		}
		back, err := ParseRequest(r.Marshal())
		if err != nil || back != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, back, err)
		}
	})
}

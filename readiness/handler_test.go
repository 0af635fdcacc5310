package readiness

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	var h Handler
	get := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
		return rec
	}
	if rec := get(); rec.Code != http.StatusOK || rec.Body.String() != "ok\n" {
		t.Fatalf("zero Handler: %d %q, want 200 ok", rec.Code, rec.Body)
	}
	if h.Draining() {
		t.Fatal("zero Handler says draining")
	}
	h.SetDraining()
	h.SetDraining() // idempotent
	rec := get()
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "draining\n" {
		t.Fatalf("draining Handler: %d %q, want 503 draining", rec.Code, rec.Body)
	}
	if rec.Header().Get("Connection") != "close" || !h.Draining() {
		t.Fatalf("draining Handler: Connection %q, Draining %v", rec.Header().Get("Connection"), h.Draining())
	}
}

func TestExtendTimeout(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{10 * time.Second, "EXTEND_TIMEOUT_USEC=10000000"},
		{1500 * time.Microsecond, "EXTEND_TIMEOUT_USEC=1500"},
		{0, "EXTEND_TIMEOUT_USEC=0"},
		{-time.Second, "EXTEND_TIMEOUT_USEC=0"},
	} {
		t.Run(tc.d.String(), func(t *testing.T) {
			if got := ExtendTimeout(tc.d); got != tc.want {
				t.Fatalf("ExtendTimeout(%v) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}

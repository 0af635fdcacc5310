package readiness

import (
	"net/http"
	"sync/atomic"
)

// Handler is an HTTP readiness endpoint for load balancers and
// orchestrators: it answers 200 "ok" while the service serves and 503
// "draining" from the moment SetDraining is called. The zero value serves.
//
// Call SetDraining when draining begins and before any listener stops
// accepting, so that a load balancer learns it before connections are
// refused; a drain.Group does that with its OnDrain hook (and can wait a
// Delay for the balancer's next probe):
//
//	var health readiness.Handler
//	mux.Handle("GET /ready", &health)
//	group.OnDrain(health.SetDraining)
//
// A Handler is safe for concurrent use.
type Handler struct {
	draining atomic.Bool
}

// SetDraining makes the handler answer 503 from now on. Idempotent; it
// never blocks.
func (h *Handler) SetDraining() { h.draining.Store(true) }

// Draining reports whether SetDraining was called.
func (h *Handler) Draining() bool { return h.draining.Load() }

// ServeHTTP answers 200 "ok\n" while serving and 503 "draining\n" (with
// "Connection: close", so that the prober's next check opens a new
// connection, which reaches a generation that serves) once draining.
func (h *Handler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if h.draining.Load() {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("draining\n"))
		return
	}
	w.Write([]byte("ok\n"))
}

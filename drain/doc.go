// Package drain ends a server's work gracefully within one deadline.
//
// Draining is what lets an old generation leave without failing a request:
// it stops accepting (the next generation accepts on the same sockets), lets
// the work in flight finish, closes connections at moments when no client
// can be using them, and only at the deadline cuts what is left, reporting
// how much that was.
//
// This first cut drains HTTP/1.x servers ([HTTP]); every drainer implements
// [Drainer], so the upgrade package, or a Kubernetes pod on SIGTERM, can end
// several servers the same way.
//
// # Why not http.Server.Shutdown alone
//
// Shutdown closes idle keep-alive connections at once. A client that is
// just then sending its next request on such a connection sees it closed
// or reset: the request fails, and only clients that silently retry hide
// it. SetKeepAlivesEnabled(false) has the same race one step later: it
// closes a connection after a response whose headers never announced it.
// [HTTP] instead runs a lame-duck phase: every response written after the
// drain began carries "Connection: close", so the client knows before the
// connection ends and opens its next one to the new generation; a
// connection left idle is closed only after it has stayed idle for
// [HTTP.IdleTimeout] during the drain.
package drain

import (
	"context"
	"time"
)

// Drainer is something that can be drained. Drain stops new work, waits for
// the work in flight until ctx is done, then cuts what is left. It returns
// ctx.Err() if anything had to be cut, and a report either way.
type Drainer interface {
	Drain(ctx context.Context) (Report, error)
}

// Report says how a drain went.
type Report struct {
	// Name names the drained server, for logs.
	Name string
	// Open is the number of connections open when the drain began, plus
	// those accepted while it stopped accepting.
	Open int
	// Ended is the number of connections that ended gracefully: the client
	// closed them, they were closed after a response that said so, or they
	// were closed while idle.
	Ended int
	// Cut is the number of connections closed at the deadline while a
	// request was being read or answered on them.
	Cut int
	// Duration is how long the drain took.
	Duration time.Duration
}

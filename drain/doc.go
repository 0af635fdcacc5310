// Package drain ends a server's work gracefully within one deadline.
//
// Draining is what lets an old generation leave without failing a request:
// it stops accepting (the next generation accepts on the same sockets),
// tells the work in flight to wrap up, lets it finish, closes connections at
// moments when no client can be using them, and only at the deadline cuts
// what is left, reporting how much that was.
//
// Every drainer implements [Drainer]; the deadline is the ctx passed to
// Drain. [Group] drains several in parallel under one deadline and reports
// per server, so the upgrade package, or a Kubernetes pod on SIGTERM, ends
// all of a process's servers the same way:
//
//   - [HTTP]: HTTP/1.x with a lame-duck phase, HTTP/2 over TLS and h2c with
//     a two-phase GOAWAY that refuses no stream a client has sent, and
//     hijacked connections (WebSocket, CONNECT), whose handlers learn
//     through [WrapUp] that they should finish.
//   - [Listener]: a tracking listener for raw TCP (or unix) protocols.
//   - [Stopper]: anything with GracefulStop and Stop, such as a gRPC server,
//     without this module depending on it.
//   - [Packet]: a datagram server (UDP, unixgram) sharing its socket with
//     the next generation: it stops reading without closing, lets the
//     handlers of the datagrams it read answer, then closes; it runs the
//     handlers itself or drains a library that reads it, such as
//     github.com/miekg/dns.
//   - [Router]: a datagram socket shared by generations of a protocol that
//     keeps connections over it (QUIC, HTTP/3): only one generation reads
//     the socket at a time, and it passes each datagram of the other
//     generation's connections to that one, so that a connection is served
//     to its end by the process that holds its state.
//
// Long-lived work (a stream, a WebSocket, a raw connection) cannot be
// drained by waiting alone: each drainer has a WrapUp channel, closed when
// its drain begins, that handlers select on to end their work at a clean
// protocol boundary (a WebSocket close 1001 "going away", the end of a
// gRPC stream, a goodbye line); for [HTTP], [WrapUp] of a request's
// context is closed when its connection's turn comes (see below).
//
// Every client a drain tells to go away reconnects, to the next
// generation, which has only just started. [HTTP], [Listener] (through
// [Listener.WrapUpConn]) and [Stopper] (for gRPC in the clear) tell their
// connections one after another over a spread (250 ms by default) rather
// than all in one instant, so that their reconnections (over TLS, a
// handshake each, a millisecond or more of CPU on both sides) do not queue
// behind each other; a connection whose turn has not come is served as
// before.
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
// [HTTP.IdleTimeout] during the drain. Shutdown also ignores hijacked
// connections (golang/go#17721), which [HTTP] tracks. For HTTP/2 it sends
// a single GOAWAY naming the last stream it has seen, so a stream the
// client opened meanwhile is refused; [HTTP] sends a GOAWAY that refuses
// nothing first and the real one only after the client's round trip. And
// gRPC's
// GracefulStop waits forever on a stream that does not end
// (grpc/grpc-go#2448), which [Stopper] bounds.
package drain

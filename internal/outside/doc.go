// Package outside runs load tools that nobody here wrote — wrk,
// ApacheBench (ab), h2load and dnsperf — and parses what they print into
// typed results, so that a test can drive a server through upgrades and
// assert on the tools' own counts rather than on those of our client
// (internal/loadgen), which shares our assumptions.
//
// Each tool has a config type whose Args method builds its command line
// (zero fields leave the tool's defaults), a Run function bounded by a
// context, and a Parse function for its output. The parsers are strict:
// a summary line that is missing or malformed, a line that appears twice,
// or counts the tool cannot print (see each Parse function) are a
// [*ParseError] that quotes the output, never zeros. A missing tool is an
// error wrapping [exec.ErrNotFound] that names the Debian package to
// install; [Require] turns that into a skip, or a failure when
// HITLESS_REQUIRE_OUTSIDE=1. [Repeat] runs a tool back to back.
//
// The tests that use it are TestWrkThroughUpgrades,
// TestAbKeepAliveThroughUpgrades and TestAbNewConnectionThroughUpgrades in
// examples/http, and TestH2loadH2cThroughUpgrades and
// TestH2loadTLSThroughUpgrades in examples/extra/web, and
// TestDnsperfThroughUpgrades in examples/extra/dns. CI installs the
// packages wrk, apache2-utils, nghttp2-client and dnsperf and sets
// HITLESS_REQUIRE_OUTSIDE=1. What dnsperf counts is explained at the top
// of dnsperf.go.
//
// # What each tool counts as a failure
//
// What follows is what the versions Debian 12 ships (wrk 4.1.0,
// ab 2.3 from Apache 2.4, h2load from nghttp2 1.52) do, read from their
// help, manual pages and sources and checked against captured outputs
// (testdata).
//
// wrk keeps its connections open and sends the next request on one as
// soon as the previous response is complete; it never retries. It counts:
//
//   - connect: a connection it could not open at once (no descriptor, no
//     local port), or a TLS handshake that failed. A refused connection
//     to a plain-HTTP URL is not one: wrk connects without waiting and
//     learns of the refusal when it first writes, so it counts a write
//     error.
//   - read: a read that failed (a reset), a response it could not parse,
//     or a connection that ended before the response was complete —
//     including a keep-alive connection the server closed while wrk's
//     next request was already on its way. wrk then reconnects.
//   - write: a request it could not write (reset, refused, broken pipe).
//   - timeout: a request still unanswered --timeout (default 2 s) after
//     it was sent, found by a periodic check.
//   - "Non-2xx or 3xx responses": responses with a status of 400 or more.
//     They are also counted in the requests; 1xx are not errors.
//
// A connection the server closes after a response that said
// "Connection: close" is no error: wrk opens a new one.
//
// ab (ApacheBench) sends HTTP/1.0 requests, one at a time per client.
// Its "Failed requests" counts failure events, not requests, so one reset
// can count two or three times:
//
//   - Connect: a connect() that failed at once. After more than 10 of
//     them before any success ab aborts the run (no summary).
//   - Receive: a read that failed (a reset, a refused connection); only
//     counted with -r, which this package always passes — without it ab
//     exits at the first one.
//   - Length: a response whose body length differs from the first
//     response's (unless -l). It is ab's only check that a body arrived
//     whole, and without -k the only sign of a connection the server
//     closed without answering (ab reads it as an empty body), so -l
//     hides real failures: a test of a server whose body varies (it
//     names its pid) should allow for the lengths it knows instead.
//   - Exceptions: an error the poller reported on a socket.
//
// "Write errors" are requests ab could not send, and "Non-2xx responses"
// responses whose status does not begin with 2 (3xx included), or whose
// header ab could not read. With -k, a keep-alive connection the server
// closes before sending a byte of the next response is not a failure: ab
// counts nothing and sends the request again on a new connection, so ab -k
// does not see the race wrk counts as a read error.
//
// h2load opens -c connections ("clients"), keeps -m streams in flight on
// each, and never retries a request. Its summary, per its manual:
// succeeded are requests completed with a 2xx or 3xx status; failed
// includes non-successful statuses and errored; errored are failures other
// than HTTP ones (a reset stream, a refused one); timeout is a subset of
// errored. Its --log-file has one line per request it counted as done:
// the time it began sending it, its status, its duration. The status is -1
// for a stream that ended with an error code: reset by the server, refused
// because it was above the last stream ID of the server's GOAWAY, or never
// sent — nghttp2 refuses to send a request still queued when a GOAWAY
// arrives, and h2load, which records the start just before the write,
// logs it with a start time of 0 ([H2loadLogEntry.Sent]).
//
// The accounting in its source (h2load.cc) that a test must know:
//
//   - After a GOAWAY, a client never reconnects. When one of its streams
//     closes, it cannot submit the next request, prints
//     "Process Request Failure:N", counts one request (in duration mode
//     its req_left, which is 1) as failed and errored although it never
//     sent it, and stops once its streams in flight are done. N is the
//     thread's running count of failures at that moment, so the lines
//     show these phantom failures; the clients ended by an upgrade stay
//     idle until the run ends.
//   - A client whose connection ends under it (EOF, reset, no GOAWAY)
//     also stops, and counts its requests in flight, plus the phantom
//     one, as failed and errored. They are not in the log: the log has
//     only streams that closed.
//   - In count mode (-n) the phantom is every request the client had
//     left, and it stays in the summary: a run of 100000 requests that
//     an upgrade crossed after 3619 reports 96381 failed and errored,
//     none of them sent (testdata/h2load_count_upgrade.stdout).
//   - Then, in main(), just before printing, h2load sets total to the
//     number of requests done (in duration mode) and failed to
//     total−succeeded, subtracting the same amount from errored. In
//     duration mode that takes every one of those counts back out: the
//     summary's failed is exactly the log's lines with status -1 (sent
//     or not) or 4xx and 5xx; phantoms and requests lost with their
//     connection are in neither.
//
// So in duration mode, Succeeded+Failed == Total == Done == the lines in
// the log, and a request lost with its connection shows only in
// Started−Done ([H2loadResult.NotDone]), mixed with the requests that
// were in flight when the duration ended (at most -c × -m; none from a
// client a GOAWAY had stopped). A run that never connects exits 0 with a
// summary of zeros and no "Application protocol" line; a test must check
// that traffic flowed.
package outside

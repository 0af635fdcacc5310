// Package queue decides what happens to upgrade requests: which attempt
// carries each one out, which wait, coalesce, are refused by the crash-loop
// back-off, are passed on to a newer generation, or are dropped because
// their requester gave up.
//
// It is a pure state machine: no goroutines, no clock, no I/O. Its owner
// (package upgrade) runs one goroutine that feeds a [Machine] events, each
// with the current time, and carries out the [Action]s each event returns,
// in order. That keeps the subtlest promise of hitless (a burst of requests
// leads to at most two upgrades, and every requester hears exactly once)
// testable with tables instead of real processes, and it replaces the two
// copies of the old loop (before and after Stop) with one.
//
// # The model
//
// At most one attempt exists at a time. It goes through two phases:
//
//   - [Waiting]: it exists but has not started the new process, because
//     the previous generation still drains. A request arriving now is
//     carried out by this attempt (it coalesces), since the new process it
//     will start is still to be chosen.
//   - [Running]: it has started the new process. A request arriving now
//     waits for the next attempt: its sender may have installed a newer
//     binary than the one being started. Requests waiting together share
//     that next attempt.
//
// So a burst of requests leads to at most two attempts. When an attempt
// succeeds, this generation is done ([Exited]): the requests it carried out
// hear nil, and the ones waiting for the next attempt are [Forward]ed to
// the new generation, which carries them out. When it fails, the requests
// it carried out hear its error, and the waiting ones become the next
// attempt, unless the crash-loop back-off ([Config]) refuses them.
//
// A requester that gives up ([Machine.GiveUp]) is forgotten: it never hears
// an outcome, and if it was waiting for an attempt that has not started the
// new process, it is not carried out at all (security review M2: a
// request whose client had timed out was carried out seconds later). A
// request that nobody waits for ([Request.Async], a signal) never gives up.
//
// After [Machine.Exit] (Stop) or a success, every request is refused at
// once, with [control.ErrStopped] or [control.ErrUpgraded].
//
// # Guarantees
//
// Every request that does not give up gets exactly one [Reply] or
// [Forward]; none gets one after it gave up. [Start] is never issued while
// an attempt exists, nor after Exit. [Exited] is final.
package queue

package queue_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/queue"
)

// A burst of requests around one failed attempt: the ones that arrive
// before it starts the new process share its outcome, the ones after it
// share the next attempt, and a success forwards the latecomers.
func ExampleMachine() {
	m := queue.New(queue.Config{CrashLoopAfter: 3, CrashLoopBackoff: time.Minute})
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) // the owner passes time.Now()
	show := func(event string, acts []queue.Action) {
		line := fmt.Sprintf("%-16s", event)
		for _, a := range acts {
			line += fmt.Sprintf(" %v%v", a.Kind, a.IDs)
			if a.Kind == queue.Reply {
				line += fmt.Sprintf(" %v", a.Err)
			}
		}
		fmt.Println(strings.TrimSpace(line))
	}
	crashed := &control.ChildError{Reason: control.ReasonExited, PID: 4242, ExitStatus: 2}

	show("request 1", m.Request(now, queue.Request{ID: 1}))
	show("request 2", m.Request(now, queue.Request{ID: 2, Hurry: true}))
	show("started", m.Started(now))
	show("request 3", m.Request(now, queue.Request{ID: 3}))
	show("signal 4", m.Request(now, queue.Request{ID: 4, Async: true}))
	show("done: failed", m.Done(now, crashed, true))
	show("started", m.Started(now))
	show("request 5", m.Request(now, queue.Request{ID: 5}))
	show("done: ok", m.Done(now, nil, false))
	show("request 6", m.Request(now, queue.Request{ID: 6}))
	fmt.Println(m.Status().Phase, m.Status().Upgraded)
	// Output:
	// request 1        Start[]
	// request 2        Hurry[]
	// started
	// request 3
	// signal 4
	// done: failed     Reply[1 2] hitless: new generation (pid 4242) exited with status 2 before it was ready Start[]
	// started
	// request 5
	// done: ok         Reply[3 4] <nil> Forward[5]
	// request 6        Reply[6] hitless: already upgraded, this generation is exiting
	// Exited true
}

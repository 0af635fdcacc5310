package readiness_test

import (
	"fmt"
	"net/http/httptest"
	"os"

	"github.com/hitlessgo/hitless/readiness"
)

// Outside systemd (NOTIFY_SOCKET unset) notifying is a no-op, so the same
// binary runs under systemd, in a container or from a shell.
func ExampleNotify() {
	os.Unsetenv("NOTIFY_SOCKET")
	sent, err := readiness.Notify(readiness.Ready, readiness.Status("serving"))
	fmt.Println(sent, err)
	// Output: false <nil>
}

// The handler a load balancer polls: 200 while serving, 503 from the moment
// draining begins (drain.Group.OnDrain(h.SetDraining)).
func ExampleHandler() {
	var h readiness.Handler
	probe := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/ready", nil))
		return rec.Code
	}
	fmt.Println(probe())
	h.SetDraining()
	fmt.Println(probe())
	// Output:
	// 200
	// 503
}

package timeline

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv turns the test binary into a child for the sampler tests: the
// one of helpers it names.
const helperEnv = "HITLESS_TIMELINE_TEST_HELPER"

// helpers are the children, by the value of helperEnv; main_linux_test.go
// adds the ones only Linux tests use.
var helpers = map[string]func(){"burn": burn}

func TestMain(m *testing.M) {
	if h := helpers[os.Getenv(helperEnv)]; h != nil {
		h()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// burn spins for at most a minute (the test kills it long before), keeping
// a few MiB touched so that its RSS is plainly above zero.
func burn() {
	mem := make([]byte, 8<<20)
	for i := range mem {
		mem[i] = byte(i)
	}
	end := time.Now().Add(time.Minute)
	x := 0
	for time.Now().Before(end) {
		for i := 0; i < len(mem); i += 4096 {
			x += int(mem[i])
		}
	}
	_ = x
}

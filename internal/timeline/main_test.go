package timeline

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv turns the test binary into a child that burns CPU and holds
// memory until killed, for the sampler test.
const helperEnv = "HITLESS_TIMELINE_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "burn" {
		burn()
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

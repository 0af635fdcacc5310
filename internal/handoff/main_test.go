package handoff

// The test binary is two things. Run normally, it is the test suite.
// Re-executed with roleEnv set, it is a helper process that plays the
// named role (a generation of a service, a child that misbehaves) and
// exits. Handoff needs real processes: tableflip allows one Upgrader per
// process, and starts the next generation by executing os.Args[0] again,
// which in a test is the test binary itself, so a role's child is another
// role of the same binary (the role variable is part of the environment
// tableflip copies, child.go:43-51).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// roleEnv names the role a re-executed test binary plays.
const roleEnv = "HITLESS_HANDOFF_TEST_ROLE"

// roles maps a role's name to what the re-executed binary does in it; the
// result is the process's exit status. Test files add theirs from init:
//
//	func init() { roles["my-role"] = myRole }
//
// Every init has run before TestMain, so the map is complete by then. A
// role does not run the tests, so goleak does not check it; it may leave
// goroutines behind, but must bound every wait, so that a test that gives
// up on it leaves nothing running.
var roles = map[string]func() int{}

func TestMain(m *testing.M) {
	if name, ok := os.LookupEnv(roleEnv); ok {
		os.Exit(playRole(name))
	}
	goleak.VerifyTestMain(m)
}

func playRole(name string) int {
	role, ok := roles[name]
	if !ok {
		names := make([]string, 0, len(roles))
		for n := range roles {
			names = append(names, n)
		}
		slices.Sort(names)
		fmt.Fprintf(os.Stderr, "handoff test: %s=%q names no role (there are: %s)\n",
			roleEnv, name, strings.Join(names, ", "))
		return 2
	}
	return role()
}

// testBinary is the path of this test binary, to be executed again.
func testBinary() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return os.Args[0]
}

// roleEnviron is the environment of a process playing role name: this
// process's, plus extra ("KEY=value"), which wins over it.
//
// A -race binary sleeps a second before it exits (GORACE's
// atexit_sleep_ms, default 1000), which would add a second to every helper
// process and every generation it starts; it is set to 0, keeping any other
// GORACE options.
func roleEnviron(name string, extra ...string) []string {
	env := make([]string, 0, len(os.Environ())+len(extra)+2)
	race := "atexit_sleep_ms=0"
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, roleEnv+"="):
		case strings.HasPrefix(kv, "GORACE="):
			race = strings.TrimPrefix(kv, "GORACE=") + " " + race
		default:
			env = append(env, kv)
		}
	}
	env = append(env, roleEnv+"="+name, "GORACE="+race)
	return append(env, extra...)
}

// roleCmd returns a command that runs this test binary as role name, with
// roleEnviron(name, extra...). It is killed when ctx is done, and Wait
// gives up on its output a second after it has exited (a child generation
// that outlived it and still holds its stdout or stderr makes Wait return
// exec.ErrWaitDelay). Its stdin is /dev/null.
func roleCmd(ctx context.Context, name string, extra ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, testBinary())
	cmd.Env = roleEnviron(name, extra...)
	cmd.WaitDelay = time.Second
	return cmd
}

// writeWhole writes b to path whole or not at all (a temporary file,
// renamed): tests poll for the reports their roles write, and would read
// one half-written.
func writeWhole(path string, b []byte) error {
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

//go:build linux

package listener

import (
	"errors"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/hitlessgo/hitless/readiness"
)

// LISTEN_PIDFDID as systemd 258 sets it, in a real process with its real
// pidfd inode ID: its own ID takes the sockets, another process's takes
// nothing and leaves the descriptors as they were, a malformed one is an
// error; and every time, the variable is gone afterwards.
func TestFromSystemdPIDFDID(t *testing.T) {
	if _, err := readiness.PIDFDID(os.Getpid()); err != nil {
		t.Skipf("no pidfd inode IDs here (pidfs needs Linux 6.9): %v", err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	f3, _ := fileFD(t, tcp.(*net.TCPListener))

	for _, tc := range []struct {
		mode  string
		taken bool
		bad   bool
	}{
		{"own", true, false},
		{"other", false, false},
		{"0", false, true},
		{"+1", false, true},
		{"18446744073709551616", false, true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			rep := runFromSystemdChild(t, []*os.File{f3}, "LISTEN_FDS=1", "LISTEN_FDNAMES=http", pidfdIDEnv+"="+tc.mode)
			if strings.HasPrefix(rep.Err, "no own pidfd ID") {
				t.Fatal(rep.Err)
			}
			if tc.bad {
				if !rep.BadEnv || !strings.Contains(rep.Err, "LISTEN_PIDFDID=") {
					t.Errorf("FromSystemd error %q; want an ErrBadEnvironment naming LISTEN_PIDFDID", rep.Err)
				}
			} else if rep.Err != "" {
				t.Errorf("FromSystemd: %s", rep.Err)
			}
			want := map[string][]int{}
			if tc.taken {
				want = map[string][]int{"http": {3}}
			}
			if !reflect.DeepEqual(rep.Names, want) {
				t.Errorf("took %v, want %v", rep.Names, want)
			}
			// Not taken: not even marked close-on-exec.
			if rep.CloExec[3] != tc.taken || rep.Kind[3] != "a socket" {
				t.Errorf("descriptor 3 afterwards: %s, close-on-exec %v", rep.Kind[3], rep.CloExec[3])
			}
			if len(rep.EnvLeft) > 0 || rep.NetError != "" {
				t.Errorf("left in the environment: %v; loopback afterwards: %s", rep.EnvLeft, rep.NetError)
			}
		})
	}
}

// The ID FromSystemd compares is the process's, as systemd computes it:
// the same through any pidfd of the process, another for any other
// process.
func TestOwnPIDFDID(t *testing.T) {
	id, ok := ownPIDFDID()
	want, err := readiness.PIDFDID(os.Getpid())
	if errors.Is(err, readiness.ErrNoPIDFDID) {
		if ok {
			t.Fatalf("ownPIDFDID = %d, true where readiness.PIDFDID says %v", id, err)
		}
		t.Skipf("no pidfd inode IDs here: %v", err)
	}
	if !ok || err != nil || id != want || id == 0 {
		t.Fatalf("ownPIDFDID = %d, %v; readiness.PIDFDID = %d, %v", id, ok, want, err)
	}
	if ppid, err := readiness.PIDFDID(os.Getppid()); err != nil || ppid == id {
		t.Errorf("parent's ID %d, %v; mine %d", ppid, err, id)
	}
}

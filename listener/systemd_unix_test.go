//go:build unix

package listener

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hitlessgo/hitless/readiness"
)

// fileFD returns the descriptor of a File of c (a duplicate, closed at
// cleanup).
func fileFD(t *testing.T, c interface{ File() (*os.File, error) }) (*os.File, int) {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, int(f.Fd())
}

// fdKind on real descriptors of every kind a bad LISTEN_FDS can point at.
func TestFDKindOnRealDescriptors(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, tcpFD := fileFD(t, ln.(*net.TCPListener))
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "d.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, dgramFD := fileFD(t, pc)
	regular, err := os.Create(filepath.Join(dir, "regular"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	cases := []struct {
		name   string
		fd     int
		socket bool
		what   string // a prefix of what fdKind says
	}{
		{"tcp listener", tcpFD, true, "a socket"},
		{"unix datagram socket", dgramFD, true, "a socket"},
		{"regular file", int(regular.Fd()), false, "a regular file"},
		{"pipe", int(r.Fd()), false, "a pipe or FIFO"},
		{"/dev/null", int(null.Fd()), false, "a character device"},
		{"directory", int(d.Fd()), false, "a directory"},
		{"closed", math.MaxInt32, false, fdNotOpen},
	}
	if runtime.GOOS == "linux" {
		// The runtime's own epoll descriptor: what LISTEN_FDS=20 reached
		// in the review, and closed.
		if fd, ok := runtimeEpollFD(); ok {
			cases = append(cases, struct {
				name   string
				fd     int
				socket bool
				what   string
			}{"the runtime's epoll", fd, false, "a descriptor of no file type (anon_inode:[eventpoll])"})
		}
		cases[2].what = "a regular file (" + regular.Name() + ")"
	}
	for _, tc := range cases {
		socket, what := fdKind(tc.fd)
		if socket != tc.socket || !strings.HasPrefix(what, tc.what) {
			t.Errorf("%s (fd %d): fdKind = %v, %q; want %v, %q…", tc.name, tc.fd, socket, what, tc.socket, tc.what)
		}
	}

	// checkSockets over the same real descriptors: refused, the lowest bad
	// one named, and every descriptor still what it was.
	named := map[string][]int{"http": {tcpFD}, "dgram": {dgramFD}, "file": {int(regular.Fd())}, "gone": {math.MaxInt32}}
	err = checkSockets(named, "4", fdKind)
	if !errors.Is(err, ErrBadEnvironment) || !strings.Contains(err.Error(), fmt.Sprintf("but %d is a regular file", regular.Fd())) ||
		!strings.Contains(err.Error(), "2 of the 4") {
		t.Errorf("checkSockets = %v", err)
	}
	for _, tc := range cases[:4] {
		if socket, _ := fdKind(tc.fd); socket != tc.socket {
			t.Errorf("%s (fd %d) changed after checkSockets", tc.name, tc.fd)
		}
	}
	if err := checkSockets(map[string][]int{"http": {tcpFD}, "dgram": {dgramFD}}, "2", fdKind); err != nil {
		t.Errorf("checkSockets on two sockets = %v", err)
	}
}

// runtimeEpollFD finds the Go runtime's epoll descriptor in /proc/self/fd.
func runtimeEpollFD() (int, bool) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, false
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, _ := os.Readlink("/proc/self/fd/" + e.Name()); target == "anon_inode:[eventpoll]" {
			return fd, true
		}
	}
	return 0, false
}

// childEnv selects, in the test binary started by runFromSystemdChild,
// which scenario TestFromSystemdChild plays.
const childEnv = "HITLESS_LISTENER_FROMSYSTEMD_CHILD"

// pidfdIDEnv selects, in the child, what LISTEN_PIDFDID it sets before
// FromSystemd: "own" (its real pidfd inode ID, as systemd 258 sets it),
// "other" (another process's), or a literal value.
const pidfdIDEnv = "HITLESS_LISTENER_CHILD_PIDFDID"

// childReport is what the child process found.
type childReport struct {
	Err      string
	BadEnv   bool
	Names    map[string][]int  // descriptor numbers by name
	Addrs    map[string]string // the address each one listens on
	CloExec  map[int]bool      // FD_CLOEXEC of descriptors 3 and 4 afterwards
	Kind     map[int]string    // what descriptors 3 and 4 are afterwards
	EnvLeft  []string          // LISTEN_* still in the environment
	NetError string            // a loopback round trip afterwards, as a Set would do it
}

// TestFromSystemdChild is the child of the tests below, not a test: with
// childEnv set, it claims LISTEN_PID, calls FromSystemd on the descriptors
// its parent passed in ExtraFiles (3, 4, …), closes every file it got back,
// as upgrade does with the ones no Listen took, checks that the runtime's
// poller still works, and prints a childReport.
func TestFromSystemdChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		return
	}
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	switch v := os.Getenv(pidfdIDEnv); v {
	case "":
	case "own", "other":
		id, err := readiness.PIDFDID(os.Getpid())
		if err != nil {
			fmt.Printf("\nREPORT {\"Err\":%q}\n", "no own pidfd ID: "+err.Error())
			return
		}
		if v == "other" {
			id++ // pidfs IDs are unique: id+1 is not this process's
		}
		os.Setenv("LISTEN_PIDFDID", strconv.FormatUint(id, 10))
	default:
		os.Setenv("LISTEN_PIDFDID", v)
	}
	got, err := FromSystemd()
	rep := childReport{Names: map[string][]int{}, Addrs: map[string]string{}, CloExec: map[int]bool{}, Kind: map[int]string{}}
	if err != nil {
		rep.Err, rep.BadEnv = err.Error(), errors.Is(err, ErrBadEnvironment)
	}
	for _, fd := range []int{3, 4} {
		flags, ferr := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		rep.CloExec[fd] = ferr == nil && flags&unix.FD_CLOEXEC != 0
		_, rep.Kind[fd] = fdKind(fd)
	}
	for name, files := range got {
		for _, f := range files {
			rep.Names[name] = append(rep.Names[name], int(f.Fd()))
			if ln, err := net.FileListener(f); err == nil {
				rep.Addrs[name] = ln.Addr().String()
				ln.Close()
			}
			f.Close()
		}
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"} {
		if _, ok := os.LookupEnv(v); ok {
			rep.EnvLeft = append(rep.EnvLeft, v)
		}
	}
	if err := loopbackRoundTrip(); err != nil {
		rep.NetError = err.Error()
	}
	b, _ := json.Marshal(rep)
	fmt.Printf("\nREPORT %s\n", b)
}

// loopbackRoundTrip uses the runtime's poller, with a deadline.
func loopbackRoundTrip() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, err = c.Write([]byte("x"))
			c.Close()
		}
		done <- err
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
	if err != nil {
		ln.Close()
		<-done
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Read(make([]byte, 1))
	ln.Close()
	if aerr := <-done; err == nil {
		err = aerr
	}
	return err
}

// runFromSystemdChild runs TestFromSystemdChild in a new process with
// files as descriptors 3, 4, … and the given LISTEN_* variables.
func runFromSystemdChild(t *testing.T, files []*os.File, env ...string) childReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFromSystemdChild$", "-test.count=1", "-test.v")
	// GORACE: a race-enabled child would sleep a second at exit.
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=1", "GORACE=atexit_sleep_ms=0"}, env...)...)
	cmd.ExtraFiles = files
	out, err := cmd.CombinedOutput()
	i := strings.LastIndex(string(out), "\nREPORT ")
	if err != nil || i < 0 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	line, _, _ := strings.Cut(string(out[i+len("\nREPORT "):]), "\n")
	var rep childReport
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Fatalf("child report %q: %v", line, err)
	}
	return rep
}

func TestFromSystemdTakesSockets(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ux, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ux.Close()
	f3, _ := fileFD(t, tcp.(*net.TCPListener))
	f4, _ := fileFD(t, ux.(*net.UnixListener))
	rep := runFromSystemdChild(t, []*os.File{f3, f4}, "LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin")
	if rep.Err != "" {
		t.Fatalf("FromSystemd: %s", rep.Err)
	}
	if want := map[string][]int{"http": {3}, "admin": {4}}; !reflect.DeepEqual(rep.Names, want) {
		t.Errorf("descriptors %v, want %v", rep.Names, want)
	}
	if want := map[string]string{"http": tcp.Addr().String(), "admin": path}; !reflect.DeepEqual(rep.Addrs, want) {
		t.Errorf("addresses %v, want %v", rep.Addrs, want)
	}
	if !rep.CloExec[3] || !rep.CloExec[4] {
		t.Errorf("close-on-exec %v: the next process would inherit them", rep.CloExec)
	}
	if len(rep.EnvLeft) > 0 || rep.NetError != "" {
		t.Errorf("left in the environment: %v; loopback afterwards: %s", rep.EnvLeft, rep.NetError)
	}
}

// L3 of the security review: LISTEN_FDS counts descriptors that are not
// sockets. Nothing may be taken, closed or changed, and the process's own
// descriptors (the poller's above all) must survive.
func TestFromSystemdRefusesWhatIsNotASocket(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	f3, _ := fileFD(t, tcp.(*net.TCPListener))
	regular, err := os.Create(filepath.Join(t.TempDir(), "regular"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()

	for _, tc := range []struct {
		name  string
		files []*os.File
		env   []string
		want  string // in the error
		kind4 string // what descriptor 4 must still be afterwards
	}{
		{"a regular file", []*os.File{f3, regular}, []string{"LISTEN_FDS=2"}, "but 4 is a regular file", "a regular file"},
		{"closed", []*os.File{f3, nil}, []string{"LISTEN_FDS=2"}, "LISTEN_FDS=2 counts descriptors 3 to 4, but 4 is ", ""},
		// The review's reproducer: 20 counted, one passed; the numbers
		// above 3 are free or the runtime's own.
		{"more than were passed", []*os.File{f3}, []string{"LISTEN_FDS=20"}, "LISTEN_FDS=20 counts descriptors 3 to 22, but 4 is ", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := runFromSystemdChild(t, tc.files, tc.env...)
			t.Logf("FromSystemd: %s", rep.Err)
			if !rep.BadEnv || !strings.Contains(rep.Err, tc.want) || !strings.Contains(rep.Err, "no descriptor was taken") {
				t.Errorf("FromSystemd error %q; want an ErrBadEnvironment containing %q", rep.Err, tc.want)
			}
			if len(rep.Names) > 0 {
				t.Errorf("took %v", rep.Names)
			}
			if rep.Kind[3] != "a socket" || rep.CloExec[3] {
				t.Errorf("descriptor 3 afterwards: %s, close-on-exec %v; want the inherited socket, untouched", rep.Kind[3], rep.CloExec[3])
			}
			if tc.kind4 != "" && !strings.HasPrefix(rep.Kind[4], tc.kind4) {
				t.Errorf("descriptor 4 afterwards: %s; want %s", rep.Kind[4], tc.kind4)
			}
			if rep.NetError != "" {
				t.Errorf("loopback round trip afterwards: %s (the runtime lost a descriptor)", rep.NetError)
			}
			if len(rep.EnvLeft) > 0 {
				t.Errorf("left in the environment: %v", rep.EnvLeft)
			}
		})
	}
}

//go:build linux

package readiness

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// skipWithoutPIDFS skips where the kernel has no pidfd inode IDs.
func skipWithoutPIDFS(t *testing.T) uint64 {
	t.Helper()
	id, err := PIDFDID(os.Getpid())
	if errors.Is(err, ErrNoPIDFDID) {
		t.Skipf("no pidfd inode IDs here: %v", err)
	}
	if err != nil || id == 0 {
		t.Fatalf("PIDFDID(self) = %d, %v", id, err)
	}
	return id
}

// The ID as systemd 258 reads it first: the 64-bit handle of
// name_to_handle_at(pidfd, "", AT_EMPTY_PATH) (Linux 6.14 and later),
// computed here without PIDFDID's code. false where the kernel has none.
func handleID(t *testing.T, pid int) (uint64, bool) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil || len(h.Bytes()) != 8 {
		t.Logf("no file handle for a pidfd here (Linux 6.14): %v", err)
		return 0, false
	}
	return binary.NativeEndian.Uint64(h.Bytes()), true
}

func TestPIDFDIDOfSelf(t *testing.T) {
	id := skipWithoutPIDFS(t)
	// Again, and through a pidfd opened here: the ID is the process's.
	again, err := PIDFDID(os.Getpid())
	if err != nil || again != id {
		t.Fatalf("PIDFDID(self) = %d, then %d, %v", id, again, err)
	}
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Ino != id {
		t.Fatalf("fstat of another pidfd of this process: ino %d, %v; PIDFDID %d", st.Ino, err, id)
	}
	// What systemd 258 asks first agrees (what 257 asks is st_ino).
	if h, ok := handleID(t, os.Getpid()); ok && h != id {
		t.Fatalf("name_to_handle_at gives %d, PIDFDID %d: systemd 258 would not recognise this process", h, id)
	}
	if pp, err := PIDFDID(os.Getppid()); err != nil || pp == id {
		t.Fatalf("PIDFDID(parent) = %d, %v; self %d", pp, err, id)
	}
	t.Logf("PIDFDID(self) = %d", id)
}

// pidfdIDChildEnv makes TestPIDFDIDChild print its own ID and wait.
const pidfdIDChildEnv = "HITLESS_READINESS_PIDFDID_CHILD"

// TestPIDFDIDChild is the child of TestPIDFDIDAgreesAcrossProcesses, not a
// test: it prints the ID it finds for itself, then waits for stdin to
// close.
func TestPIDFDIDChild(t *testing.T) {
	if os.Getenv(pidfdIDChildEnv) == "" {
		return
	}
	id, err := PIDFDID(os.Getpid())
	fmt.Printf("ID %d %d %v\n", os.Getpid(), id, err)
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// The parent computes, from the PID, the very ID the process finds for
// itself (what the old generation's MAINPIDFDID= of the new one relies
// on); once the process is gone, its PID gives an error that does not
// claim pidfs is missing.
func TestPIDFDIDAgreesAcrossProcesses(t *testing.T) {
	self := skipWithoutPIDFS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPIDFDIDChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), pidfdIDChildEnv+"=1", "GORACE=atexit_sleep_ms=0")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("child: %v", err)
	}
	theirs, err := PIDFDID(cmd.Process.Pid)
	stdin.Close()
	go func() { // the rest of its output ("PASS"), so that it can exit
		buf := make([]byte, 512)
		for {
			if _, err := stdout.Read(buf); err != nil {
				return
			}
		}
	}()
	if werr := cmd.Wait(); werr != nil {
		t.Fatalf("child: %v", werr)
	}
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "ID" || f[1] != strconv.Itoa(cmd.Process.Pid) || f[3] != "<nil>" {
		t.Fatalf("child said %q", line)
	}
	if err != nil || f[2] != strconv.FormatUint(theirs, 10) || theirs == self {
		t.Fatalf("parent computes %d, %v for the child, which says %s (parent's own: %d)", theirs, err, f[2], self)
	}
	_, err = PIDFDID(cmd.Process.Pid)
	if err == nil || errors.Is(err, ErrNoPIDFDID) || !errors.Is(err, unix.ESRCH) {
		t.Fatalf("PIDFDID of an exited, reaped process: %v; want ESRCH", err)
	}
}

func TestMainPIDFDIDLine(t *testing.T) {
	for id, want := range map[uint64]string{
		1:                    "MAINPIDFDID=1",
		753569:               "MAINPIDFDID=753569",
		18446744073709551615: "MAINPIDFDID=18446744073709551615",
	} {
		if got := MainPIDFDID(id); got != want {
			t.Errorf("MainPIDFDID(%d) = %q, want %q", id, got, want)
		}
	}
}

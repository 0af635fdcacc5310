package upgrade

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
		ce   *ChildError
	}{
		{"terminating", ErrStopped, nil},
		{"already upgraded", ErrUpgraded, nil},
		{"process is not ready yet", ErrNotReady, nil},
		{"child pid=12 exited", ErrChildFailed, &ChildError{Reason: Exited, PID: 12}},
		{"child pid=12 exited: exit status 3", ErrChildFailed, &ChildError{Reason: Exited, PID: 12, ExitStatus: 3}},
		{"child pid=12 exited: signal: segmentation fault (core dumped)", ErrChildFailed, &ChildError{Reason: Crashed, PID: 12, Signal: syscall.SIGSEGV}},
		{"child pid=12 exited: signal: killed", ErrChildFailed, &ChildError{Reason: Crashed, PID: 12, Signal: syscall.SIGKILL}},
		{"new child pid=12 timed out", ErrChildFailed, &ChildError{Reason: TimedOut, PID: 12, Timeout: time.Second}},
		{"can't start child: can't start process /x: exec: no such file", ErrChildFailed, &ChildError{Reason: StartFailed, Detail: "can't start process /x: exec: no such file"}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			err := classify(errors.New(tc.in), time.Second)
			if !errors.Is(err, tc.want) {
				t.Fatalf("classify(%q) = %v, want %v", tc.in, err, tc.want)
			}
			if tc.ce == nil {
				return
			}
			var ce *ChildError
			if !errors.As(err, &ce) || *ce != *tc.ce {
				t.Fatalf("classify(%q) = %#v, want %#v", tc.in, err, tc.ce)
			}
			t.Log(err)
		})
	}
	if err := classify(errors.New("something new"), time.Second); err == nil || errors.Is(err, ErrChildFailed) {
		t.Fatalf("unknown text classified as %v", err)
	}
}

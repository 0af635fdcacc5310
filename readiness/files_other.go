//go:build !unix

package readiness

import (
	"context"
	"errors"
	"os"
	"syscall"
)

var errUnsupported = errors.New("readiness: the notify protocol is not supported on this platform")

// ErrNotifyFull is never returned here.
var ErrNotifyFull = errors.New("systemd is not reading its notify socket (queue full)")

// NotifyWithFiles is a no-op outside systemd, as everywhere; with
// NOTIFY_SOCKET set it fails, since nothing here can send to it.
func NotifyWithFiles(files []syscall.Conn, states ...string) (bool, error) {
	if os.Getenv("NOTIFY_SOCKET") == "" || len(states) == 0 {
		return false, nil
	}
	return false, errUnsupported
}

// Barrier is not supported here; it returns nil, as nothing was sent.
func Barrier(ctx context.Context) error { return nil }

//go:build !unix

package readiness

import (
	"context"
	"errors"
	"syscall"
)

var errNoFiles = errors.New("readiness: passing descriptors is not supported on this platform")

// NotifyWithFiles is not supported here.
func NotifyWithFiles(files []syscall.Conn, states ...string) (bool, error) { return false, errNoFiles }

// Barrier is not supported here; it returns nil, as nothing was sent.
func Barrier(ctx context.Context) error { return nil }

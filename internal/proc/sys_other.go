//go:build !unix

package proc

import "context"

func waitGone(context.Context, int) error { return ErrNotSupported }

func peerClosed(uintptr) (bool, error) { return false, ErrNotSupported }

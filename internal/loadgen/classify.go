package loadgen

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// classify maps a transport error to its failure class. The errno checks
// come first: a reset is not a timeout even when it surfaces from a read
// that had a deadline.
func classify(err error) Class {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return EOF
	case errors.As(err, &ne) && ne.Timeout():
		return Timeout
	default:
		return Other
	}
}

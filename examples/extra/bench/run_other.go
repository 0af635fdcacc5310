//go:build !unix

package main

import (
	"context"
	"errors"
	"io"
)

// bench needs internal/harness, which drives servers with unix signals.
func bench(context.Context, config, io.Writer, io.Writer) error {
	return errors.New("the bench runs on unix systems only")
}

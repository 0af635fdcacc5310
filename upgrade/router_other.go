//go:build !unix

package upgrade

import (
	"errors"
	"os"
)

func seqpacketPair() (ours, theirs *os.File, err error) { return nil, nil, errors.ErrUnsupported }

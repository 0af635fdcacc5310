//go:build !unix

package upgrade

import "errors"

// New fails before a control socket is made here (ErrNotSupported).

func statSocket(string) (socketID, error) { return socketID{}, errors.ErrUnsupported }

func chmodSocket(string, socketID, uint32) error { return errors.ErrUnsupported }

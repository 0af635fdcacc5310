//go:build !unix

package main

import (
	"errors"
	"net"
)

// setReadBuffer is not needed where upgrades are not supported.
func setReadBuffer(net.PacketConn, int) error {
	return errors.New("-read-buffer is supported on unix systems only")
}

//go:build !unix

package loadgen

import "net"

// PeerClosed cannot peek without blocking here, so it never detects a
// close; Config.ReuseCheck has no effect.
func PeerClosed(net.Conn) bool { return false }

//go:build !unix

package loadgen

import "net"

// peerClosed cannot peek without blocking here, so it never detects a
// close; Config.ReuseCheck has no effect.
func peerClosed(net.Conn) bool { return false }

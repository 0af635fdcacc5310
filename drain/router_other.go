//go:build !unix

package drain

import (
	"errors"
	"net"
	"time"
)

// sendNow sends msg as one record, waiting at most a moment.
func sendNow(c *net.UnixConn, msg []byte) error {
	c.SetWriteDeadline(time.Now().Add(time.Millisecond))
	_, err := c.Write(msg)
	return err
}

func setsockoptInt(uintptr, int, int) error { return errors.ErrUnsupported }

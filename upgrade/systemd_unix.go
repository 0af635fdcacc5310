//go:build unix

package upgrade

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// monotonicUsec is the MONOTONIC_USEC= line that goes with RELOADING=1
// (systemd 253+, Type=notify-reload).
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return ""
	}
	return fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000)
}

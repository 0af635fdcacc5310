package readiness

import (
	"strconv"
	"time"
)

// ExtendTimeout returns an EXTEND_TIMEOUT_USEC= line: it asks systemd to
// extend the timeout of the current state (start-up, reload or stop) so
// that it ends no sooner than d from now; the service must send another
// within d to extend it further (sd_notify(3), systemd 236 and later).
// A long drain sends it periodically, for example from drain.Group's
// Heartbeat, so that TimeoutStopSec need not cover the worst case.
// Negative d counts as zero.
func ExtendTimeout(d time.Duration) string {
	return "EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(max(d, 0).Microseconds(), 10)
}

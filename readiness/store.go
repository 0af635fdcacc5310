package readiness

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// State lines of the file descriptor store and the watchdog
// (sd_notify(3)).
const (
	// Watchdog is the keep-alive ping of WatchdogSec=.
	Watchdog = "WATCHDOG=1"
	// FDStore asks systemd to keep the attached descriptors (FDSTORE=1).
	FDStore = "FDSTORE=1"
	// FDStoreRemove asks systemd to drop the stored descriptors named by
	// an FDName line.
	FDStoreRemove = "FDSTOREREMOVE=1"
)

// ErrBadFDName is returned for names systemd would refuse in FDNAME=.
var ErrBadFDName = errors.New("readiness: bad FDNAME")

// maxFDName is the longest name systemd keeps (FDNAME_MAX).
const maxFDName = 255

// FDName returns an FDNAME= line, which names the descriptors of an
// FDSTORE=1 or FDSTOREREMOVE=1 message; they come back under that name in
// LISTEN_FDNAMES. systemd accepts at most 255 bytes of printable ASCII
// (space to '~') without ':' (sd_notify(3); fdname_is_valid in systemd's
// source), and ignores a name that breaks those rules: the descriptors
// would then be stored as "stored". FDName refuses such names, and the
// empty one too, which systemd accepts but which comes back in
// LISTEN_FDNAMES as an empty field, indistinguishable from an unnamed
// descriptor.
func FDName(name string) (string, error) {
	if name == "" || len(name) > maxFDName {
		return "", fmt.Errorf("%w %q: 1 to %d characters", ErrBadFDName, name, maxFDName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' || c == ':' {
			return "", fmt.Errorf("%w %q: only printable ASCII without ':'", ErrBadFDName, name)
		}
	}
	return "FDNAME=" + name, nil
}

// ErrBadWatchdog is returned by WatchdogIntervalErr when WATCHDOG_USEC is
// set but is not a number of microseconds a time.Duration can hold.
var ErrBadWatchdog = errors.New("readiness: bad WATCHDOG_USEC")

// maxWatchdogUsec is the largest WATCHDOG_USEC a time.Duration can hold
// (about 292 years); a larger one would overflow into a negative interval,
// which time.NewTicker refuses with a panic (security review 2026-12-01,
// L2).
const maxWatchdogUsec = math.MaxInt64 / int64(time.Microsecond)

// MinWatchdogInterval is the shortest interval WatchdogInterval returns.
// systemd wants a ping at least every WATCHDOG_USEC, and pinging at half
// of that, as sd_watchdog_enabled(3) advises, would for WATCHDOG_USEC=1
// send a datagram every 500 ns: a busy loop (security review 2026-12-01,
// L2). At 10 ms the pings cost nothing measurable (100 a second at most),
// and every WatchdogSec= of 20 ms or more is served exactly as asked. A
// shorter one is below what a loaded machine can promise any process
// (scheduling delays alone reach milliseconds); systemd then sees pings
// less often than it asked for and does what WatchdogSec= says, instead of
// getting a process that spins. A 100 ms floor would also fail a
// WatchdogSec= between 100 and 200 ms, which can be met.
const MinWatchdogInterval = 10 * time.Millisecond

// WatchdogInterval returns how often systemd expects Watchdog pings: half
// of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises, but never less than
// MinWatchdogInterval. It returns false when nothing should ping: when
// WATCHDOG_USEC is unset or empty, and when it is not a whole number of
// microseconds from 1 to 9223372036854775 (zero, negative, not a number,
// or more than a time.Duration holds). Whenever it returns true, the
// interval is positive. WatchdogIntervalErr tells these cases apart.
//
// Unlike sd_watchdog_enabled it does not look at WATCHDOG_PID at all, not
// even to check that it is a number: the variable names the first
// generation, while after hitless upgrades the pings must come from
// whichever generation is the main PID now. Only the main process should
// ping.
func WatchdogInterval() (time.Duration, bool) {
	d, err := WatchdogIntervalErr()
	return d, err == nil && d > 0
}

// WatchdogIntervalErr is WatchdogInterval with the reason:
//   - (0, nil): WATCHDOG_USEC is unset or empty; the unit has no watchdog.
//   - (0, err): WATCHDOG_USEC is set but is not a decimal number from 1 to
//     9223372036854775 (surrounding white space is allowed); err wraps
//     ErrBadWatchdog and quotes the value. Nothing should ping.
//   - (d, nil): ping every d, which is positive.
//
// It reads the environment only, and is safe for concurrent use.
func WatchdogIntervalErr() (time.Duration, error) {
	raw := os.Getenv("WATCHDOG_USEC")
	if raw == "" {
		return 0, nil
	}
	usec, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
	if err != nil || usec <= 0 || usec > maxWatchdogUsec {
		return 0, fmt.Errorf("%w: WATCHDOG_USEC=%q, want microseconds from 1 to %d", ErrBadWatchdog, raw, maxWatchdogUsec)
	}
	return max(time.Duration(usec)*time.Microsecond/2, MinWatchdogInterval), nil
}

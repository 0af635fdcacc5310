package readiness

import (
	"errors"
	"fmt"
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

// FDName returns an FDNAME= line, which names the descriptors of an
// FDSTORE=1 or FDSTOREREMOVE=1 message; they come back under that name in
// LISTEN_FDNAMES. systemd accepts at most 255 printable ASCII characters
// without ':'.
func FDName(name string) (string, error) {
	if name == "" || len(name) > 255 {
		return "", fmt.Errorf("%w %q: 1 to 255 characters", ErrBadFDName, name)
	}
	for _, r := range name {
		if r <= ' ' || r > '~' || r == ':' {
			return "", fmt.Errorf("%w %q: only printable ASCII without spaces or ':'", ErrBadFDName, name)
		}
	}
	return "FDNAME=" + name, nil
}

// WatchdogInterval returns how often systemd expects Watchdog pings (half
// of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises), and false when the
// unit has no watchdog.
//
// Unlike sd_watchdog_enabled it does not compare WATCHDOG_PID with this
// process: the variable names the first generation, while after hitless
// upgrades the pings must come from whichever generation is the main PID
// now. Only the main process should ping.
func WatchdogInterval() (time.Duration, bool) {
	usec, err := strconv.ParseInt(strings.TrimSpace(os.Getenv("WATCHDOG_USEC")), 10, 64)
	if err != nil || usec <= 0 {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond / 2, true
}

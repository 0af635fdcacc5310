package readiness

import (
	"strconv"
	"strings"
)

// State lines of the notify protocol, as documented in sd_notify(3).
const (
	// Ready tells systemd that start-up (or a reload) has finished.
	Ready = "READY=1"
	// Stopping tells systemd that the service is beginning to shut down.
	Stopping = "STOPPING=1"
	// Reloading tells systemd that the service is reloading (upgrading);
	// it must be followed by Ready once the reload has finished.
	Reloading = "RELOADING=1"
)

// Status returns a STATUS= line: free text an operator sees in
// `systemctl status`. Newlines would end the line early and are replaced.
func Status(text string) string {
	return "STATUS=" + strings.ReplaceAll(text, "\n", " ")
}

// MainPID returns a MAINPID= line, which tells systemd which process is the
// service's main process from now on.
func MainPID(pid int) string {
	return "MAINPID=" + strconv.Itoa(pid)
}

// Notify sends the given state lines to systemd in one datagram.
//
// It reports whether the message was sent:
//   - (false, nil): NOTIFY_SOCKET is unset, the process does not run under
//     systemd (or under a unit with notify support); nothing was sent.
//   - (false, err): NOTIFY_SOCKET is set but sending failed.
//   - (true, nil): the message was handed to the notify socket.
//
// Notify is safe for concurrent use. It does not unset NOTIFY_SOCKET, so
// child processes (a new generation) can notify too. It never blocks for
// long: when systemd does not read its notify socket, Notify gives up
// after a second with an error wrapping ErrNotifyFull.
func Notify(states ...string) (bool, error) {
	return NotifyWithFiles(nil, states...)
}

// Package readiness tells the world what state a service is in.
//
// It speaks systemd's notify protocol (sd_notify(3)): [Notify] sends state
// lines such as [Ready] and [Stopping] to the socket named by
// NOTIFY_SOCKET, and [NotifyWithFiles] attaches descriptors for systemd's
// file descriptor store. Outside systemd, where NOTIFY_SOCKET is unset,
// every call is a documented no-op, so the same binary runs unchanged under
// systemd, in a container or from a shell. For load balancers, [Handler]
// answers 200 while serving and 503 once draining.
//
// A unit that lets a hitless service hand its main PID to the next
// generation needs NotifyAccess=all, because the new generation, not
// systemd's own child, reports READY=1 and MAINPID=. Reload and stop go
// through the service's control socket (upgrade.Options.ControlSocket):
// hitless reload waits for the upgrade's outcome and fails when the new
// version did, where kill -HUP would return before anything is known; and
// hitless stop lets the process drain, where systemd 252 would SIGKILL a
// main process that is not its own child, as it is after an upgrade. The
// lines that matter, from the shipped unit
// examples/systemd/hitless-http.service (annotated in docs/systemd.md),
// for a service called app:
//
//	[Service]
//	Type=notify
//	NotifyAccess=all
//	RuntimeDirectory=app
//	ExecStart=/usr/local/bin/app
//	ExecReload=/usr/local/bin/hitless reload -socket /run/app/control.sock -timeout 80s
//	TimeoutStartSec=90s
//	ExecStop=/usr/local/bin/hitless stop -socket /run/app/control.sock -timeout 50s
//	TimeoutStopSec=60s
package readiness

// Package readiness tells the world what state a service is in.
//
// This first cut speaks systemd's notify protocol (sd_notify(3)): [Notify]
// sends state lines such as [Ready] and [Stopping] to the socket named by
// NOTIFY_SOCKET. Outside systemd, where NOTIFY_SOCKET is unset, every call is
// a documented no-op, so the same binary runs unchanged under systemd, in a
// container or from a shell.
//
// A unit that lets a hitless service hand its main PID to the next generation
// needs NotifyAccess=all, because the new generation, not systemd's own
// child, reports READY=1 and MAINPID=:
//
//	[Service]
//	Type=notify
//	NotifyAccess=all
//	ExecStart=/usr/local/bin/app
//	ExecReload=/bin/kill -HUP $MAINPID
package readiness

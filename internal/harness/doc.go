// Package harness drives a server binary through hitless upgrades, for
// process-level tests, the demo and benchmarks.
//
// The server is any program that takes -addr and -pidfile (or whatever
// Config.Args says), writes its pid to the pid file (atomically, by rename)
// when it is ready, upgrades on SIGHUP by starting the next generation
// itself, and drains and exits 0 on SIGTERM. The harness never learns about
// generations from the server other than through the pid file and signals,
// so it drives the library's examples and the plain tableflip baseline the
// same way.
//
// Every generation after the first is a child of the one before, which then
// exits, so it would be reparented to init and its exit status lost. On
// Linux the harness makes its process a child subreaper (prctl
// PR_SET_CHILD_SUBREAPER): orphaned generations are reparented to it, and it
// reaps them with wait4(pid, WNOHANG), so an upgrade's old generation reports
// a real exit status and nothing is left as a zombie. Elsewhere orphans go to
// init (launchd), their exit is seen with kill(pid, 0), and their status is
// unknown ([ErrNotReaped]).
//
// All waits poll every 5 ms and are bounded by a context; the harness
// starts no goroutines, so tests that use it stay goleak-clean.
//
// The package is for unix systems; on others it has only the build
// helpers ([Build], [ModuleRoot], [FreeTCPAddr]).
package harness

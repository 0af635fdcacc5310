// Package upgrade gives a Go server hitless upgrades: a new version of the
// binary replaces the running one without refusing a connection, resetting
// one, or failing a request.
//
// # The model
//
// One [Upgrader] per process runs the life of one generation:
//
//  1. [New] takes over the listening sockets the previous generation handed
//     down (none on a cold start); [Upgrader.Listen] returns each by its
//     logical name, inherited or freshly bound.
//  2. The application starts serving, then [Upgrader.Ready] (or
//     [Upgrader.Run], which calls it) writes the PID file and tells the
//     previous generation, which stops accepting and drains, and systemd.
//  3. [Upgrader.Upgrade] (on SIGHUP with [Upgrader.HandleSignals]) starts
//     the binary at os.Args[0] again, hands it the sockets and waits until
//     it is ready. If it crashes, exits, or is not ready within
//     Options.UpgradeTimeout, it is killed, Upgrade returns a *ChildError
//     saying which, and this generation serves on untouched.
//  4. Once the new generation is ready, [Upgrader.Exit] closes and Run
//     drains this generation's servers (see package drain) and returns;
//     main returns and the process exits.
//
// The listening sockets are shared by both generations during the overlap,
// so connections queued on them are accepted by whichever is accepting; the
// old generation stops accepting only after the new one is ready.
//
// # A minimal main
//
//	upg, err := upgrade.New(upgrade.Options{PIDFile: "/run/app.pid"})
//	if err != nil {
//		return err
//	}
//	defer upg.Stop()
//	defer upg.HandleSignals()() // SIGHUP: upgrade; SIGTERM, SIGINT: drain and stop
//
//	ln, err := upg.Listen(ctx, "http", "tcp", ":8080")
//	if err != nil {
//		return err
//	}
//	srv := &drain.HTTP{Server: &http.Server{Handler: mux}}
//	go srv.Serve(ln)
//	return upg.Run(ctx, srv) // ready; wait for upgrade or stop; drain
//
// # Under systemd
//
// The new generation claims the main PID (MAINPID= with READY=1), which
// systemd accepts only with NotifyAccess=all:
//
//	[Service]
//	Type=notify
//	NotifyAccess=all
//	ExecStart=/usr/local/bin/app
//	ExecReload=/bin/kill -HUP $MAINPID
//	TimeoutStopSec=60
//
// # Limits
//
// Only one Upgrader may exist per process (New returns ErrSingleton after
// the first): the sockets are handed down per process. Upgrades are
// supported on Linux and other unix systems; on Windows New returns
// ErrNotSupported.
package upgrade

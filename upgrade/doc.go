// Package upgrade gives a Go server hitless upgrades: a new version of the
// binary replaces the running one without refusing a connection, resetting
// one, or failing a request.
//
// # The model
//
// One [Upgrader] per process runs the life of one generation:
//
//  1. [New] takes over the sockets the previous generation handed down
//     (none on a cold start); [Upgrader.Listen] (stream sockets) and
//     [Upgrader.ListenPacket] (UDP and unixgram) return each by its logical
//     name, inherited, from systemd, or freshly bound; [Upgrader.ListenRouted]
//     gives a UDP socket for a protocol with connections over it (QUIC) as
//     a drain.Router, which passes each datagram to the generation that owns
//     its connection. Files and state the
//     previous generation offered are taken by name with [Upgrader.File]
//     and [Upgrader.State].
//  2. The application starts serving, then [Upgrader.Ready] (or
//     [Upgrader.Run], which calls it) writes the PID file and tells the
//     previous generation, which stops accepting and drains, and systemd.
//  3. [Upgrader.Upgrade] (on SIGHUP with [Upgrader.HandleSignals], or
//     `hitless reload` on the control socket) starts the binary at
//     os.Args[0] again, hands it the sockets and waits until it is ready.
//     If it crashes, exits, or is not ready within Options.UpgradeTimeout,
//     it is killed, Upgrade returns a *ChildError saying which, and this
//     generation serves on untouched.
//  4. Once the new generation is ready, [Upgrader.Exit] closes and Run
//     drains this generation's servers (see package drain), releases
//     everything and returns; main returns and the process exits.
//  5. Under [Upgrader.RunFunc], if the new generation dies while this one
//     still drains, this one takes the service back: it calls its serve
//     function again on the same sockets (their queues kept what arrived
//     meanwhile), tells systemd it is the main process again, and serves
//     until it is upgraded or stopped. [Upgrader.Rollback] (`hitless
//     rollback`) starts the previous generation's build again, from the
//     file it ran, whatever the deploy has put at its path since.
//
// The sockets are shared by both generations during the overlap, so
// connections queued on them are accepted, and datagrams read, by whichever
// is accepting or reading; the old generation stops only after the new one
// is ready, and a generation that is not ready yet neither accepts nor
// reads.
//
// Options.Observer hears of every upgrade, failure, take-back and drain,
// with counters that continue across generations; [Upgrader.Status] (and
// `hitless status`) shows the history of the last upgrades.
//
// The mechanics live below this package: internal/handoff starts the next
// generation and talks to it (its PID, its stderr while it starts, whether
// the two speak the same handoff version, when it dies), internal/queue decides what
// happens to each request to upgrade, and package control carries the
// control socket's protocol.
//
// # A minimal main
//
//	upg, err := upgrade.New(upgrade.Options{PIDFile: "/run/app/app.pid", ControlSocket: "/run/app/control.sock"})
//	if err != nil {
//		return err
//	}
//	defer upg.Stop()
//	defer upg.HandleSignals()() // SIGHUP: upgrade; SIGTERM, SIGINT: drain and stop
//
//	// Ready; wait for upgrade or stop; drain. serve is called again at a
//	// take-back.
//	return upg.RunFunc(ctx, func(ctx context.Context) ([]drain.Drainer, error) {
//		ln, err := upg.Listen(ctx, "http", "tcp", ":8080")
//		if err != nil {
//			return nil, err
//		}
//		srv := &drain.HTTP{Server: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}}
//		go srv.Serve(ln)
//		return []drain.Drainer{srv}, nil
//	})
//
// # Under systemd
//
// This is the unit the project ships and tests (examples/systemd): reload
// and stop go through the control socket, so that `systemctl reload` fails
// when the new version failed, and `systemctl stop` drains after any number
// of upgrades (systemd 252 would SIGKILL a main process that is not its own
// child). The new generation claims the main PID itself, which systemd
// accepts only with NotifyAccess=all:
//
//	[Service]
//	Type=notify
//	NotifyAccess=all
//	RuntimeDirectory=app
//	RuntimeDirectoryPreserve=yes
//	ExecStart=/usr/local/bin/app -control /run/app/control.sock
//	ExecReload=/usr/local/bin/hitless reload -socket /run/app/control.sock -timeout 80s
//	ExecStop=/usr/local/bin/hitless stop -socket /run/app/control.sock -timeout 50s
//	TimeoutStartSec=90s
//	TimeoutStopSec=60s
//
// # Limits
//
// Only one Upgrader may exist per process (New returns ErrSingleton after
// the first, even after Stop): the sockets are handed down per process.
// Upgrades are supported on Linux and other unix systems; on Windows New
// returns ErrNotSupported.
package upgrade

// Package control is a running hitless service's control socket: the
// client that `hitless reload|stop|status` use, the server a service runs
// (package upgrade runs one when Options.ControlSocket is set), and the
// errors and status that cross it.
//
// A request is one verb, and its answer says how it ended:
//
//   - reload: upgrade to the binary on disk and wait until the new
//     generation serves, or say why it did not (a *ChildError, a
//     *BackoffError, ErrStopped, ...). The old generation keeps serving
//     when it failed.
//   - stop: drain and stop; the client waits until the process is gone.
//   - status: the serving generation's [Status].
//
// The same verbs are Go functions, [Client.Reload], [Client.Stop] and
// [Client.Status], so a service can offer them as its own subcommands:
//
//	err := control.Client{Socket: "/run/app/control.sock"}.Reload(ctx)
//	var ce *control.ChildError
//	if errors.As(err, &ce) {
//		log.Printf("the new version failed (%v); the old one still serves", ce.Reason)
//	}
//
// # Who is served
//
// Only peers that run as the service's user, or as root, are served. The
// kernel's record of the peer (SO_PEERCRED on Linux, LOCAL_PEERCRED on
// macOS and FreeBSD) decides, right after the connection is accepted and
// before anything is read from it, so the socket file's mode is only a
// first fence; an abstract socket ("@name" on Linux) has no file mode, and
// this check is its only one. Where peers cannot be identified, nobody is
// served.
//
// The client checks the server too: it believes only a server that runs
// as its own user, as root, or as the owner of the socket file when that
// file lies in directories only its owner and root can write. Put the
// socket in such a directory (systemd's RuntimeDirectory= makes one), so
// that an operator's `sudo hitless status` can trust a service running as
// its own user:
//
//	[Service]
//	Type=notify
//	NotifyAccess=all
//	User=app
//	RuntimeDirectory=app
//	RuntimeDirectoryPreserve=yes
//	ExecStart=/usr/local/bin/app -control /run/app/control.sock
//	ExecReload=/usr/local/bin/hitless reload -socket /run/app/control.sock -timeout 80s
//	ExecStop=/usr/local/bin/hitless stop -socket /run/app/control.sock -timeout 50s
//	TimeoutStopSec=60s
//
// # Requests the requester gave up
//
// Every request carries its requester's deadline, and a request read after
// it, for example one that waited in the listen backlog while the service
// could not accept, is answered but not carried out. A reload whose
// requester closes the connection while it waits is given up too (its
// Handler's ctx is cancelled), and so is a reload or stop whose requester
// closed the connection before it was read. A client must therefore keep
// the connection open, both ways, until it has read the answer.
//
// The wire format is internal: one JSON line each way, at most 4096 bytes.
// Use Client rather than speaking it.
package control

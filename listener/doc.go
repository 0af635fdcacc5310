// Package listener gives a server its listening sockets by stable logical
// name ("http", "admin"), whichever generation of the process it is.
//
// A [Set] returns, for each name, the socket the previous generation handed
// over if it is still bound to the configured address, and otherwise binds a
// new one. Sockets are identified by name, not by the text of their address,
// so "localhost:8080" and "127.0.0.1:8080" in two versions of a config file
// are the same listener, and changing the port of "http" between versions
// binds the new port instead of silently serving the old one.
//
// Unix sockets follow a strict unlink discipline: a generation that hands a
// socket over never removes its file; a stale file left behind by a crashed
// process does not stop a cold start; a live socket of another process is
// never stolen; and [Set.Unlink] removes a file only while it is still the
// one this set serves.
package listener

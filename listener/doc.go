// Package listener gives a server its sockets by stable logical name
// ("http", "admin", "dns"), whichever generation of the process it is:
// listening sockets (Set.Listen: tcp, tcp4, tcp6, unix) and datagram
// sockets (Set.ListenPacket: udp, udp4, udp6, unixgram), in one namespace.
//
// A [Set] returns, for each name, the socket the previous generation handed
// over if it is still bound to the configured address, else one systemd
// passed under that name (socket activation or the fd store) of the right
// type and address, and otherwise binds a new one. Sockets are identified
// by name, not by the text of their address, so "localhost:8080" and
// "127.0.0.1:8080" in two versions of a config file are the same socket,
// and changing the port of "http" between versions binds the new port
// instead of silently serving the old one.
//
// Unix and unixgram sockets follow a strict unlink discipline: a
// generation that hands a socket over never removes its file; a stale file
// left behind by a crashed process does not stop a cold start; a live
// socket of another process is never stolen; and [Set.Unlink] removes a
// file only while it is still the one this set serves.
//
// A datagram socket is shared by two generations while they overlap, and
// the kernel gives each datagram to whichever reads it first. That is safe
// for protocols whose datagrams stand alone (DNS, syslog, statsd), not for
// ones whose packets belong to a connection held by one generation (QUIC).
package listener

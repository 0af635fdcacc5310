package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// Handoff carries listening and datagram sockets from one generation of a
// process to the next, by logical name. The upgrade package supplies one; a Set without a
// Handoff binds every listener anew, which is what a service that is never
// upgraded in place (for example one in Kubernetes) wants.
type Handoff interface {
	// Listener returns the listener the previous generation handed over
	// under name, or nil.
	Listener(name string) (net.Listener, error)
	// AddListener records ln so that it is handed to the next generation
	// under name. It must not remove a unix socket's file: only Set.Unlink
	// decides that.
	AddListener(name string, ln net.Listener) error
	// PacketConn returns the datagram socket the previous generation
	// handed over under name, or nil.
	PacketConn(name string) (net.PacketConn, error)
	// AddPacketConn records pc so that it is handed to the next
	// generation under name. It must not remove a unixgram socket's
	// file either.
	AddPacketConn(name string, pc net.PacketConn) error
}

// Errors callers can match with errors.Is.
var (
	// ErrDuplicateName is returned when a name is listened on twice in one
	// Set, by Listen or ListenPacket: the two share one namespace.
	ErrDuplicateName = errors.New("listener: name already in use in this set")
	// ErrBadName is returned for names outside [A-Za-z0-9._-]{1,64}.
	ErrBadName = errors.New("listener: bad name")
	// ErrUnsupportedNetwork is returned for networks other than tcp, tcp4,
	// tcp6 and unix (Listen) or udp, udp4, udp6 and unixgram
	// (ListenPacket).
	ErrUnsupportedNetwork = errors.New("listener: unsupported network")
	// ErrLiveSocket is returned when a unix socket path is served by a live
	// process that is not our previous generation. It wraps EADDRINUSE.
	ErrLiveSocket = fmt.Errorf("listener: a live process listens on this unix socket: %w", syscall.EADDRINUSE)
	// ErrNotSocket is returned when a unix socket path exists and is not a
	// socket; the file is left alone.
	ErrNotSocket = errors.New("listener: path exists and is not a socket")
)

// Error describes a failure to provide one named socket.
type Error struct {
	Name, Network, Addr string
	Err                 error
}

func (e *Error) Error() string {
	return fmt.Sprintf("listener %q (%s %s): %v", e.Name, e.Network, e.Addr, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// names are also used as FDNAME= in systemd's fd store, which rejects
// colons and control characters; keep them plain.
var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Set provides the named sockets of one generation: listeners (Listen) and
// datagram sockets (ListenPacket), in one namespace. The zero value binds
// every socket anew; set Handoff to inherit from a previous generation.
// A Set is safe for concurrent use.
type Set struct {
	// Handoff, if not nil, supplies sockets handed over by the previous
	// generation and receives the ones to hand to the next.
	Handoff Handoff
	// ListenConfig is used to bind new sockets.
	ListenConfig net.ListenConfig
	// Systemd, if set, supplies sockets systemd passed by name (see
	// FromSystemd): socket activation, or the file descriptor store after
	// a restart. Listen and ListenPacket take one when no previous
	// generation handed a socket over and it is of the right type
	// (ListenStream= for Listen, ListenDatagram= for ListenPacket) and
	// bound to the configured address, and remove it from the map; what
	// is left after the last of them was not used, and is the caller's to
	// close.
	Systemd map[string][]*os.File

	mu      sync.Mutex
	entries map[string]*entry
	retired []*entry // of earlier lives (Reopen), closed with the rest
}

// entry is one named socket: a listener or a datagram socket, as its
// network says.
type entry struct {
	network, addr string
	ln            net.Listener   // set for a stream network
	pc            net.PacketConn // set for a datagram network
	inherited     bool
	fromSystemd   bool
	file          *unixFile // nil unless a unix socket file this service owns
}

// datagram reports whether network is one of ListenPacket's.
func datagram(network string) bool {
	switch network {
	case "udp", "udp4", "udp6", "unixgram":
		return true
	}
	return false
}

// local is the address the socket is bound to, or nil if it has none.
func (e *entry) local() net.Addr {
	if e.pc != nil {
		return e.pc.LocalAddr()
	}
	if e.ln != nil {
		return e.ln.Addr()
	}
	return nil
}

// open binds a new socket at e's address.
func (e *entry) open(ctx context.Context, lc *net.ListenConfig) (err error) {
	if datagram(e.network) {
		e.pc, err = lc.ListenPacket(ctx, e.network, e.addr)
	} else {
		e.ln, err = lc.Listen(ctx, e.network, e.addr)
	}
	return err
}

func (e *entry) close() error {
	if e.pc != nil {
		return e.pc.Close()
	}
	if e.ln != nil {
		return e.ln.Close()
	}
	return nil
}

// Listen returns the listener named name, bound to addr on network ("tcp",
// "tcp4", "tcp6" or "unix"). It is inherited from the previous generation
// when that one handed over a listener under the same name that is bound to
// the same address; failing that, it is one systemd passed under that name
// (Set.Systemd) bound there; otherwise it is bound anew. Errors are of type
// *Error and wrap the cause (for example syscall.EADDRINUSE or
// ErrLiveSocket).
//
// ctx bounds only the binding of a new socket.
func (s *Set) Listen(ctx context.Context, name, network, addr string) (net.Listener, error) {
	if datagram(network) {
		return nil, &Error{Name: name, Network: network, Addr: addr,
			Err: fmt.Errorf("%w %q for Listen: it is a datagram network, use ListenPacket", ErrUnsupportedNetwork, network)}
	}
	e, err := s.provide(ctx, name, network, addr)
	if err != nil {
		return nil, err
	}
	return e.ln, nil
}

// provide does the work of Listen and ListenPacket: network says which.
func (s *Set) provide(ctx context.Context, name, network, addr string) (*entry, error) {
	fail := func(err error) (*entry, error) {
		return nil, &Error{Name: name, Network: network, Addr: addr, Err: err}
	}
	if !validName.MatchString(name) {
		return fail(fmt.Errorf("%w %q: want 1 to 64 of A-Z a-z 0-9 . _ -", ErrBadName, name))
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		if _, err := net.ResolveTCPAddr(network, addr); err != nil {
			return fail(err)
		}
	case "udp", "udp4", "udp6":
		if _, err := net.ResolveUDPAddr(network, addr); err != nil {
			return fail(err)
		}
	case "unix", "unixgram":
		if addr == "" {
			return fail(errors.New("empty unix socket path"))
		}
	default:
		return fail(fmt.Errorf("%w %q: want tcp, tcp4, tcp6 or unix (Listen), or udp, udp4, udp6 or unixgram (ListenPacket)", ErrUnsupportedNetwork, network))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[name]; ok {
		return fail(ErrDuplicateName)
	}

	e, err := s.inherit(name, network, addr)
	if err != nil {
		return fail(err)
	}
	if e == nil {
		e = s.fromSystemd(name, network, addr)
	}
	if e == nil {
		if e, err = s.bind(ctx, network, addr); err != nil {
			return fail(err)
		}
	}
	if s.Handoff != nil && !e.inherited {
		if e.pc != nil {
			err = s.Handoff.AddPacketConn(name, e.pc)
		} else {
			err = s.Handoff.AddListener(name, e.ln)
		}
		if err != nil {
			e.close()
			return fail(err)
		}
	}
	if s.entries == nil {
		s.entries = make(map[string]*entry)
	}
	s.entries[name] = e
	return e, nil
}

// inherit returns the handed-over socket for name if it is of the kind
// network asks for and matches the configured address, or nil.
func (s *Set) inherit(name, network, addr string) (*entry, error) {
	if s.Handoff == nil {
		return nil, nil
	}
	e := &entry{network: network, addr: addr, inherited: true}
	var err error
	if datagram(network) {
		e.pc, err = s.Handoff.PacketConn(name)
	} else {
		e.ln, err = s.Handoff.Listener(name)
	}
	if err != nil || (e.pc == nil && e.ln == nil) {
		return nil, err
	}
	if !sameAddress(e.local(), network, addr) {
		// The configuration moved this name to another address. The old
		// socket is not served; binding the new one below re-registers the
		// name, and the handoff drops its copy of the old fd.
		e.close()
		return nil, nil
	}
	if network == "unix" || network == "unixgram" {
		e.file = statUnixFile(addr)
	}
	return e, nil
}

// fromSystemd takes the socket systemd passed under name that is of the
// kind network asks for and bound to the configured address, or returns
// nil.
func (s *Set) fromSystemd(name, network, addr string) *entry {
	files := s.Systemd[name]
	for i, f := range files {
		// A unix socket file systemd created is systemd's to remove: no
		// unixFile, so Unlink leaves it alone.
		e := &entry{network: network, addr: addr, fromSystemd: true}
		var err error
		if datagram(network) {
			e.pc, err = net.FilePacketConn(f)
		} else {
			e.ln, err = net.FileListener(f)
		}
		if err != nil {
			continue
		}
		// sameAddress also tells a unix stream socket from a datagram
		// one, which net.FileListener and net.FilePacketConn both accept.
		if !sameAddress(e.local(), network, addr) {
			e.close()
			continue
		}
		f.Close()
		s.Systemd[name] = append(files[:i:i], files[i+1:]...)
		if len(s.Systemd[name]) == 0 {
			delete(s.Systemd, name)
		}
		return e
	}
	return nil
}

func (s *Set) bind(ctx context.Context, network, addr string) (*entry, error) {
	e := &entry{network: network, addr: addr}
	err := e.open(ctx, &s.ListenConfig)
	if network != "unix" && network != "unixgram" {
		if err != nil {
			return nil, err
		}
		return e, nil
	}
	if errors.Is(err, syscall.EADDRINUSE) && !isAbstract(addr) {
		if err := removeStaleSocket(ctx, network, addr); err != nil {
			return nil, err
		}
		err = e.open(ctx, &s.ListenConfig)
	}
	if err != nil {
		return nil, err
	}
	// The file belongs to the service, not to this generation: only
	// Set.Unlink may remove it. (A unixgram socket never removes it.)
	if ul, ok := e.ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	e.file = statUnixFile(addr)
	return e, nil
}

// removeStaleSocket removes the socket file at path if no socket is bound
// to it, which is what a crashed server leaves behind. It finds out by
// connecting as network ("unix" or "unixgram") would: the kernel refuses
// the connection when nobody is bound there, and says the type is wrong
// when a socket of the other type is.
func removeStaleSocket(ctx context.Context, network, path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return ErrNotSocket
	}
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, network, path)
	if err == nil {
		conn.Close()
		return ErrLiveSocket
	}
	if errors.Is(err, syscall.EPROTOTYPE) {
		return fmt.Errorf("%w (a socket of another type than %s)", ErrLiveSocket, network)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probing existing socket file: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket file: %w", err)
	}
	return nil
}

// Source says where the socket named name came from: "inherited" (the
// previous generation), "systemd" (socket activation or the fd store),
// "bound" (bound by this process), or "" if there is none.
func (s *Set) Source(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch e := s.entries[name]; {
	case e == nil:
		return ""
	case e.inherited:
		return "inherited"
	case e.fromSystemd:
		return "systemd"
	}
	return "bound"
}

// Reopen starts a new life of the set: every name can be listened on
// again, and the sockets of the names listened on so far are set aside
// (Close still closes them, Unlink still removes their files). A
// generation that takes the service back from a newer one that died calls
// it before it serves anew: Listen and ListenPacket then get their
// sockets from the Handoff again, which by then supplies this
// generation's own copies.
func (s *Set) Reopen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		s.retired = append(s.retired, e)
	}
	clear(s.entries)
}

// all returns the entries of every life. The caller holds s.mu.
func (s *Set) all() []*entry {
	out := append([]*entry(nil), s.retired...)
	for _, e := range s.entries {
		out = append(out, e)
	}
	return out
}

// Close closes every socket of the set. It does not remove unix socket
// files, which may be in use by the next generation; see Unlink.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, e := range s.all() {
		if err := e.close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Unlink removes the files of the set's unix and unixgram sockets, each
// only while the path still names the socket file this set bound (a file that was
// replaced since belongs to someone else). Call it only when the service
// stops for good, never when handing the sockets to a new generation.
func (s *Set) Unlink() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, e := range s.all() {
		if e.file == nil || !e.file.stillThere(e.addr) {
			continue
		}
		if err := os.Remove(e.addr); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func isAbstract(path string) bool { return len(path) > 0 && path[0] == '@' }

// sameAddress reports whether a socket bound at got serves what the
// configuration asks for with network and addr.
func sameAddress(got net.Addr, network, addr string) bool {
	switch g := got.(type) {
	case *net.TCPAddr:
		// Resolving fails for a network that is not TCP's.
		want, err := net.ResolveTCPAddr(network, addr)
		return err == nil && g != nil && sameIPPort(want.IP, want.Port, g.IP, g.Port)
	case *net.UDPAddr:
		want, err := net.ResolveUDPAddr(network, addr)
		return err == nil && g != nil && sameIPPort(want.IP, want.Port, g.IP, g.Port)
	case *net.UnixAddr:
		// Net comes from the socket's type: "unix" for a stream socket,
		// "unixgram" for a datagram one, "unixpacket" for neither.
		return g != nil && g.Net == network && g.Name == addr
	}
	return false
}

// sameIPPort reports whether a socket bound at ip:port serves the
// configured wantIP:wantPort, where port 0 means any and no IP or an
// unspecified one means all addresses.
func sameIPPort(wantIP net.IP, wantPort int, ip net.IP, port int) bool {
	if wantPort != 0 && wantPort != port {
		return false
	}
	if wantIP == nil || wantIP.IsUnspecified() {
		return ip == nil || ip.IsUnspecified()
	}
	return wantIP.Equal(ip)
}

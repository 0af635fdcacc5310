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

// Handoff carries listening sockets from one generation of a process to the
// next, by logical name. The upgrade package supplies one; a Set without a
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
}

// Errors callers can match with errors.Is.
var (
	// ErrDuplicateName is returned when a name is listened on twice in one Set.
	ErrDuplicateName = errors.New("listener: name already in use in this set")
	// ErrBadName is returned for names outside [A-Za-z0-9._-]{1,64}.
	ErrBadName = errors.New("listener: bad name")
	// ErrUnsupportedNetwork is returned for networks other than tcp, tcp4,
	// tcp6 and unix.
	ErrUnsupportedNetwork = errors.New("listener: unsupported network")
	// ErrLiveSocket is returned when a unix socket path is served by a live
	// process that is not our previous generation. It wraps EADDRINUSE.
	ErrLiveSocket = fmt.Errorf("listener: a live process listens on this unix socket: %w", syscall.EADDRINUSE)
	// ErrNotSocket is returned when a unix socket path exists and is not a
	// socket; the file is left alone.
	ErrNotSocket = errors.New("listener: path exists and is not a socket")
)

// Error describes a failure to provide one named listener.
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

// Set provides the named listeners of one generation. The zero value binds
// every listener anew; set Handoff to inherit from a previous generation.
// A Set is safe for concurrent use.
type Set struct {
	// Handoff, if not nil, supplies listeners handed over by the previous
	// generation and receives the ones to hand to the next.
	Handoff Handoff
	// ListenConfig is used to bind new listeners.
	ListenConfig net.ListenConfig
	// Systemd, if set, supplies sockets systemd passed by name (see
	// FromSystemd): socket activation, or the file descriptor store after
	// a restart. Listen takes one when no previous generation handed a
	// socket over and it is bound to the configured address, and removes
	// it from the map; what is left after the last Listen was not used,
	// and is the caller's to close.
	Systemd map[string][]*os.File

	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	network, addr string
	ln            net.Listener
	inherited     bool
	fromSystemd   bool
	file          *unixFile // nil unless a unix socket file this service owns
}

// Listen returns the listener named name, bound to addr on network ("tcp",
// "tcp4", "tcp6" or "unix"). It is inherited from the previous generation
// when that one handed over a listener under the same name that is bound to
// the same address; otherwise it is bound anew. Errors are of type *Error
// and wrap the cause (for example syscall.EADDRINUSE or ErrLiveSocket).
//
// ctx bounds only the binding of a new socket.
func (s *Set) Listen(ctx context.Context, name, network, addr string) (net.Listener, error) {
	fail := func(err error) (net.Listener, error) {
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
	case "unix":
		if addr == "" {
			return fail(errors.New("empty unix socket path"))
		}
	default:
		return fail(fmt.Errorf("%w %q: want tcp, tcp4, tcp6 or unix", ErrUnsupportedNetwork, network))
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
		if err := s.Handoff.AddListener(name, e.ln); err != nil {
			e.ln.Close()
			return fail(err)
		}
	}
	if s.entries == nil {
		s.entries = make(map[string]*entry)
	}
	s.entries[name] = e
	return e.ln, nil
}

// inherit returns the handed-over listener for name if it matches the
// configured address, or nil.
func (s *Set) inherit(name, network, addr string) (*entry, error) {
	if s.Handoff == nil {
		return nil, nil
	}
	ln, err := s.Handoff.Listener(name)
	if err != nil || ln == nil {
		return nil, err
	}
	if !sameAddress(ln.Addr(), network, addr) {
		// The configuration moved this name to another address. The old
		// socket is not served; binding the new one below re-registers the
		// name, and the handoff drops its copy of the old fd.
		ln.Close()
		return nil, nil
	}
	e := &entry{network: network, addr: addr, ln: ln, inherited: true}
	if network == "unix" {
		e.file = statUnixFile(addr)
	}
	return e, nil
}

// fromSystemd takes the socket systemd passed under name that is bound to
// the configured address, or returns nil.
func (s *Set) fromSystemd(name, network, addr string) *entry {
	files := s.Systemd[name]
	for i, f := range files {
		ln, err := net.FileListener(f)
		if err != nil {
			continue
		}
		if !sameAddress(ln.Addr(), network, addr) {
			ln.Close()
			continue
		}
		f.Close()
		s.Systemd[name] = append(files[:i:i], files[i+1:]...)
		if len(s.Systemd[name]) == 0 {
			delete(s.Systemd, name)
		}
		// A unix socket file systemd created is systemd's to remove: no
		// unixFile, so Unlink leaves it alone.
		return &entry{network: network, addr: addr, ln: ln, fromSystemd: true}
	}
	return nil
}

func (s *Set) bind(ctx context.Context, network, addr string) (*entry, error) {
	if network != "unix" {
		ln, err := s.ListenConfig.Listen(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &entry{network: network, addr: addr, ln: ln}, nil
	}
	ln, err := s.ListenConfig.Listen(ctx, network, addr)
	if errors.Is(err, syscall.EADDRINUSE) && !isAbstract(addr) {
		if err := removeStaleSocket(ctx, addr); err != nil {
			return nil, err
		}
		ln, err = s.ListenConfig.Listen(ctx, network, addr)
	}
	if err != nil {
		return nil, err
	}
	// The file belongs to the service, not to this generation: only
	// Set.Unlink may remove it.
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	return &entry{network: network, addr: addr, ln: ln, file: statUnixFile(addr)}, nil
}

// removeStaleSocket removes the socket file at path if no process accepts
// on it, which is what a crashed server leaves behind.
func removeStaleSocket(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return ErrNotSocket
	}
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		conn.Close()
		return ErrLiveSocket
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probing existing socket file: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket file: %w", err)
	}
	return nil
}

// Source says where the listener named name came from: "inherited" (the
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

// Close closes every listener of the set. It does not remove unix socket
// files, which may be in use by the next generation; see Unlink.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, e := range s.entries {
		if err := e.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Unlink removes the files of the set's unix sockets, each only while the
// path still names the socket file this set listened on (a file that was
// replaced since belongs to someone else). Call it only when the service
// stops for good, never when handing the sockets to a new generation.
func (s *Set) Unlink() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, e := range s.entries {
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

// sameAddress reports whether a listener bound at got serves what the
// configuration asks for with network and addr.
func sameAddress(got net.Addr, network, addr string) bool {
	switch g := got.(type) {
	case *net.TCPAddr:
		if network == "unix" {
			return false
		}
		want, err := net.ResolveTCPAddr(network, addr)
		if err != nil {
			return false
		}
		if want.Port != 0 && want.Port != g.Port {
			return false
		}
		if want.IP == nil || want.IP.IsUnspecified() {
			return g.IP == nil || g.IP.IsUnspecified()
		}
		return want.IP.Equal(g.IP)
	case *net.UnixAddr:
		return network == "unix" && g.Name == addr
	}
	return false
}

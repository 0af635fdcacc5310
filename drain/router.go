package drain

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	_ Drainer        = (*Router)(nil)
	_ net.PacketConn = (*Router)(nil)
	_ syscall.Conn   = (*Router)(nil)
)

// DefaultFlowTTL is the default for RouterOptions.FlowTTL: longer than a
// QUIC handshake takes to complete or time out (quic-go gives up after 5 s
// by default).
const DefaultFlowTTL = 10 * time.Second

// maxFlows bounds the flows a Router remembers, so that a flood of
// handshakes from spoofed addresses costs memory no more than this.
const maxFlows = 1 << 16

// RouterID names the generation a Router serves: four random bytes chosen
// by NewRouter. A protocol routed by it carries it in what the peer echoes
// in each datagram: a QUIC server puts it at the start of every connection
// ID it issues, and the client sends that ID in every packet.
type RouterID [4]byte

// String renders the ID in hexadecimal, for logs.
func (id RouterID) String() string { return fmt.Sprintf("%x", id[:]) }

// Route says where one datagram goes. A Router's classify function returns
// it; it must not keep the datagram.
type Route struct {
	// Owner is the ID of the generation the datagram names. The zero ID,
	// or one no generation alive has, means: this generation.
	Owner RouterID
	// Flow, if not nil, identifies the flow the datagram belongs to when
	// the peer started it before any generation gave it an Owner: a QUIC
	// client's first packets carry a connection ID the client chose, and
	// so do its retransmissions until the server's answer reaches it.
	// Every datagram of a flow goes where its first one went, for
	// RouterOptions.FlowTTL after that, even across the handover. Flow may
	// alias the datagram (the Router copies what it keeps) and is at most
	// 255 bytes (longer ones are not remembered).
	Flow []byte
}

// RouterOptions are a Router's settings. upgrade.Upgrader.ListenRouted sets
// Predecessor, Successor and HandedOver; a caller wiring a Router by hand
// sets them itself.
type RouterOptions struct {
	// Name names the router in reports; empty means "router".
	Name string
	// Predecessor is this generation's end of the channel to the previous
	// generation's Router (the file that one gave as its Successor's peer),
	// or nil on a cold start. The Router takes it over and closes it.
	Predecessor *os.File
	// Successor is this Router's end of the channel to the next
	// generation, whose peer end is handed to it; nil: no next generation
	// will be routed to. The Router takes it over and closes it.
	Successor *os.File
	// HandedOver reports, when Drain begins, whether a newer generation
	// took over (the drain is an upgrade's) rather than the service
	// stopping. Only then does the Router stop reading the shared socket
	// and hand it over; at a stop, it reads on while Shutdown drains.
	// nil means never.
	HandedOver func() bool
	// FlowTTL is how long a Route.Flow stays with the generation its first
	// datagram went to. Zero means DefaultFlowTTL.
	FlowTTL time.Duration
}

// RouterStats counts what a Router did over its life.
type RouterStats struct {
	// Read is the number of datagrams read from the shared socket.
	Read int64
	// Forwarded is the number of those passed to the previous generation,
	// because they belonged to it.
	Forwarded int64
	// Dropped is the number of datagrams for the previous generation that
	// could not be passed to it: its channel was full, or it was gone.
	Dropped int64
	// Received is the number of datagrams the next generation passed to
	// this one while it drained.
	Received int64
	// Written is the number of datagrams written.
	Written int64
}

// Router serves one datagram socket shared across generations for a
// protocol that keeps connections over it, QUIC above all. Unlike a Packet,
// whose generations may each read any datagram, a Router makes sure each
// datagram reaches the generation that owns its connection:
//
//   - Only one generation reads the shared socket at a time: the old one
//     until its drain begins, then the new one. In between, datagrams wait
//     in the socket's receive buffer.
//   - The reading generation asks classify where each datagram goes and
//     passes those that belong to the previous generation to it, over a
//     unix SOCK_SEQPACKET socket pair handed over like any file; the
//     previous generation reads them through its Router as if from the
//     socket, and answers through the shared socket itself.
//   - A datagram that names no generation yet but belongs to a flow (a
//     QUIC handshake in progress) follows that flow's first datagram,
//     across the handover too: the old generation sends its recent flows
//     with the handover.
//
// A *Router is a net.PacketConn: give it to the protocol's transport as its
// socket (quic.Transport's Conn). Set Shutdown to the protocol's graceful
// shutdown and pass the Router to upgrade.Upgrader.Run as a Drainer.
// ReadFrom is meant for one reader at a time, as a transport has.
type Router struct {
	// Shutdown is the protocol server's graceful shutdown: tell every
	// connection to go (HTTP/3 GOAWAY), wait until they are closed or ctx
	// is done, then close what is left. Set it before Drain, which calls it
	// once the next generation reads the shared socket; the datagrams of
	// this generation's connections reach ReadFrom (passed on by the next
	// generation) until Drain returns. nil: Drain only stops reading.
	Shutdown func(ctx context.Context) error

	conn     net.PacketConn
	classify func([]byte) Route
	name     string
	id       RouterID
	ttl      time.Duration
	handed   func() bool
	pred     *net.UnixConn // to the previous generation; nil: none
	succ     *net.UnixConn // to the next generation; nil: none

	started chan struct{} // closed once this generation reads the shared socket
	closed  chan struct{} // closed by Close
	once    sync.Once

	// sockMu is held for reading around every read of the shared socket,
	// and for writing by Drain when it hands the socket over, so that no
	// read is in progress once it has.
	sockMu  sync.RWMutex
	handing atomic.Bool // set by Drain: read the successor channel, not the socket

	predID   atomic.Pointer[RouterID] // the previous generation's ID while it lives
	predDone chan struct{}            // closed when the previous generation is gone

	succMu  sync.Mutex // held by the reader of the successor channel
	succBuf []byte     // under succMu

	mu     sync.Mutex
	flows  map[string]flow // under mu
	fwdBuf []byte          // under mu: the message being forwarded

	read, forwarded, dropped, received, written atomic.Int64
}

// flow is where a flow's first datagram went, and when.
type flow struct {
	pred bool // to the previous generation; false: this one
	at   time.Time
}

// Messages on the channel between generations, one per SEQPACKET record.
// Versioned by their kind byte: a kind a generation does not know is
// ignored, so a later release may add some.
const (
	msgDatagram = 'D' // D, addr len (4|16), addr, port (2), datagram: from the next generation
	msgFlows    = 'F' // F, then (len, flow)...: flows the previous generation owns
	msgTakeOver = 'T' // T, RouterID: the previous generation stopped reading; read now
)

// maxMessage is the largest message: a 64 KiB datagram and its header.
const maxMessage = 64<<10 + 32

// NewRouter returns a Router for the shared socket conn. classify is
// called for every datagram read from it and must be quick: it runs on the
// reading goroutine, between the socket and the transport. The Router
// owns conn and the files in opts from now on, even if it fails.
func NewRouter(conn net.PacketConn, classify func(datagram []byte) Route, opts RouterOptions) (*Router, error) {
	r := &Router{
		conn: conn, classify: classify, name: opts.Name, ttl: opts.FlowTTL, handed: opts.HandedOver,
		started: make(chan struct{}), closed: make(chan struct{}), predDone: make(chan struct{}),
		flows: make(map[string]flow),
	}
	if r.name == "" {
		r.name = "router"
	}
	if r.ttl <= 0 {
		r.ttl = DefaultFlowTTL
	}
	fail := func(err error) (*Router, error) {
		conn.Close()
		for _, f := range []*os.File{opts.Predecessor, opts.Successor} {
			if f != nil {
				f.Close()
			}
		}
		if r.pred != nil {
			r.pred.Close()
		}
		if r.succ != nil {
			r.succ.Close()
		}
		return nil, fmt.Errorf("drain %s: %w", r.name, err)
	}
	if conn == nil || classify == nil {
		return fail(errors.New("NewRouter needs a socket and a classify function"))
	}
	if _, err := rand.Read(r.id[:]); err != nil {
		return fail(err)
	}
	var err error
	if opts.Successor != nil {
		if r.succ, err = channel(opts.Successor, "successor"); err != nil {
			return fail(err)
		}
	}
	if opts.Predecessor != nil {
		if r.pred, err = channel(opts.Predecessor, "predecessor"); err != nil {
			return fail(err)
		}
		go r.listenPredecessor()
	} else {
		close(r.started)
		close(r.predDone)
	}
	return r, nil
}

// channel makes a *net.UnixConn of f, which must be a SOCK_SEQPACKET unix
// socket, and closes f.
func channel(f *os.File, which string) (*net.UnixConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("the %s channel: %w", which, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok || uc.LocalAddr().Network() != "unixpacket" {
		c.Close()
		return nil, fmt.Errorf("the %s channel is a %s socket, not a unix SOCK_SEQPACKET one", which, c.LocalAddr().Network())
	}
	return uc, nil
}

// ID returns this generation's ID, for the protocol to put where its
// peers echo it (quicroute.Generator does that for QUIC).
func (r *Router) ID() RouterID { return r.id }

// Stats returns the Router's counts so far.
func (r *Router) Stats() RouterStats {
	return RouterStats{
		Read: r.read.Load(), Forwarded: r.forwarded.Load(), Dropped: r.dropped.Load(),
		Received: r.received.Load(), Written: r.written.Load(),
	}
}

// listenPredecessor reads what the previous generation sends: its flows,
// then "take over", after which this generation reads the shared socket.
// It then waits for the channel to close: the previous generation has
// drained and gone, and nothing is passed to it any more. If the channel
// closes before "take over", the previous generation died first; this one
// reads at once.
func (r *Router) listenPredecessor() {
	defer close(r.predDone)
	begin := sync.OnceFunc(func() { close(r.started) })
	defer begin()
	defer r.predID.Store(nil)
	buf := make([]byte, maxMessage)
	for {
		n, err := r.pred.Read(buf)
		if err != nil || n == 0 {
			// n == 0: the peer closed (a SEQPACKET EOF reads as an empty record).
			return
		}
		m := buf[:n]
		switch m[0] {
		case msgFlows:
			r.addFlows(m[1:])
		case msgTakeOver:
			if len(m) != 1+len(RouterID{}) {
				continue
			}
			var id RouterID
			copy(id[:], m[1:])
			r.predID.Store(&id)
			begin()
		}
	}
}

// addFlows records the previous generation's flows from a msgFlows body.
func (r *Router) addFlows(b []byte) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(b) > 0 {
		n := int(b[0])
		if n == 0 || 1+n > len(b) {
			return
		}
		if len(r.flows) < maxFlows {
			r.flows[string(b[1:1+n])] = flow{pred: true, at: now}
		}
		b = b[1+n:]
	}
}

// ReadFrom returns the next datagram for this generation: from the shared
// socket while this generation reads it (passing on those of the previous
// generation's connections), and, once Drain has handed the socket over,
// those the next generation passes back. Before the previous generation
// has handed the socket over, it waits.
func (r *Router) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case <-r.started:
	case <-r.closed:
		return 0, nil, r.opError("read", net.ErrClosed)
	}
	for {
		if r.handing.Load() {
			return r.readSuccessor(p)
		}
		r.sockMu.RLock()
		if r.handing.Load() {
			r.sockMu.RUnlock()
			continue
		}
		n, from, err := r.conn.ReadFrom(p)
		if err != nil {
			r.sockMu.RUnlock()
			if r.handing.Load() {
				// Drain interrupted the read to hand the socket over.
				continue
			}
			return n, from, err
		}
		r.read.Add(1)
		// Routed before the lock is let go: a flow this datagram begins is
		// then remembered before Drain lists the flows it hands over.
		passed := r.forward(p[:n], from)
		r.sockMu.RUnlock()
		if passed {
			continue
		}
		return n, from, nil
	}
}

// forward passes datagram to the previous generation if it belongs there,
// and says whether it did (or dropped it trying).
func (r *Router) forward(datagram []byte, from net.Addr) bool {
	route := r.classify(datagram)
	pred := r.predID.Load()
	toPred := false
	r.mu.Lock()
	defer r.mu.Unlock()
	if route.Flow != nil && len(route.Flow) <= 255 {
		f, ok := r.flows[string(route.Flow)]
		if ok && time.Since(f.at) > r.ttl {
			delete(r.flows, string(route.Flow))
			ok = false
		}
		switch {
		case ok:
			toPred = f.pred
		case pred != nil && route.Owner == *pred:
			toPred = true
		case route.Owner != r.id:
			r.remember(route.Flow)
		}
	} else {
		toPred = pred != nil && route.Owner == *pred
	}
	if !toPred || pred == nil {
		// pred == nil: a flow of a previous generation that has gone, ours now.
		return false
	}
	r.fwdBuf = appendDatagram(r.fwdBuf[:0], datagram, from)
	if err := sendNow(r.pred, r.fwdBuf); err != nil {
		r.dropped.Add(1)
	} else {
		r.forwarded.Add(1)
	}
	return true
}

// remember pins a new flow to this generation; mu is held.
func (r *Router) remember(key []byte) {
	if len(r.flows) >= maxFlows {
		now := time.Now()
		for k, f := range r.flows {
			if now.Sub(f.at) > r.ttl {
				delete(r.flows, k)
			}
		}
		if len(r.flows) >= maxFlows {
			return
		}
	}
	r.flows[string(key)] = flow{at: time.Now()}
}

// readSuccessor reads a datagram the next generation passed back.
func (r *Router) readSuccessor(p []byte) (int, net.Addr, error) {
	r.succMu.Lock()
	defer r.succMu.Unlock()
	if r.succBuf == nil {
		r.succBuf = make([]byte, maxMessage)
	}
	buf := r.succBuf
	for {
		n, err := r.succ.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return 0, nil, r.opError("read", net.ErrClosed)
			}
			return 0, nil, err
		}
		if n == 0 {
			return 0, nil, r.opError("read", net.ErrClosed)
		}
		d, from, ok := parseDatagram(buf[:n])
		if !ok {
			continue
		}
		r.received.Add(1)
		return copy(p, d), from, nil
	}
}

// appendDatagram encodes a msgDatagram.
func appendDatagram(b, datagram []byte, from net.Addr) []byte {
	ap := addrPort(from)
	b = append(b, msgDatagram)
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		a := ip.As4()
		b = append(append(b, 4), a[:]...)
	} else {
		a := ip.As16()
		b = append(append(b, 16), a[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, ap.Port())
	return append(b, datagram...)
}

// parseDatagram decodes a msgDatagram; ok is false for anything else.
func parseDatagram(m []byte) (datagram []byte, from *net.UDPAddr, ok bool) {
	if len(m) < 2 || m[0] != msgDatagram {
		return nil, nil, false
	}
	n := int(m[1])
	if (n != 4 && n != 16) || len(m) < 2+n+2 {
		return nil, nil, false
	}
	ip, _ := netip.AddrFromSlice(m[2 : 2+n])
	port := binary.BigEndian.Uint16(m[2+n:])
	return m[2+n+2:], net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port)), true
}

// addrPort gives a datagram's source as a netip.AddrPort.
func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// WriteTo writes through the shared socket, in every phase: the next
// generation passes this one's datagrams in, but the answers go out
// directly.
func (r *Router) WriteTo(p []byte, addr net.Addr) (int, error) {
	n, err := r.conn.WriteTo(p, addr)
	if err == nil {
		r.written.Add(1)
	}
	return n, err
}

// Drain hands the shared socket to the next generation if one took over
// (RouterOptions.HandedOver): it stops reading the socket, sends the
// next generation this one's recent flows and "take over", and from then
// on reads only what the next generation passes back. It then calls
// Shutdown, and closes the Router when Shutdown returns. At a stop, the
// Router reads the socket on while Shutdown runs. The report counts
// datagrams (Datagrams: read from the socket or passed back; Answers:
// written); the connections are the protocol's to count.
func (r *Router) Drain(ctx context.Context) (Report, error) {
	start := time.Now()
	var errs []error
	if r.handed != nil && r.handed() && r.succ != nil {
		if err := r.handOver(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if r.Shutdown != nil {
		if err := r.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	r.Close()
	s := r.Stats()
	rep := Report{Name: r.name, Duration: time.Since(start), Datagrams: int(s.Read + s.Received), Answers: int(s.Written)}
	if len(errs) > 0 {
		return rep, fmt.Errorf("drain %s: %w", r.name, errors.Join(errs...))
	}
	return rep, nil
}

// handOver stops reading the shared socket and tells the next generation
// to start. If the message cannot be sent, it reads on, since otherwise
// nobody would.
func (r *Router) handOver(ctx context.Context) error {
	r.handing.Store(true)
	// Wake a read in progress; sockMu then waits until it has returned.
	r.conn.SetReadDeadline(aLongTimeAgo)
	r.sockMu.Lock()
	defer r.sockMu.Unlock()

	var msgs [][]byte
	now := time.Now()
	m := []byte{msgFlows}
	r.mu.Lock()
	for k, f := range r.flows {
		if f.pred || now.Sub(f.at) > r.ttl {
			continue
		}
		if len(m)+1+len(k) > 32<<10 {
			msgs, m = append(msgs, m), []byte{msgFlows}
		}
		m = append(append(m, byte(len(k))), k...)
	}
	r.mu.Unlock()
	msgs = append(msgs, m, append([]byte{msgTakeOver}, r.id[:]...))

	if d, ok := ctx.Deadline(); ok {
		r.succ.SetWriteDeadline(d)
	}
	for _, m := range msgs {
		if _, err := r.succ.Write(m); err != nil {
			r.handing.Store(false)
			r.conn.SetReadDeadline(time.Time{})
			return fmt.Errorf("handing the socket to the next generation: %w (reading it on)", err)
		}
	}
	return nil
}

// Close closes the shared socket (this generation's descriptor of it) and
// the channels; reads in progress return an error wrapping net.ErrClosed.
func (r *Router) Close() error {
	var err error
	r.once.Do(func() {
		close(r.closed)
		err = r.conn.Close()
		if r.succ != nil {
			r.succ.Close()
		}
		if r.pred != nil {
			r.pred.Close()
			<-r.predDone
		}
	})
	return err
}

func (r *Router) opError(op string, err error) error {
	e := &net.OpError{Op: op, Err: err}
	if a := r.conn.LocalAddr(); a != nil {
		e.Net, e.Addr = a.Network(), a
	}
	return e
}

// LocalAddr returns the shared socket's address.
func (r *Router) LocalAddr() net.Addr { return r.conn.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (r *Router) SetDeadline(t time.Time) error {
	if err := r.SetReadDeadline(t); err != nil {
		return err
	}
	return r.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of reads from the shared socket and,
// once the socket is handed over, from the next generation.
func (r *Router) SetReadDeadline(t time.Time) error {
	if r.succ != nil {
		r.succ.SetReadDeadline(t)
	}
	if r.handing.Load() {
		return nil
	}
	return r.conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the shared socket's write deadline.
func (r *Router) SetWriteDeadline(t time.Time) error { return r.conn.SetWriteDeadline(t) }

// SetReadBuffer sets the shared socket's receive buffer (SO_RCVBUF), which
// holds the datagrams that arrive while the socket changes hands.
func (r *Router) SetReadBuffer(bytes int) error { return r.setBuffer(syscall.SO_RCVBUF, bytes) }

// SetWriteBuffer sets the shared socket's send buffer (SO_SNDBUF).
func (r *Router) SetWriteBuffer(bytes int) error { return r.setBuffer(syscall.SO_SNDBUF, bytes) }

func (r *Router) setBuffer(opt, bytes int) error {
	rc, err := r.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setsockoptInt(fd, opt, bytes) }); err != nil {
		return err
	}
	return serr
}

// SyscallConn gives the shared socket's descriptor, for socket options
// (quic-go sets its buffer sizes and the don't-fragment bit through it).
func (r *Router) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := r.conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("drain: this datagram socket has no descriptor")
}

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/hitlessgo/hitless/drain"
)

const (
	// tcpIdleTimeout closes a connection on which no query came for this
	// long (RFC 7766, section 6.2.3, leaves it to the server; miekg/dns
	// uses 8 s).
	tcpIdleTimeout = 10 * time.Second
	// tcpBodyTimeout bounds the read of a query once its length has
	// arrived: the rest is on its way.
	tcpBodyTimeout = 2 * time.Second
	// tcpPipelined is how many queries of one connection are answered at
	// once (RFC 7766, section 6.2.1.1, lets a server answer pipelined
	// queries concurrently, and out of order); reading waits beyond.
	tcpPipelined = 64
	// tcpDrainRead is how long a connection is still read once the drain
	// has begun: long enough to read the queries the client had already
	// sent (they are in the socket's receive buffer, or on loopback's
	// way), short enough that a client sending without pause does not
	// keep the old generation.
	tcpDrainRead = 5 * time.Millisecond
	// tcpLinger bounds how long a drained connection, its answers sent and
	// its write side shut, waits for the client to close its side.
	tcpLinger = time.Second
)

// tcpServer serves DNS over TCP from a drain.Listener, and drains each
// connection so that no query it has received goes unanswered and no
// answer it has sent is destroyed by a reset:
//
//  1. When the drain begins, it reads for tcpDrainRead more (the queries
//     already sent), then stops reading.
//  2. It waits until every query it read has been answered.
//  3. It shuts its write side (FIN: the client reads every answer, then
//     end of file, and knows the connection is done), reads and drops
//     what still comes until the client closes or tcpLinger passes, then
//     closes. Closing at once with queries unread in the receive buffer
//     would make the kernel send a reset, which can destroy answers the
//     client has not read yet.
//
// A query that reaches the connection after step 1 (while the last
// queries read are answered, or after the FIN) gets no answer on it: the
// client must send it again on a new connection (RFC 7766, section
// 6.2.3), which reaches the new generation. No server can close a
// connection a client keeps sending on without that race: DNS over TCP
// has no way to tell a client to stop first, short of the EDNS
// tcp-keepalive option (RFC 7828), which few clients read. Reading on
// until the client pauses does not help either: measured against dnsperf
// (500 queries a second on each connection), the connections were never
// quiet for 2 ms. A server library's own shutdown
// ((*dns.Server).ShutdownContext) stops after the query it is answering
// and closes, leaving the queries already pipelined behind it unanswered.
type tcpServer struct {
	ln       *drain.Listener
	zone     *zone
	log      *slog.Logger
	draining atomic.Bool
	// unread counts the connections on which queries came after the
	// drain had stopped reading them (step 3 dropped some bytes).
	unread atomic.Int64
}

func newTCP(ln net.Listener, z *zone, log *slog.Logger) *tcpServer {
	return &tcpServer{ln: &drain.Listener{Listener: ln, Name: "dns-tcp"}, zone: z, log: log}
}

// Serve accepts connections until the drain closes the listener; it
// returns nil then.
func (t *tcpServer) Serve() error {
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.draining.Load() {
				return nil
			}
			return err
		}
		go t.serveConn(c)
	}
}

// Drain drains the Listener, which stops accepting, tells the connections
// to wrap up, and waits for them to close, cutting those left at ctx's
// end.
func (t *tcpServer) Drain(ctx context.Context) (drain.Report, error) {
	t.draining.Store(true)
	r, err := t.ln.Drain(ctx)
	if n := t.unread.Load(); n > 0 {
		t.log.Info("queries came after the drain had stopped reading", "server", "dns-tcp", "connections", n)
	}
	return r, err
}

func (t *tcpServer) serveConn(c net.Conn) {
	defer c.Close()
	var (
		wmu      sync.Mutex
		handlers sync.WaitGroup
		slots    = make(chan struct{}, tcpPipelined)
		stopAt   atomic.Int64 // once draining: when reading stops, in Unix ns
		done     = make(chan struct{})
	)
	defer close(done)
	go func() {
		select {
		case <-t.ln.WrapUp():
			at := time.Now().Add(tcpDrainRead)
			// Stored before it is set, so that the read loop, which
			// checks after setting its own deadline, cannot undo it.
			stopAt.Store(at.UnixNano())
			c.SetReadDeadline(at)
		case <-done:
		}
	}()
	r := bufio.NewReader(c)
	for {
		s := stopAt.Load()
		if s == 0 {
			c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
			s = stopAt.Load()
		}
		if s != 0 {
			c.SetReadDeadline(time.Unix(0, s))
		}
		var n [2]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			break // the client closed, the idle timeout, or the drain
		}
		c.SetReadDeadline(time.Now().Add(tcpBodyTimeout))
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(r, q); err != nil {
			break
		}
		slots <- struct{}{}
		handlers.Add(1)
		go func() {
			defer func() { <-slots; handlers.Done() }()
			b, ok := t.respond(q)
			if !ok {
				return
			}
			wmu.Lock()
			defer wmu.Unlock()
			// An error: the client went away, or the drain's deadline
			// cut the connection; either way nobody reads the answer.
			c.SetWriteDeadline(time.Now().Add(tcpBodyTimeout))
			c.Write(b)
		}()
	}
	handlers.Wait()
	if stopAt.Load() == 0 {
		return
	}
	// Draining: see the type's documentation, step 3.
	if cw, ok := c.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(tcpLinger))
	if n, _ := io.Copy(io.Discard, r); n > 0 {
		t.unread.Add(1)
	}
}

// respond answers the query q with its length prefix; false if q is too
// short to answer (not even an ID).
func (t *tcpServer) respond(q []byte) ([]byte, bool) {
	req := new(dns.Msg)
	var resp *dns.Msg
	if err := req.Unpack(q); err != nil {
		if len(q) < 2 {
			return nil, false
		}
		resp = new(dns.Msg)
		resp.Id = binary.BigEndian.Uint16(q)
		resp.Response = true
		resp.Rcode = dns.RcodeFormatError
	} else {
		resp = t.zone.respond(req)
	}
	b, err := resp.Pack()
	if err != nil || len(b) > 0xffff {
		return nil, false
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...), true
}

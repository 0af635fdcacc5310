// Command udp is a datagram server with hitless upgrades: send it SIGHUP
// to replace it with the binary now at its path, SIGTERM to drain and stop.
//
// Over UDP (-addr), one datagram each way:
//
//	client: <id> <text>
//	server: <id> <pid> <text>
//
// With -sink PATH it is also a syslog-style sink: every datagram sent to
// the unixgram socket at PATH is appended, as one line (newlines inside
// it become spaces), to the file -sink-log names. Nothing is answered
// there.
//
// Both sockets are shared with the next generation, not handed from one to
// the other: during an upgrade the old generation goes on reading until the
// new one is ready and reading, then stops reading (without closing: the
// new one reads the same socket), finishes the datagrams it has already
// read (answers them, writes their lines) and exits. Datagrams sent
// meanwhile wait in the socket's receive buffer for whichever generation
// reads next. This is sound for stateless request/response datagrams (DNS,
// syslog, statsd); it is not for a protocol with per-peer state in the
// process, such as QUIC, whose packets for the old generation's
// connections would reach the new one.
//
// -naive is a demonstration of what not to do, for the tests' mutation
// runs: when upgraded or stopped it closes its sockets at once and exits,
// so the datagrams it has read but not yet answered or written are lost.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/upgrade"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "udp:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:5300", "UDP listen address (empty: no UDP server)")
	sink := flag.String("sink", "", "also receive datagrams on a unixgram socket at this path (a syslog-style sink)")
	sinkLog := flag.String("sink-log", "", "append every datagram the sink receives, as one line, to this file (required with -sink)")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	upgradeTimeout := flag.Duration("upgrade-timeout", upgrade.DefaultUpgradeTimeout, "how long a new generation has to become ready")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long the datagrams already read have to be handled")
	delay := flag.Duration("delay", 0, "how long handling each datagram takes (work the drain must wait for)")
	readBuffer := flag.Int("read-buffer", 0, "receive buffer of the sockets, in bytes (0: the system's default; the kernel caps it at net.core.rmem_max)")
	control := flag.String("control", "", "serve the control socket (hitless reload|stop|status) at this path")
	fdStore := flag.Bool("fdstore", false, "keep the sockets in systemd's fd store (the unit needs FileDescriptorStoreMax=)")
	naive := flag.Bool("naive", false, "demonstration only: close the sockets at once when upgraded or stopped, dropping what was read")
	flag.Parse()
	if *addr == "" && *sink == "" {
		return errors.New("nothing to serve: -addr and -sink are both empty")
	}
	if *sink != "" && *sinkLog == "" {
		return errors.New("-sink needs -sink-log, the file its datagrams are appended to")
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{
		PIDFile:        *pidFile,
		UpgradeTimeout: *upgradeTimeout,
		DrainTimeout:   *drainTimeout,
		Logger:         log,
		ControlSocket:  *control,
		FDStore:        *fdStore,
	})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	var servers []*drain.Packet
	// dropping is set by the naive mode when it closes the sockets: from
	// then on, handlers drop the datagrams they hold, as a process that
	// exited there would (however long this one takes to exit).
	var dropping atomic.Bool
	listen := func(name, network, addr string) (net.PacketConn, error) {
		pc, err := upg.ListenPacket(context.Background(), name, network, addr)
		if err != nil {
			return nil, err
		}
		if *readBuffer > 0 {
			if err := setReadBuffer(pc, *readBuffer); err != nil {
				return nil, fmt.Errorf("socket %s: setting its receive buffer to %d bytes: %w", name, *readBuffer, err)
			}
		}
		return pc, nil
	}
	if *addr != "" {
		pc, err := listen("udp", "udp", *addr)
		if err != nil {
			return err
		}
		servers = append(servers, &drain.Packet{Conn: pc, Name: "udp", Handler: slow(*delay, &dropping, answer(log))})
	}
	if *sink != "" {
		// O_APPEND: every generation appends to the same file at once,
		// and each write lands whole at its end.
		f, err := os.OpenFile(*sinkLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("sink log: %w", err)
		}
		defer f.Close() // after the handlers are done (deferred calls run last first)
		pc, err := listen("sink", "unixgram", *sink)
		if err != nil {
			return err
		}
		servers = append(servers, &drain.Packet{Conn: pc, Name: "sink", Handler: slow(*delay, &dropping, appendLine(f, log))})
	}

	// Serve returns once the drain has stopped reading; the drain waits
	// for the handlers. The naive mode waits for nothing: whatever a
	// handler still holds when main returns is lost with the process.
	var serving sync.WaitGroup
	if !*naive {
		defer serving.Wait()
	}
	for _, p := range servers {
		serving.Go(func() {
			if err := p.Serve(); err != nil && !(*naive && errors.Is(err, net.ErrClosed)) {
				log.Error("serve", "server", p.Name, "err", err)
				upg.Stop()
			}
		})
	}
	if *naive {
		return upg.Run(context.Background(), closeAtOnce{servers, &dropping})
	}
	drainers := make([]drain.Drainer, len(servers))
	for i, p := range servers {
		drainers[i] = logged{p, log}
	}
	return upg.Run(context.Background(), drainers...)
}

type handler = func(conn net.PacketConn, p []byte, from net.Addr)

// slow makes h take delay (-delay) to handle each datagram; then, unless
// the naive mode is dropping them, it runs h.
func slow(delay time.Duration, dropping *atomic.Bool, h handler) handler {
	return func(conn net.PacketConn, p []byte, from net.Addr) {
		time.Sleep(delay)
		if !dropping.Load() {
			h(conn, p, from)
		}
	}
}

// answer returns the handler of the UDP server: "<id> <text>" is answered
// "<id> <pid> <text>".
func answer(log *slog.Logger) handler {
	pid := strconv.Itoa(os.Getpid())
	return func(conn net.PacketConn, p []byte, from net.Addr) {
		id, text, _ := bytes.Cut(p, []byte(" "))
		if _, err := conn.WriteTo(fmt.Appendf(nil, "%s %s %s", id, pid, text), from); err != nil {
			log.Warn("answer", "to", from, "err", err)
		}
	}
}

// appendLine returns the handler of the sink: each datagram becomes one
// line of f, written with a single write so that lines of several
// generations never interleave.
func appendLine(f *os.File, log *slog.Logger) handler {
	return func(_ net.PacketConn, p []byte, _ net.Addr) {
		line := append(bytes.ReplaceAll(bytes.TrimRight(p, "\n"), []byte("\n"), []byte(" ")), '\n')
		if _, err := f.Write(line); err != nil {
			log.Warn("sink", "err", err)
		}
	}
}

// logged logs a drain's report.
type logged struct {
	*drain.Packet
	log *slog.Logger
}

func (l logged) Drain(ctx context.Context) (drain.Report, error) {
	r, err := l.Packet.Drain(ctx)
	l.log.Info("drain report", "report", r)
	return r, err
}

// closeAtOnce is the naive "drain": it closes the sockets (this
// generation's descriptors; the next generation's stay open), drops what
// the handlers hold, and returns without waiting for them.
type closeAtOnce struct {
	servers  []*drain.Packet
	dropping *atomic.Bool
}

func (c closeAtOnce) Drain(context.Context) (drain.Report, error) {
	c.dropping.Store(true)
	for _, p := range c.servers {
		p.Conn.Close()
	}
	return drain.Report{Name: "naive (closed at once)"}, nil
}

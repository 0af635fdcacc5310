//go:build unix

package main

// TestZone checks the answers of the zone, TestPacketDrainAnswersInFlight
// and TestTCPDrainAnswersPipelined the UDP and TCP servers' drains in this
// process, and TestTCPThroughUpgrades what
// a DNS-over-TCP client that keeps its connection open sees when the
// built server is upgraded under it. outside_test.go drives the server
// with dnsperf.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/internal/harness"
)

var serverBin string

// naiveFlag runs the built server with -naive: the mutation, with which
// the upgrade tests must fail (go test -run ThroughUpgrades ./dns/ -args
// -dns.naive).
var naiveFlag = flag.Bool("dns.naive", false, "run the server with -naive (close at once instead of draining): the upgrade tests must then fail")

// The binary is built without the race detector: the load runs measure
// the server, not the detector (the in-process tests run under -race).
func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./dns", false, &serverBin)) }

func question(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	return m
}

func TestZone(t *testing.T) {
	z := newZone(4242, 0)
	for _, tc := range []struct {
		q       *dns.Msg
		rcode   int
		answers []string // the answers' data, in order
		soa     bool     // the SOA in the authority section
	}{
		{question("www.example.test.", dns.TypeA), dns.RcodeSuccess, []string{"192.0.2.1"}, false},
		{question("WWW.Example.TEST.", dns.TypeAAAA), dns.RcodeSuccess, []string{"2001:db8::1"}, false},
		{question("mail.example.test.", dns.TypeA), dns.RcodeSuccess, []string{"192.0.2.2"}, false},
		{question("example.test.", dns.TypeMX), dns.RcodeSuccess, []string{"10 mail.example.test."}, false},
		{question("example.test.", dns.TypeNS), dns.RcodeSuccess, []string{"ns.example.test."}, false},
		{question("txt.example.test.", dns.TypeTXT), dns.RcodeSuccess, []string{`"hitless example zone"`}, false},
		{question("pid.example.test.", dns.TypeTXT), dns.RcodeSuccess, []string{`"4242"`}, false},
		// NODATA: the name exists, not the type.
		{question("www.example.test.", dns.TypeMX), dns.RcodeSuccess, nil, true},
		{question("nope.example.test.", dns.TypeA), dns.RcodeNameError, nil, true},
		{question("a.b.www.example.test.", dns.TypeA), dns.RcodeNameError, nil, true},
		{question("example.com.", dns.TypeA), dns.RcodeRefused, nil, false},
		{question("notexample.test.", dns.TypeA), dns.RcodeRefused, nil, false},
		{func() *dns.Msg {
			m := question("www.example.test.", dns.TypeA)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}(), dns.RcodeRefused, nil, false},
		{func() *dns.Msg { m := question("example.test.", dns.TypeSOA); m.Opcode = dns.OpcodeNotify; return m }(), dns.RcodeNotImplemented, nil, false},
	} {
		q := tc.q.Question[0]
		t.Run(fmt.Sprintf("%s/%s/%s", q.Name, dns.TypeToString[q.Qtype], dns.OpcodeToString[tc.q.Opcode]), func(t *testing.T) {
			m := z.answer(tc.q)
			var got []string
			for _, rr := range m.Answer {
				got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
			}
			if m.Rcode != tc.rcode || m.Id != tc.q.Id || !m.Response || strings.Join(got, "|") != strings.Join(tc.answers, "|") {
				t.Errorf("rcode %s, id %d, answers %q; want %s, id %d, %q", dns.RcodeToString[m.Rcode], m.Id, got, dns.RcodeToString[tc.rcode], tc.q.Id, tc.answers)
			}
			if soa := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA; soa != tc.soa {
				t.Errorf("SOA in the authority section: %v, want %v (%v)", soa, tc.soa, m.Ns)
			}
			if inZone := tc.rcode != dns.RcodeRefused && tc.rcode != dns.RcodeNotImplemented; m.Authoritative != inZone || m.RecursionAvailable {
				t.Errorf("authoritative %v, recursion available %v; want %v, false", m.Authoritative, m.RecursionAvailable, inZone)
			}
		})
	}
}

// TestPacketDrainAnswersInFlight serves the zone, with a delay, over a
// UDP socket through the example's udpServer (a drain.Packet read by
// miekg/dns), drains it while queries are in flight, and checks that each
// of them was answered, that a query sent after the drain began is not
// read (the socket stays open for the next generation, which here reads
// it afterwards itself), and what the report says.
func TestPacketDrainAnswersInFlight(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A second descriptor of the same socket: the next generation's.
	f, err := pc.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	next, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()

	const inFlight = 20
	u := newUDP(pc, newZone(1, 300*time.Millisecond))
	served := make(chan error, 1)
	go func() { served <- u.srv.ActivateAndServe() }()
	<-u.started

	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	send := func(id uint16) {
		t.Helper()
		m := question("www.example.test.", dns.TypeA)
		m.Id = id
		b, _ := m.Pack()
		if _, err := client.WriteTo(b, pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range inFlight {
		send(uint16(i + 1))
	}
	// The handlers are sleeping by now: the drain has them to wait for.
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	drained := make(chan drain.Report, 1)
	go func() {
		r, err := u.Drain(ctx)
		if err != nil {
			t.Errorf("drain: %v", err)
		}
		drained <- r
	}()
	<-u.pkt.WrapUp()
	send(1000) // for the next generation

	answered := map[uint16]bool{}
	buf := make([]byte, 512)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	readAnswer := func() uint16 {
		t.Helper()
		n, _, err := client.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d answers: %v", len(answered), err)
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Fatalf("answer %v: %v", &m, err)
		}
		if answered[m.Id] {
			t.Fatalf("query %d answered twice", m.Id)
		}
		answered[m.Id] = true
		return m.Id
	}
	for i := uint16(1); i <= inFlight; i++ {
		for !answered[i] {
			readAnswer()
		}
	}
	r := <-drained
	if err := <-served; err != nil {
		t.Errorf("ActivateAndServe: %v", err)
	}
	t.Logf("report: %v", r)
	// A read that was already under way when the drain stopped reading
	// (past the poller's deadline check, not yet in recvfrom) can still
	// return the query sent during the drain: then this generation
	// answers it, and the drain waited for that answer too. Otherwise it
	// waits in the socket for the next generation. Either way it is
	// answered once.
	late := 0
	if r.Datagrams == inFlight+1 {
		late = 1
		if !answered[1000] {
			if id := readAnswer(); id != 1000 {
				t.Errorf("answer to query %d, want 1000", id)
			}
		}
		t.Logf("the query sent during the drain was read by a read already under way, and answered")
	}
	if r.Datagrams != inFlight+late || r.Answers != inFlight+late || r.Cut != 0 {
		t.Errorf("report %v: want %d datagrams, %d answers, none cut", r, inFlight+late, inFlight+late)
	}
	if late == 0 {
		next.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := next.ReadFrom(buf)
		var m dns.Msg
		if err != nil || m.Unpack(buf[:n]) != nil || m.Id != 1000 {
			t.Errorf("the next generation read %v, %v; want the query sent during the drain", &m, err)
		}
	}
}

// tcpClient keeps one TCP connection open and asks pid.example.test. TXT
// on it, one query at a time, as a resolver that keeps its connection to
// an authoritative server does. When the server closes the connection it
// dials again and, if the query it had sent got no answer, sends it again
// (RFC 7766, section 6.2.3, asks that of a client whose connection the
// server closed).
type tcpClient struct {
	addr string
	conn *dns.Conn

	queries int         // queries answered
	closes  int         // connections the server closed
	resent  int         // queries sent again on a new connection
	pids    map[int]int // answers by serving pid
	errs    []string
}

func (c *tcpClient) dial() error {
	conn, err := dns.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return err
	}
	c.conn = conn
	return nil
}

// ask sends one query and reads its answer, resending it once on a new
// connection if the server closed the one it was sent on.
func (c *tcpClient) ask(id uint16) error {
	for try := 0; ; try++ {
		m := question("pid.example.test.", dns.TypeTXT)
		m.Id = id
		c.conn.SetDeadline(time.Now().Add(5 * time.Second))
		err := c.conn.WriteMsg(m)
		var r *dns.Msg
		if err == nil {
			r, err = c.conn.ReadMsg()
		}
		if err == nil {
			if r.Id != id || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				return fmt.Errorf("query %d: answer %v", id, r)
			}
			pid, _ := strconv.Atoi(r.Answer[0].(*dns.TXT).Txt[0])
			c.pids[pid]++
			c.queries++
			return nil
		}
		// A connection the server closed: EOF, or a reset if our query
		// reached it after it closed.
		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			return fmt.Errorf("query %d: %w", id, err)
		}
		c.closes++
		if try > 0 {
			return fmt.Errorf("query %d: the new connection was closed too: %w", id, err)
		}
		c.resent++
		c.conn.Close()
		if err := c.dial(); err != nil {
			return err
		}
	}
}

// TestTCPThroughUpgrades upgrades the server 5 times while 4 clients each
// keep a TCP connection open and query on it back to back. What they see
// is what the package documentation says: the old generation closes each
// connection between two queries (never in the middle of an answer, never
// with an answer lost), and the query a client sends at that moment gets
// no answer on that connection, but is answered by the new generation
// when sent again on a new one. The test asserts that every query was
// answered, at most once resent, and logs how often a resend was needed.
func TestTCPThroughUpgrades(t *testing.T) {
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "dns.pid")
	args := []string{"-addr", addr, "-pidfile", pidFile, "-delay", "1ms"}
	if *naiveFlag {
		args = append(args, "-naive")
	}
	s, logFile := harness.StartT(t, harness.Config{Binary: serverBin, Args: args, PIDFile: pidFile})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const clients, upgrades = 4, 5
	stop := make(chan struct{})
	var wg sync.WaitGroup
	cs := make([]*tcpClient, clients)
	for i := range cs {
		c := &tcpClient{addr: addr, pids: map[int]int{}}
		if err := c.dial(); err != nil {
			t.Fatal(err)
		}
		cs[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.conn.Close()
			for id := uint16(1); ; id++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				if err := c.ask(id); err != nil {
					c.errs = append(c.errs, err.Error())
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	pids := []int{s.PID()}
	for i := range upgrades {
		u, err := s.Upgrade(ctx)
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		if u.Old != pids[len(pids)-1] || u.New == u.Old {
			t.Errorf("upgrade %d: %d -> %d; want a new generation after %d", i+1, u.Old, u.New, pids[len(pids)-1])
		}
		pids = append(pids, u.New)
		time.Sleep(300 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	var queries, closes, resent int
	for i, c := range cs {
		t.Logf("client %d: %d queries answered, %d connections closed by the server, %d queries resent; answers by pid %v", i+1, c.queries, c.closes, c.resent, c.pids)
		for _, e := range c.errs {
			t.Errorf("client %d: %s", i+1, e)
		}
		queries += c.queries
		closes += c.closes
		resent += c.resent
		// Every client's connection was ended by each generation in turn,
		// and the last one serves it now.
		if c.pids[pids[len(pids)-1]] == 0 || len(c.pids) != len(pids) {
			t.Errorf("client %d: answers by pid %v; want answers from each of the generations %v", i+1, c.pids, pids)
		}
	}
	t.Logf("%d clients, %d upgrades: %d queries answered, %d connections closed by the server, %d queries needed a resend on a new connection",
		clients, upgrades, queries, closes, resent)
	if queries < clients*upgrades*10 {
		t.Errorf("only %d queries answered", queries)
	}
	checkDrainReports(t, logFile, pids[:upgrades])
}

// checkDrainReports checks, in the server's log, that each of the
// generations old drained its UDP and TCP servers without cutting
// anything, and logs the TCP reports: the connections open when the drain
// began, and how long they took to close.
func checkDrainReports(t *testing.T, logFile string, old []int) {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	drained := map[string]int{}
	var tcp []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "msg=drained") {
			continue
		}
		f := map[string]string{}
		for _, kv := range strings.Fields(line) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				f[k] = v
			}
		}
		drained[f["pid"]+" "+f["server"]]++
		if f["cut"] != "0" {
			t.Errorf("generation %s cut %s of %s's work: %s", f["pid"], f["cut"], f["server"], line)
		}
		if f["server"] == "dns-tcp" && f["open"] != "0" {
			tcp = append(tcp, fmt.Sprintf("open=%s ended=%s took=%s", f["open"], f["ended"], f["took"]))
		}
	}
	for _, pid := range old {
		for _, srv := range []string{"dns-udp", "dns-tcp"} {
			if drained[fmt.Sprintf("%d %s", pid, srv)] != 1 {
				t.Errorf("generation %d logged %d drain reports for %s, want 1", pid, drained[fmt.Sprintf("%d %s", pid, srv)], srv)
			}
		}
	}
	if len(tcp) > 0 {
		t.Logf("TCP drains with connections: %s", strings.Join(tcp, "; "))
	}
}

// TestTCPDrainAnswersPipelined serves the zone, with a delay, over TCP
// through the example's tcpServer in this process (under -race), pipelines
// queries on one connection, drains while they are in flight, and checks
// that each was answered before the connection ended, with a clean end of
// file rather than a reset, and that a malformed query gets FORMERR.
func TestTCPDrainAnswersPipelined(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newTCP(ln, newZone(1, 200*time.Millisecond), slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()

	conn, err := dns.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	const pipelined = 10
	for i := range pipelined {
		m := question("www.example.test.", dns.TypeA)
		m.Id = uint16(i + 1)
		if err := conn.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// A message too short for a header, but with an ID: FORMERR. (The
	// net.Conn's Write: dns.Conn's would add a length of its own.)
	if _, err := conn.Conn.Write([]byte{0, 4, 0xbe, 0xef, 0, 0}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // read, and being answered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	drained := make(chan drain.Report, 1)
	go func() {
		r, err := srv.Drain(ctx)
		if err != nil {
			t.Errorf("drain: %v", err)
		}
		drained <- r
	}()

	answered := map[uint16]int{}
	for {
		r, err := conn.ReadMsg()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %d answers: %v; want answers, then end of file", len(answered), err)
		}
		answered[r.Id] = r.Rcode
	}
	for i := range pipelined {
		if rc, ok := answered[uint16(i+1)]; !ok || rc != dns.RcodeSuccess {
			t.Errorf("query %d: answered %v with %s", i+1, ok, dns.RcodeToString[rc])
		}
	}
	if rc, ok := answered[0xbeef]; !ok || rc != dns.RcodeFormatError {
		t.Errorf("malformed query: answered %v with %s, want FORMERR", ok, dns.RcodeToString[rc])
	}
	conn.Close() // the server lingers until the client closes
	r := <-drained
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	t.Logf("report: %v", r)
	if r.Open != 1 || r.Ended != 1 || r.Cut != 0 {
		t.Errorf("report %v: want the one connection open, ended, not cut", r)
	}
}

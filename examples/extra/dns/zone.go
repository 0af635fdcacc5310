package main

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Zone is the one zone the server is authoritative for.
const Zone = "example.test."

// ttl is the TTL of every record: short, since the answers of a test
// server are not worth caching.
const ttl = 60

// zone answers queries for Zone from a fixed table: the records of a name
// that has them, NOERROR with no answer (and the SOA) for a name that
// exists without records of the type asked, NXDOMAIN for a name under the
// zone that does not exist, REFUSED for a name outside it. It never
// recurses. pid.example.test. TXT names the serving process, so that a
// client can tell the generations apart.
type zone struct {
	records map[string][]dns.RR // by owner name, lower case
	soa     *dns.SOA
	delay   time.Duration // how long each answer takes (a stand-in for a backend)
}

func newZone(pid int, delay time.Duration) *zone {
	z := &zone{records: make(map[string][]dns.RR), delay: delay}
	z.soa = &dns.SOA{
		Hdr:     dns.RR_Header{Name: Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "ns." + Zone,
		Mbox:    "hostmaster." + Zone,
		Serial:  2026120101,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: ttl,
	}
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name + Zone, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	for _, rr := range []dns.RR{
		z.soa,
		&dns.NS{Hdr: hdr("", dns.TypeNS), Ns: "ns." + Zone},
		&dns.A{Hdr: hdr("ns.", dns.TypeA), A: net.ParseIP("192.0.2.53")},
		&dns.A{Hdr: hdr("www.", dns.TypeA), A: net.ParseIP("192.0.2.1")},
		&dns.AAAA{Hdr: hdr("www.", dns.TypeAAAA), AAAA: net.ParseIP("2001:db8::1")},
		&dns.A{Hdr: hdr("mail.", dns.TypeA), A: net.ParseIP("192.0.2.2")},
		&dns.MX{Hdr: hdr("", dns.TypeMX), Preference: 10, Mx: "mail." + Zone},
		&dns.TXT{Hdr: hdr("txt.", dns.TypeTXT), Txt: []string{"hitless example zone"}},
		&dns.TXT{Hdr: hdr("pid.", dns.TypeTXT), Txt: []string{strconv.Itoa(pid)}},
	} {
		name := strings.ToLower(rr.Header().Name)
		z.records[name] = append(z.records[name], rr)
	}
	return z
}

// answer builds the response to req.
func (z *zone) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		return m.SetRcode(req, dns.RcodeNotImplemented)
	}
	m.SetReply(req)
	m.RecursionAvailable = false
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET || !dns.IsSubDomain(Zone, name) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	rrs, ok := z.records[name]
	if !ok {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{z.soa}
		return m
	}
	for _, rr := range rrs {
		if t := rr.Header().Rrtype; t == q.Qtype || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, rr)
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{z.soa} // NODATA: the name exists, not the type
	}
	return m
}

// respond returns the answer to req after z.delay.
func (z *zone) respond(req *dns.Msg) *dns.Msg {
	if z.delay > 0 {
		time.Sleep(z.delay)
	}
	return z.answer(req)
}

// ServeDNS answers w's query, for miekg/dns's server (UDP). A message
// that does not parse never reaches it: the library answers FORMERR
// itself where it can.
func (z *zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	// An error is the client's loss (it went away) or the socket's end
	// at a cut; the drain report counts the latter.
	_ = w.WriteMsg(z.respond(req))
}

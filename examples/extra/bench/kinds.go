package main

import (
	"context"
	"slices"
	"time"

	"github.com/hitlessgo/hitless/internal/loadgen"
	"github.com/hitlessgo/hitless/internal/timeline"
)

// Packages the bench builds, by import path: the go command resolves the
// library's own packages through this module's replace directive, so one
// build command works for both modules.
const (
	pkgHTTP     = "github.com/hitlessgo/hitless/examples/http"
	pkgTCP      = "github.com/hitlessgo/hitless/examples/tcp"
	pkgWeb      = "github.com/hitlessgo/hitless/examples/extra/web"
	pkgGRPC     = "github.com/hitlessgo/hitless/examples/extra/grpc"
	pkgBaseline = "github.com/hitlessgo/hitless/internal/baseline"
)

// serverSpec is one server a kind runs against.
type serverSpec struct {
	name string // "hitless" or "tableflip-readme"
	pkg  string
	// addrs is how many free loopback addresses it needs; the client
	// drives the first.
	addrs int
	// args are its flags other than -pidfile: the addresses, and nothing
	// else that the example's defaults do not say, because the defaults
	// are what users copy.
	args func(addrs []string) []string
	tls  bool // the client speaks TLS to it (the example's self-signed certificate)
}

type kindSpec struct {
	name    string
	servers []serverSpec
}

func addrFlag(a []string) []string { return []string{"-addr", a[0]} }

var (
	hitlessHTTP = serverSpec{name: "hitless", pkg: pkgHTTP, addrs: 1, args: addrFlag}
	readmeHTTP  = serverSpec{name: "tableflip-readme", pkg: pkgBaseline, addrs: 1, args: addrFlag}
	hitlessWeb  = serverSpec{name: "hitless", pkg: pkgWeb, addrs: 1, args: addrFlag}
)

// kinds lists every traffic kind in the order they run and are reported.
var kinds = []kindSpec{
	{"http1-keepalive", []serverSpec{hitlessHTTP, readmeHTTP}},
	{"http1-newconn", []serverSpec{hitlessHTTP, readmeHTTP}},
	{"h2c", []serverSpec{hitlessWeb, {
		name: "tableflip-readme", pkg: pkgBaseline, addrs: 1,
		args: func(a []string) []string { return []string{"-addr", a[0], "-h2c"} },
	}}},
	{"h2-tls", []serverSpec{{
		name: "hitless", pkg: pkgWeb, addrs: 2, tls: true,
		// The TLS listener is the one measured; -addr is set only so
		// that its default port cannot collide with anything.
		args: func(a []string) []string { return []string{"-tls-addr", a[0], "-addr", a[1]} },
	}}},
	{"grpc-unary", []serverSpec{{name: "hitless", pkg: pkgGRPC, addrs: 1, args: addrFlag}}},
	{"websocket-echo", []serverSpec{hitlessWeb}},
	{"raw-tcp", []serverSpec{{name: "hitless", pkg: pkgTCP, addrs: 1, args: addrFlag}}},
}

func kindNames() []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.name
	}
	return names
}

func init() {
	clients["http1-keepalive"] = loadgenClient(loadgen.KeepAlive)
	clients["http1-newconn"] = loadgenClient(loadgen.NewConn)
	clients["raw-tcp"] = rawTCP
}

// loadgenClient drives internal/loadgen, the HTTP/1.1 client that never
// retries, at t.Rate requests per second on the schedule the other
// clients keep (pacer): each of t.Conns workers starts a request every
// Conns/Rate, offset from each other by 1/Rate, catches up when late and
// drops the slots it missed when more than 250 ms behind
// (loadgen.Config.Interval). Unlike the other clients, loadgen dials a
// worker's first connection with its first request, which therefore
// includes the dial; a connection the server ended is redialled the same
// way, and that time is the request's Reconnect.
func loadgenClient(k loadgen.Kind) kindClient {
	return func(ctx context.Context, t target) ([]timeline.Request, error) {
		res, err := loadgen.Run(ctx, loadgen.Config{
			Kind:     k,
			Addr:     t.Addr,
			Workers:  t.Conns,
			Interval: time.Duration(int64(t.Conns) * int64(time.Second) / int64(t.Rate)),
			Samples:  true,
		})
		return byStart(timeline.FromLoadgen(res.Samples)), err
	}
}

// byStart sorts requests by start, as kindClient promises: each
// connection's requests come in order, but the connections one after
// another.
func byStart(reqs []timeline.Request) []timeline.Request {
	slices.SortFunc(reqs, func(a, b timeline.Request) int { return a.Start.Compare(b.Start) })
	return reqs
}

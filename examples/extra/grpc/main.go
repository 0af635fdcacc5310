// Command grpc is a gRPC server with hitless upgrades: send it SIGHUP to
// replace it with the binary now at its path, SIGTERM to drain and stop.
//
// Its service, hitless.example.Echo, is described by hand below (no protoc
// needed) and exchanges protobuf well-known wrapper messages:
//
//	Echo(StringValue) returns (StringValue)          "<pid>: <text>"
//	Count(UInt32Value n) returns (stream StringValue) n messages, one every 10 ms
//
// When this generation drains, Count streams end early but cleanly: the
// last complete message, then status OK with the trailer
// "hitless-ended: going-away", so the client knows to ask the next
// generation for the rest. drain.Stopper stops accepting, lets every
// connection already accepted be served, calls GracefulStop (GOAWAY, let
// the RPCs finish) and, at the drain deadline, Stop. docs/grpc.md says what
// a client sees.
//
// Each generation logs, as it exits, how many RPCs reached it ("rpcs
// served"), so that a test can check that every RPC a load tool made was
// answered by some generation.
//
// echo.proto describes the service for tools that need a .proto file:
//
//	ghz --insecure --proto echo.proto --call hitless.example.Echo.Echo -d '"hi"' 127.0.0.1:9090
//	ghz --insecure --proto echo.proto --call hitless.example.Echo.Count -d '5' 127.0.0.1:9090
//
// (The messages are wrappers, whose JSON form is the bare value.)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/upgrade"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "grpc:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long RPCs have to end")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	upg, err := upgrade.New(upgrade.Options{PIDFile: *pidFile, DrainTimeout: *drainTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	inner, err := upg.Listen(context.Background(), "grpc", "tcp", *addr)
	if err != nil {
		return err
	}
	// The Listener is not only for the report: through it, Stopper stops
	// accepting before GracefulStop and lets the server take up every
	// connection it has accepted, which GracefulStop alone would close
	// unanswered (see drain.Stopper).
	ln := &drain.Listener{Listener: inner}
	gs := grpc.NewServer()
	stopper := &drain.Stopper{Server: gs, Listener: ln}
	es := &echoServer{pid: strconv.Itoa(os.Getpid()), wrapUp: stopper.WrapUp()}
	gs.RegisterService(&echoService, es)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(ln) }()
	err = upg.Run(context.Background(), logged{stopper, log})
	// Serve has returned: GracefulStop or Stop made it, and every handler
	// has returned.
	if serr := <-served; serr != nil && !errors.Is(serr, grpc.ErrServerStopped) {
		log.Error("serve", "err", serr)
	}
	log.Info("rpcs served", "echo", es.echoes.Load(), "count", es.counts.Load(), "count_wrapped_up", es.wrapped.Load())
	return err
}

// logged logs a drain's full report.
type logged struct {
	drain.Drainer
	log *slog.Logger
}

func (l logged) Drain(ctx context.Context) (drain.Report, error) {
	r, err := l.Drainer.Drain(ctx)
	l.log.Info("drain report", "report", r)
	return r, err
}

type echoServer struct {
	pid    string
	wrapUp <-chan struct{}
	// RPCs that reached this generation: Echo calls, Count streams, and
	// the Count streams it ended early because it was draining.
	echoes, counts, wrapped atomic.Int64
}

func (s *echoServer) echo(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	s.echoes.Add(1)
	return wrapperspb.String(s.pid + ": " + in.GetValue()), nil
}

func (s *echoServer) count(n *wrapperspb.UInt32Value, stream grpc.ServerStream) error {
	s.counts.Add(1)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := range n.GetValue() {
		select {
		case <-tick.C:
		case <-s.wrapUp:
			// End at a message boundary, and say why.
			s.wrapped.Add(1)
			stream.SetTrailer(metadata.Pairs("hitless-ended", "going-away"))
			return nil
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		msg := wrapperspb.String(fmt.Sprintf("%d %s", i+1, s.pid))
		if err := stream.SendMsg(msg); err != nil {
			return err
		}
	}
	return nil
}

// echoService is what protoc would generate for the service in
// echo.proto:
//
//	service Echo {
//	  rpc Echo(google.protobuf.StringValue) returns (google.protobuf.StringValue);
//	  rpc Count(google.protobuf.UInt32Value) returns (stream google.protobuf.StringValue);
//	}
var echoService = grpc.ServiceDesc{
	ServiceName: "hitless.example.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*echoServer).echo(ctx, in)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Count",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			n := new(wrapperspb.UInt32Value)
			if err := stream.RecvMsg(n); err != nil {
				return err
			}
			return srv.(*echoServer).count(n, stream)
		},
	}},
}

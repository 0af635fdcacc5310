//go:build unix

package main

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hitlessgo/hitless/drain"
)

// BenchmarkUnary measures the request-path cost of serving gRPC through a
// drain.Listener (the connection tracking drain.Stopper counts with)
// against the same server on a plain listener, side by side:
//
//	(cd examples/extra && go test -run '^$' -bench Unary -benchmem ./grpc/)
func BenchmarkUnary(b *testing.B) {
	run := func(b *testing.B, ln net.Listener) {
		gs := grpc.NewServer()
		gs.RegisterService(&echoService, &echoServer{pid: "1"})
		go gs.Serve(ln)
		defer gs.Stop()
		cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		in := wrapperspb.String("hello, hitless")
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			out := new(wrapperspb.StringValue)
			for pb.Next() {
				if err := cc.Invoke(context.Background(), "/hitless.example.Echo/Echo", in, out); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	listen := func(b *testing.B) net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		return ln
	}
	b.Run("plain", func(b *testing.B) { run(b, listen(b)) })
	b.Run("drain", func(b *testing.B) { run(b, &drain.Listener{Listener: listen(b)}) })
}

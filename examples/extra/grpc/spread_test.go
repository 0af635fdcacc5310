//go:build unix

package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/internal/h2watch"
	"github.com/hitlessgo/hitless/internal/harness"
)

// TestGoAwaysSpreadOverConnections checks that an upgrade tells the
// clients of its connections to go one after another, over
// drain.Stopper's spread, rather than in one instant in which they would
// all reconnect to the new generation at once.
func TestGoAwaysSpreadOverConnections(t *testing.T) {
	const conns = 12
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "grpc.pid")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, _ := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile}, PIDFile: pidFile})

	// gRPC here is HTTP/2 in the clear: its frames can be read on the
	// wire.
	watched := new(h2watch.Dialer)
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return watched.DialContext(ctx, "tcp", addr) }
	for i := range conns {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		text := fmt.Sprintf("conn %d", i)
		out := new(wrapperspb.StringValue)
		err = cc.Invoke(rctx, "/hitless.example.Echo/Echo", wrapperspb.String(text), out)
		rcancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	first := watched.Conns()
	if len(first) != conns {
		t.Fatalf("%d connections dialled, want %d", len(first), conns)
	}
	u, err := s.Upgrade(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var told []time.Duration
	for _, w := range first {
		if _, at := w.GoAways(); !at.IsZero() {
			told = append(told, at.Sub(u.Ready))
		}
	}
	slices.Sort(told)
	t.Logf("GOAWAYs after the new generation was ready: %v", told)
	if len(told) != conns {
		t.Fatalf("%d of %d connections had a GOAWAY", len(told), conns)
	}
	spread := told[len(told)-1] - told[0]
	if spread < drain.DefaultSpread/2 {
		t.Errorf("the GOAWAYs came within %v of each other; want them spread over %v", spread, drain.DefaultSpread)
	}
	tenth := drain.DefaultSpread / 10
	same := map[time.Duration]int{}
	for _, d := range told {
		same[(d-told[0])/tenth]++
	}
	for k, n := range same {
		if n > conns/3 {
			t.Errorf("%d of %d GOAWAYs in the same %v (the %dth)", n, conns, tenth, k)
		}
	}
}

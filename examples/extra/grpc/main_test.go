//go:build unix

package main

// TestUpgradesUnderLoad builds this program (with -race) and upgrades it 20
// times while unary RPCs run back to back and server-streaming RPCs stream,
// counting every failed RPC. gRPC's transparent retries (of RPCs a GOAWAY
// kept from reaching the server) are counted, not hidden.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hitlessgo/hitless/internal/harness"
	"github.com/hitlessgo/hitless/internal/loadgen"
)

var serverBin string

func TestMain(m *testing.M) { os.Exit(harness.RunWithBinary(m, "./grpc", true, &serverBin)) }

// retryCounter counts gRPC's transparent retries.
type retryCounter struct{ n atomic.Int64 }

func (r *retryCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (r *retryCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if b, ok := s.(*stats.Begin); ok && b.IsTransparentRetryAttempt {
		r.n.Add(1)
	}
}
func (r *retryCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (r *retryCounter) HandleConn(context.Context, stats.ConnStats)                       {}

type tally struct {
	mu                    sync.Mutex
	ok, failed, wrappedUp int64
	pids                  map[string]int
	errs                  []string
	lat                   loadgen.Recorder // unary calls answered correctly
}

func (t *tally) fail(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed++
	if len(t.errs) < 20 {
		t.errs = append(t.errs, time.Now().Format("15:04:05.000000 ")+fmt.Sprintf(format, args...))
	}
}

func (t *tally) good(pid string, wrappedUp bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ok++
	if pid != "" { // a stream told to wrap up before its first message has none
		t.pids[pid]++
	}
	if wrappedUp {
		t.wrappedUp++
	}
}

func unary(ctx context.Context, cc *grpc.ClientConn, id int, t *tally) {
	for i := 0; ctx.Err() == nil; i++ {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out := new(wrapperspb.StringValue)
		text := fmt.Sprintf("worker %d call %d", id, i)
		sent := time.Now()
		err := cc.Invoke(rctx, "/hitless.example.Echo/Echo", wrapperspb.String(text), out)
		took := time.Since(sent)
		cancel()
		pid, rest, _ := strings.Cut(out.GetValue(), ": ")
		switch {
		case err != nil:
			t.fail("unary %d: %v", id, err)
		case rest != text:
			t.fail("unary %d: got %q for %q", id, out.GetValue(), text)
		default:
			t.lat.Record(sent, took)
			t.good(pid, false)
		}
	}
}

var countDesc = grpc.StreamDesc{StreamName: "Count", ServerStreams: true}

// streams asks for n messages at a time and checks that each stream
// delivers 1..n in order, or 1..k and ends cleanly with the going-away
// trailer.
func streams(ctx context.Context, cc *grpc.ClientConn, id int, n uint32, t *tally) {
	for ctx.Err() == nil {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := func() error {
			s, err := cc.NewStream(sctx, &countDesc, "/hitless.example.Echo/Count")
			if err != nil {
				return err
			}
			if err := s.SendMsg(wrapperspb.UInt32(n)); err != nil {
				return err
			}
			if err := s.CloseSend(); err != nil {
				return err
			}
			got, pid := uint32(0), ""
			for {
				m := new(wrapperspb.StringValue)
				err := s.RecvMsg(m)
				if err == io.EOF {
					break
				}
				if err != nil {
					return fmt.Errorf("after %d messages: %w", got, err)
				}
				i, p, _ := strings.Cut(m.GetValue(), " ")
				if want := strconv.Itoa(int(got) + 1); i != want || (pid != "" && p != pid) {
					return fmt.Errorf("message %q after %d from %s", m.GetValue(), got, pid)
				}
				got, pid = got+1, p
			}
			early := s.Trailer().Get("hitless-ended")
			switch {
			case got == n:
				t.good(pid, false)
			case slices.Equal(early, []string{"going-away"}):
				t.good(pid, true)
			default:
				return fmt.Errorf("stream ended after %d of %d messages without saying why", got, n)
			}
			return nil
		}()
		cancel()
		if err != nil {
			t.fail("stream %d: %v", id, err)
		}
	}
}

func TestUpgradesUnderLoad(t *testing.T) {
	const upgrades = 20
	dir := t.TempDir()
	addr, err := harness.FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "grpc.pid")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, logPath := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile}, PIDFile: pidFile})

	retries := new(retryCounter)
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(retries))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	un := &tally{pids: make(map[string]int)}
	st := &tally{pids: make(map[string]int)}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { unary(loadCtx, cc, i, un) })
		wg.Go(func() { streams(loadCtx, cc, i, 30, st) })
	}
	time.Sleep(300 * time.Millisecond)
	var exits []time.Duration
	var signalled []time.Time
	for i := range upgrades {
		u, err := s.Upgrade(ctx)
		if err != nil {
			stopLoad()
			wg.Wait()
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		exits = append(exits, u.OldExited.Sub(u.Ready))
		signalled = append(signalled, u.Signalled)
		if u.OldReaped && (!u.OldStatus.Exited() || u.OldStatus.ExitStatus() != 0) {
			t.Errorf("upgrade %d: old generation ended with %v", i+1, u.OldStatus)
		}
		time.Sleep(150 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	wg.Wait()
	slices.Sort(exits)
	t.Logf("%d upgrades; old generation gone after the new one was ready: median %v, max %v", upgrades,
		exits[len(exits)/2].Round(time.Millisecond), exits[len(exits)-1].Round(time.Millisecond))
	t.Logf("unary: %d ok, %d failed, %d generations", un.ok, un.failed, len(un.pids))
	t.Logf("unary: %s", un.lat.Summary(signalled, 500*time.Millisecond))
	t.Logf("server streams (30 x 10 ms): %d ok (%d of them ended early and cleanly at a drain), %d failed, %d generations",
		st.ok, st.wrappedUp, st.failed, len(st.pids))
	t.Logf("transparent retries by gRPC (RPCs a GOAWAY kept from the old server): %d", retries.n.Load())
	for name, tl := range map[string]*tally{"unary": un, "stream": st} {
		if tl.failed != 0 {
			t.Errorf("%s: %d failures:\n%s", name, tl.failed, strings.Join(tl.errs, "\n"))
		}
		if len(tl.pids) < upgrades {
			t.Errorf("%s: answers from %d generations, want %d", name, len(tl.pids), upgrades+1)
		}
	}
	if st.wrappedUp < upgrades {
		t.Errorf("only %d streams were told to wrap up, want at least one per upgrade", st.wrappedUp)
	}
	stctx, stcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer stcancel()
	if code, err := s.Stop(stctx); err != nil || code.ExitStatus() != 0 {
		t.Errorf("stop: %v, %v; want exit status 0", code, err)
	}
	b, _ := os.ReadFile(logPath)
	cuts := strings.Count(string(b), "cut at the deadline")
	var reports []string
	for l := range strings.Lines(string(b)) {
		if i := strings.Index(l, "report.open="); i >= 0 {
			reports = append(reports, strings.TrimSpace(l[i:]))
		}
	}
	if len(reports) > 1 {
		t.Logf("%d drain reports, e.g. %s", len(reports), reports[len(reports)/2])
	}
	if cuts != 0 {
		t.Errorf("%d drains cut connections", cuts)
	}
}

// TestStreamPastDeadlineIsStopped holds an RPC whose handler ignores
// WrapUp (a stream whose request never comes: the handler waits in
// RecvMsg) and checks that GracefulStop is cut short by Stop at the drain
// deadline, and that the report says so.
func TestStreamPastDeadlineIsStopped(t *testing.T) {
	dir := t.TempDir()
	addr, err := harness.FreeTCPAddr()
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "grpc.pid")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, logPath := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile, "-drain-timeout", "700ms"}, PIDFile: pidFile})
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	stream, err := cc.NewStream(sctx, &countDesc, "/hitless.example.Echo/Count")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the stream reaches the server
	pid := s.PID()
	begin := time.Now()
	if err := s.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	recvErr := stream.RecvMsg(new(wrapperspb.StringValue))
	cutAfter := time.Since(begin)
	st, err := s.WaitExit(ctx, pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stream ended %v after SIGTERM (deadline 700ms) with %v", cutAfter.Round(time.Millisecond), recvErr)
	if recvErr == nil || recvErr == io.EOF {
		t.Errorf("stuck stream ended with %v, want an error", recvErr)
	}
	if cutAfter < 650*time.Millisecond || cutAfter > 1500*time.Millisecond {
		t.Errorf("stream cut %v after SIGTERM, want at the 700ms deadline", cutAfter)
	}
	b, _ := os.ReadFile(logPath)
	if !strings.Contains(string(b), "drain grpc: 1 connection(s) cut at the deadline") {
		t.Errorf("log does not report the cut:\n%s", b)
	}
	if st.ExitStatus() != 1 {
		t.Errorf("exit status %d, want 1 when an RPC was cut", st.ExitStatus())
	}
}

// TestNewConnectionsThroughUpgrades upgrades 20 times while clients open a
// new connection for every RPC, so that connections keep arriving while
// generations drain. The one that the old generation accepts just as its
// drain begins must be served (and sent a GOAWAY), not closed before the
// server's HTTP/2 preface, which fails the RPC waiting for it with
// "error reading server preface" or "connection reset by peer" (see
// drain.Stopper).
func TestNewConnectionsThroughUpgrades(t *testing.T) {
	const upgrades = 20
	dir := t.TempDir()
	addr := harness.FreeAddrT(t)
	pidFile := filepath.Join(dir, "grpc.pid")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, _ := harness.StartT(t, harness.Config{Binary: serverBin, Args: []string{"-addr", addr, "-pidfile", pidFile}, PIDFile: pidFile})
	un := &tally{pids: make(map[string]int)}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	for id := range 8 {
		wg.Go(func() {
			for i := 0; loadCtx.Err() == nil; i++ {
				cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					un.fail("client %d: %v", id, err)
					return
				}
				rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out := new(wrapperspb.StringValue)
				text := fmt.Sprintf("worker %d call %d", id, i)
				err = cc.Invoke(rctx, "/hitless.example.Echo/Echo", wrapperspb.String(text), out)
				cancel()
				cc.Close()
				pid, rest, _ := strings.Cut(out.GetValue(), ": ")
				switch {
				case err != nil:
					un.fail("unary %d: %v", id, err)
				case rest != text:
					un.fail("unary %d: got %q for %q", id, out.GetValue(), text)
				default:
					un.good(pid, false)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	for i := range upgrades {
		if _, err := s.Upgrade(ctx); err != nil {
			stopLoad()
			wg.Wait()
			t.Fatalf("upgrade %d: %v", i+1, err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	stopLoad()
	wg.Wait()
	t.Logf("unary, a new connection each: %d ok, %d failed, %d generations", un.ok, un.failed, len(un.pids))
	if un.failed != 0 {
		t.Errorf("%d failures:\n%s", un.failed, strings.Join(un.errs, "\n"))
	}
	if len(un.pids) < upgrades {
		t.Errorf("answers from %d generations, want %d", len(un.pids), upgrades+1)
	}
}

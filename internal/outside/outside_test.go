package outside

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTB records what Require asks of a test.
type fakeTB struct{ skipped, fatal string }

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Skipf(format string, a ...any)  { f.skipped = fmt.Sprintf(format, a...) }
func (f *fakeTB) Fatalf(format string, a ...any) { f.fatal = fmt.Sprintf(format, a...) }

func TestMissingTool(t *testing.T) {
	missing := Tool("hitless-no-such-load-tool")
	_, err := missing.Path()
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "apt-get install") {
		t.Errorf("Path: %v; want exec.ErrNotFound and what to install", err)
	}
	for _, run := range []func() error{
		func() error {
			_, err := RunWrk(context.Background(), WrkConfig{URL: "http://127.0.0.1:1/"})
			return err
		},
		func() error { _, err := RunAB(context.Background(), ABConfig{URL: "http://127.0.0.1:1/"}); return err },
		func() error {
			_, err := RunH2load(context.Background(), H2loadConfig{URL: "http://127.0.0.1:1/"})
			return err
		},
	} {
		t.Setenv("PATH", t.TempDir()) // nothing installed
		if err := run(); !errors.Is(err, exec.ErrNotFound) {
			t.Errorf("with an empty PATH: %v; want exec.ErrNotFound", err)
		} else if !strings.Contains(err.Error(), "apt-get install ") {
			t.Errorf("error %q does not say what to install", err)
		}
	}
	for tool, pkg := range map[Tool]string{Wrk: "wrk", AB: "apache2-utils", H2load: "nghttp2-client"} {
		if tool.Package() != pkg {
			t.Errorf("%s.Package() = %q, want %q", tool, tool.Package(), pkg)
		}
	}

	t.Setenv(RequireEnv, "")
	var f fakeTB
	if p := Require(&f, missing); p != "" || !strings.Contains(f.skipped, "not installed") || f.fatal != "" {
		t.Errorf("Require without %s: %q, skipped %q, fatal %q; want a skip", RequireEnv, p, f.skipped, f.fatal)
	}
	t.Setenv(RequireEnv, "1")
	f = fakeTB{}
	if Require(&f, missing); !strings.Contains(f.fatal, "not installed") || f.skipped != "" {
		t.Errorf("Require with %s=1: skipped %q, fatal %q; want a failure", RequireEnv, f.skipped, f.fatal)
	}
}

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func() ([]string, error)
		want string // "" for an error
	}{
		{"wrk defaults", WrkConfig{URL: "http://h:1/"}.Args, "http://h:1/"},
		{"wrk all", WrkConfig{URL: "http://h:1/", Threads: 2, Connections: 64, Duration: 3 * time.Second, Timeout: 5 * time.Second, Latency: true, Headers: []string{"X-A: 1"}}.Args,
			"-t 2 -c 64 -d 3s --timeout 5s --latency -H X-A: 1 http://h:1/"},
		{"wrk fractional duration", WrkConfig{URL: "http://h:1/", Duration: 2500 * time.Millisecond}.Args, ""},
		{"wrk fewer connections than threads", WrkConfig{URL: "http://h:1/", Threads: 4, Connections: 2}.Args, ""},
		{"wrk no URL", WrkConfig{}.Args, ""},
		{"wrk relative URL", WrkConfig{URL: "/x"}.Args, ""},
		{"ab defaults", ABConfig{URL: "http://h:1/"}.Args, "-q -r http://h:1/"},
		{"ab duration: -t before -n", ABConfig{URL: "http://h:1/", Concurrency: 32, KeepAlive: true, Duration: 3 * time.Second, Timeout: 10 * time.Second}.Args,
			"-q -r -k -c 32 -s 10 -t 3 -n 3000000 http://h:1/"},
		{"ab count", ABConfig{URL: "http://h:1/x", Requests: 100, VariableLength: true}.Args, "-q -r -l -n 100 http://h:1/x"},
		{"ab no path", ABConfig{URL: "http://h:1"}.Args, ""},
		{"ab timeout in ms", ABConfig{URL: "http://h:1/", Timeout: time.Millisecond}.Args, ""},
		{"h2load duration", H2loadConfig{URL: "https://h:1/", Clients: 16, Streams: 8, Duration: 2500 * time.Millisecond, Requests: 5, LogFile: "/tmp/l"}.Args,
			"-c 16 -m 8 -D 2500ms --log-file=/tmp/l https://h:1/"},
		{"h2load count", H2loadConfig{URL: "http://h:1/", Requests: 5, Threads: 2, InactivityTimeout: time.Second}.Args, "-t 2 -N 1000ms -n 5 http://h:1/"},
		{"h2load warm-up without duration", H2loadConfig{URL: "http://h:1/", WarmUp: time.Second}.Args, ""},
		{"h2load µs duration", H2loadConfig{URL: "http://h:1/", Duration: time.Microsecond}.Args, ""},
		{"h2load ftp", H2loadConfig{URL: "ftp://h:1/"}.Args, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, err := tc.args()
			if got := strings.Join(args, " "); tc.want == "" && err == nil || tc.want != "" && (err != nil || got != tc.want) {
				t.Errorf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestParseErrorQuotesTruncated(t *testing.T) {
	short := (&ParseError{Tool: AB, Reason: "no line", Output: []byte("a\nb")}).Error()
	if short != `outside: cannot parse the output of ab: no line; output: "a\nb"` {
		t.Errorf("short: %s", short)
	}
	long := []byte("HEAD" + strings.Repeat("x", 10000) + "TAIL")
	msg := (&ParseError{Tool: Wrk, Reason: "r", Output: long}).Error()
	if !strings.Contains(msg, `"HEAD`) || !strings.Contains(msg, `TAIL"`) || !strings.Contains(msg, "bytes left out") || len(msg) > maxQuoted+200 {
		t.Errorf("long output quoted as %d bytes: %.200s…", len(msg), msg)
	}
}

func TestRepeat(t *testing.T) {
	stop := make(chan struct{})
	n := 0
	runs, err := Repeat(context.Background(), stop, func(context.Context) (int, error) {
		n++
		if n == 3 {
			close(stop) // the run under way still counts
		}
		time.Sleep(time.Millisecond)
		return n, nil
	})
	if err != nil || len(runs) != 3 || runs[2].Result != 3 {
		t.Fatalf("got %v, %v; want runs 1, 2, 3", runs, err)
	}
	for i, r := range runs {
		if !r.End.After(r.Start) || i > 0 && r.Start.Before(runs[i-1].End) {
			t.Errorf("run %d: %v to %v, after a run that ended at %v", i+1, r.Start, r.End, runs[max(i-1, 0)].End)
		}
	}

	boom := errors.New("boom")
	runs, err = Repeat(context.Background(), make(chan struct{}), func(context.Context) (int, error) {
		if n++; n == 6 {
			return 0, boom
		}
		return n, nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "run 3") || len(runs) != 2 {
		t.Errorf("got %d runs, %v; want 2 runs and run 3's error", len(runs), err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	runs, err = Repeat(ctx, make(chan struct{}), func(context.Context) (int, error) { cancel(); return 1, nil })
	if !errors.Is(err, context.Canceled) || len(runs) != 1 {
		t.Errorf("got %d runs, %v; want 1 run and context.Canceled", len(runs), err)
	}
}

// testServer answers GET / with 200 and GET /nope with 404, over HTTP/1.1
// and, with prior knowledge, h2c.
func testServer(t *testing.T, tlsToo bool) (plain, secure *httptest.Server) {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "hello", r.Proto)
	})
	plain = httptest.NewUnstartedServer(h)
	plain.Config.Protocols = new(http.Protocols)
	plain.Config.Protocols.SetHTTP1(true)
	plain.Config.Protocols.SetUnencryptedHTTP2(true)
	plain.Start()
	t.Cleanup(plain.Close)
	if tlsToo {
		secure = httptest.NewUnstartedServer(h)
		secure.EnableHTTP2 = true
		secure.StartTLS()
		t.Cleanup(secure.Close)
	}
	return plain, secure
}

// The runners against a local server, briefly: the tools' real output goes
// through the parsers, and the counts are what the server did.

func TestRunWrk(t *testing.T) {
	Require(t, Wrk)
	srv, _ := testServer(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := RunWrk(ctx, WrkConfig{URL: srv.URL + "/", Threads: 1, Connections: 4, Duration: time.Second, Latency: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	if r.Requests < 100 || r.SocketErrors() != 0 || r.Non2xx3xx != 0 || len(r.Latency.Percentiles) != 4 {
		t.Errorf("%v", r)
	}
	r, err = RunWrk(ctx, WrkConfig{URL: srv.URL + "/nope", Threads: 1, Connections: 2, Duration: time.Second})
	if err != nil || r.Non2xx3xx != r.Requests || r.Requests == 0 {
		t.Errorf("GET /nope: %v, %v; want every response counted as non-2xx/3xx", r, err)
	}
}

func TestRunAB(t *testing.T) {
	Require(t, AB)
	srv, _ := testServer(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, keepAlive := range []bool{false, true} {
		r, err := RunAB(ctx, ABConfig{URL: srv.URL + "/", Concurrency: 4, Requests: 300, KeepAlive: keepAlive})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(r)
		if r.Complete != 300 || r.Failed != 0 || r.Non2xx != 0 || r.WriteErrors != 0 || keepAlive != (r.KeepAlive == 300) {
			t.Errorf("keep-alive %v: %v", keepAlive, r)
		}
	}
	r, err := RunAB(ctx, ABConfig{URL: srv.URL + "/nope", Requests: 10})
	if err != nil || r.Non2xx != 10 {
		t.Errorf("GET /nope: %v, %v; want 10 non-2xx", r, err)
	}
	// A time-limited run is limited by time, not by ab's 50000.
	r, err = RunAB(ctx, ABConfig{URL: srv.URL + "/", Concurrency: 2, KeepAlive: true, Duration: time.Second})
	if err != nil || r.Elapsed < 900*time.Millisecond {
		t.Errorf("-t 1: %v, %v; want a run of a second", r, err)
	}
}

func TestRunH2load(t *testing.T) {
	Require(t, H2load)
	plain, secure := testServer(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := filepath.Join(t.TempDir(), "h2load.log")
	for _, tc := range []struct {
		url, proto string
	}{{plain.URL + "/", "h2c"}, {secure.URL + "/", "h2"}} {
		for range 2 { // the second run must not append to the first's log
			r, err := RunH2load(ctx, H2loadConfig{URL: tc.url, Clients: 2, Streams: 4, Requests: 200, LogFile: log})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(r)
			if r.Protocol != tc.proto || r.Succeeded != 200 || r.Failed != 0 || len(r.Log) != 200 || r.LogFailed() != 0 {
				t.Errorf("%s: %v", tc.url, r)
			}
		}
	}
	r, err := RunH2load(ctx, H2loadConfig{URL: plain.URL + "/", Clients: 2, Streams: 2, Duration: 500 * time.Millisecond})
	if err != nil || r.Done == 0 || int64(len(r.Log)) != r.Done || r.Total != r.Done {
		t.Errorf("duration mode with a temporary log: %v, %v", r, err)
	}
	r, err = RunH2load(ctx, H2loadConfig{URL: plain.URL + "/nope", Requests: 10})
	if err != nil || r.Status4xx != 10 || r.Failed != 10 || r.LogFailed() != 10 || slices.ContainsFunc(r.Log, func(e H2loadLogEntry) bool { return e.Status != 404 }) {
		t.Errorf("GET /nope: %v, %v; want 10 404s, all failed", r, err)
	}
}

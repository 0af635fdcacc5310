// Command metrics is a small HTTP service that upgrades itself without
// failing a request (on SIGHUP) and exports what happens to its upgrades
// to Prometheus, from an upgrade.Observer, on a second listener that is
// handed over like any other:
//
//	metrics -addr 127.0.0.1:8080 -metrics-addr 127.0.0.1:9090 -pidfile /run/app.pid
//	curl -s 127.0.0.1:9090/metrics | grep ^hitless_
//
// The counters are the upgrade.Totals, which each generation hands to the
// next: they go on from where the previous generation left them, so a
// dashboard does not see them fall to zero at every deploy, and rate()
// and increase() work across upgrades. Exported:
//
//	hitless_upgrades_total                               counter  upgrades that succeeded
//	hitless_upgrade_failures_total{reason}               counter  upgrades that failed, by reason ("exited", "crashed", "timed-out", ...)
//	hitless_takebacks_total                              counter  new generations that died while the old one drained
//	hitless_drain_connections_total{outcome="ended|cut"} counter  connections drains let end, and cut
//	hitless_generation                                   gauge    the serving generation (1, 2, ...)
//	hitless_state{state}                                 gauge    1 for the generation's state, 0 for the others
//	hitless_build_info{version}                          gauge    1, labelled with the build this generation runs
//	hitless_last_upgrade_duration_seconds                gauge    how long the upgrade that started this generation took
//
// A scrape reaches the generation that accepts; one that drains answers
// the requests it has and then closes, so a scraper that keeps its
// connection open moves on to the new generation after at most one
// scrape. docs/metrics.md has alert rules for these metrics.
//
// -require-file makes readiness depend on a file (a certificate, a
// config): without it a new generation does not become ready, the upgrade
// fails, and hitless_upgrade_failures_total counts it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/upgrade"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "metrics:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8080", "the service's listen address")
	metricsAddr := flag.String("metrics-addr", "127.0.0.1:9090", "where /metrics is served")
	pidFile := flag.String("pidfile", "", "write the serving generation's PID here")
	requireFile := flag.String("require-file", "", "readiness gate: do not report ready unless this file exists")
	version := flag.String("version", "", "the build's version for the history and hitless_build_info (default: from the build information)")
	upgradeTimeout := flag.Duration("upgrade-timeout", upgrade.DefaultUpgradeTimeout, "how long a new generation has to become ready")
	drainTimeout := flag.Duration("drain-timeout", upgrade.DefaultDrainTimeout, "how long in-flight requests have to finish")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	exp := &exporter{log: log}
	upg, err := upgrade.New(upgrade.Options{
		PIDFile:        *pidFile,
		UpgradeTimeout: *upgradeTimeout,
		DrainTimeout:   *drainTimeout,
		Logger:         log,
		Version:        *version,
		Observer:       exp,
		ReadyCheck: func(context.Context) error {
			if *requireFile == "" {
				return nil
			}
			_, err := os.Stat(*requireFile)
			return err
		},
	})
	if err != nil {
		return err
	}
	defer upg.Stop()
	defer upg.HandleSignals()()
	// The totals handed over by the previous generation are in the
	// status from New on; events only begin at Ready.
	exp.seed(upg)

	reg := prometheus.NewRegistry()
	reg.MustRegister(exp)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// RunFunc, not Run: if a new generation dies while this one drains,
	// this one takes the service back (hitless_takebacks_total counts it)
	// and calls this again for servers to replace the draining ones.
	return upg.RunFunc(context.Background(), func(ctx context.Context) ([]drain.Drainer, error) {
		ln, err := upg.Listen(ctx, "http", "tcp", *addr)
		if err != nil {
			return nil, err
		}
		mln, err := upg.Listen(ctx, "metrics", "tcp", *metricsAddr)
		if err != nil {
			return nil, err
		}
		srv := &drain.HTTP{Server: &http.Server{Handler: handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}}
		msrv := &drain.HTTP{Server: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
		serve(log, upg, srv, ln)
		serve(log, upg, msrv, mln)
		return []drain.Drainer{srv, msrv}, nil
	})
}

// serve serves ln with srv until the drain; a failure to serve stops the
// generation.
func serve(log *slog.Logger, upg *upgrade.Upgrader, srv *drain.HTTP, ln net.Listener) {
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("serve", "err", err)
			upg.Stop()
		}
	}()
}

func handler() http.Handler {
	pid := strconv.Itoa(os.Getpid())
	mux := http.NewServeMux()
	// GET /?sleep=2s answers after 2 s: a request that keeps a drain going.
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil && d > 0 {
			select {
			case <-time.After(min(d, time.Minute)):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Pid", pid)
		fmt.Fprintf(w, "hello from %s\n", pid)
	})
	return mux
}

// exporter is the Observer and the Prometheus collector. It keeps the
// totals of the last event (which include every generation so far) and
// turns them into constant metrics at each scrape: the counters are the
// service's, not this process's, so they cannot be prometheus.Counters,
// which start at zero in every process.
type exporter struct {
	log *slog.Logger
	upg *upgrade.Upgrader

	mu       sync.Mutex
	observed bool // an event has arrived: totals are newer than the seed
	totals   upgrade.Totals
	lastTook time.Duration
}

// seed takes the totals the previous generation handed over, unless an
// event has brought newer ones already.
func (e *exporter) seed(upg *upgrade.Upgrader) {
	st := upg.Status()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.upg = upg
	if !e.observed {
		e.totals = st.Totals
	}
}

// Observe keeps the event's totals. It takes a lock only to copy a few
// fields, so it does not block the upgrade that calls it.
func (e *exporter) Observe(ev upgrade.Event) {
	e.mu.Lock()
	e.observed = true
	e.totals = ev.Totals
	if ev.Kind == upgrade.EventReady && ev.Took > 0 {
		e.lastTook = ev.Took
	}
	e.mu.Unlock()
	switch ev.Kind {
	case upgrade.EventUpgradeFailed:
		e.log.Warn("upgrade failed", "reason", ev.Reason, "err", ev.Err)
	case upgrade.EventTakenBack:
		e.log.Warn("taken back", "new_pid", ev.To.PID, "reason", ev.Reason)
	case upgrade.EventDrained, upgrade.EventPreviousDrained:
		if ev.Drain.Cut > 0 {
			e.log.Warn("a drain cut connections", "generation", ev.From.Generation, "cut", ev.Drain.Cut)
		}
	}
}

var (
	descUpgrades = prometheus.NewDesc("hitless_upgrades_total",
		"Upgrades that succeeded since the service started, across every generation.", nil, nil)
	descFailures = prometheus.NewDesc("hitless_upgrade_failures_total",
		"Upgrades that failed since the service started, by reason.", []string{"reason"}, nil)
	descTakeBacks = prometheus.NewDesc("hitless_takebacks_total",
		"New generations that died while the old one drained, which then served again.", nil, nil)
	descDrain = prometheus.NewDesc("hitless_drain_connections_total",
		"Connections the drains let end gracefully (ended) and cut (cut).", []string{"outcome"}, nil)
	descGeneration = prometheus.NewDesc("hitless_generation",
		"The serving generation: 1 for the process started by systemd or a shell, then 2, 3, ...", nil, nil)
	descState = prometheus.NewDesc("hitless_state",
		"1 for the generation's state (starting, serving, upgrading, draining, stopping), 0 for the others.", []string{"state"}, nil)
	descBuild = prometheus.NewDesc("hitless_build_info",
		"1, labelled with the version of the build this generation runs.", []string{"version"}, nil)
	descLastTook = prometheus.NewDesc("hitless_last_upgrade_duration_seconds",
		"How long the upgrade that started this generation took, from its start to ready.", nil, nil)
)

// reasons are the failure reasons exported even at zero, so that the
// first failure of each is an increase, which increase() and alerts see.
var reasons = []string{"start-failed", "crashed", "exited", "timed-out", "check-failed", "incompatible"}

var states = []control.State{control.StateStarting, control.StateServing, control.StateUpgrading, control.StateDraining, control.StateStopping}

// Describe sends the descriptors of every metric Collect sends.
func (e *exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUpgrades, descFailures, descTakeBacks, descDrain, descGeneration, descState, descBuild, descLastTook} {
		ch <- d
	}
}

// Collect sends the metrics, from the last event's totals and the
// Upgrader's status.
func (e *exporter) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	t, took, upg := e.totals.Clone(), e.lastTook, e.upg
	e.mu.Unlock()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descUpgrades, t.Upgrades)
	for _, r := range reasons {
		counter(descFailures, t.FailuresByReason[r], r)
	}
	for r, n := range t.FailuresByReason {
		if !slices.Contains(reasons, r) {
			counter(descFailures, n, r)
		}
	}
	counter(descTakeBacks, t.TakeBacks)
	counter(descDrain, t.DrainEnded, "ended")
	counter(descDrain, t.DrainCut, "cut")
	if upg == nil {
		return
	}
	st := upg.Status()
	ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(st.Generation))
	for _, s := range states {
		v := 0.0
		if st.State == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, string(s))
	}
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, st.Version)
	if took > 0 {
		ch <- prometheus.MustNewConstMetric(descLastTook, prometheus.GaugeValue, took.Seconds())
	}
}

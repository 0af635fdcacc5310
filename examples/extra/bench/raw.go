package main

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"github.com/hitlessgo/hitless/internal/timeline"
)

// writeRaw writes every request of a run as CSV, for analysis the table
// does not do: when it started (from the run's first request, and from
// the nearest SIGHUP, negative before it), how long it took and spent
// reconnecting, whether it failed, and which PID served it.
func writeRaw(path string, r *timeline.Run) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "start_us,since_sighup_us,latency_us,reconnect_us,failed,pid")
	var t0 time.Time
	for _, q := range r.Requests {
		if t0.IsZero() || q.Start.Before(t0) {
			t0 = q.Start
		}
	}
	for _, q := range r.Requests {
		since := time.Duration(0)
		for i, m := range r.Marks {
			if d := q.Start.Sub(m.Signalled); i == 0 || abs(d) < abs(since) {
				since = d
			}
		}
		fmt.Fprintf(w, "%d,%d,%d,%d,%t,%d\n", q.Start.Sub(t0).Microseconds(), since.Microseconds(),
			q.Latency.Microseconds(), q.Reconnect.Microseconds(), q.Failed, q.PID)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

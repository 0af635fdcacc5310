// Command hitless asks a running hitless service, through its control
// socket, to upgrade, stop or report its state, and waits for the truth.
// It is meant for unit files and config management:
//
//	hitless reload   -socket /run/app/control.sock [-timeout 2m] [-hurry]
//	hitless rollback -socket /run/app/control.sock [-timeout 2m] [-hurry]
//	hitless stop     -socket /run/app/control.sock [-timeout 2m]
//	hitless status -socket /run/app/control.sock [-timeout 2m] [-json]
//	hitless status -schema
//
// reload exits 0 only when the new generation is ready and serving;
// otherwise it prints why (crashed, exited with status N, not ready in
// time, pre-flight check failed, binary missing or not executable, backing
// off) and exits 1. -hurry asks a generation that still drains to cut its
// drain short. rollback is reload to the previous build (the executable
// the previous generation ran, whatever is on disk now), with the same
// answers, and exits 1 saying why when there is nothing to roll back to. stop drains the service and waits until its process is
// gone. status prints the serving generation, the totals since the
// service started and the history of its last upgrades, a line each:
// when it began, from → to (PID and version), the outcome, how long it
// took, how long the old generation's drain took and the connections that
// drain let end and cut. Any failure exits 1, usage errors exit 2. A request that reaches the
// service only after -timeout is not carried out.
//
// The service must run as the same user as the command, or as root, or,
// when the socket lies in directories only its owner and root can write
// (such as systemd's RuntimeDirectory=), as the socket's owner; the
// command refuses to believe any other (see package control).
//
// # status -json
//
// status -json prints one JSON object with these keys. A key whose value
// is zero (or empty) is left out, times are RFC 3339, and keys may be added
// in later releases but are never renamed or removed:
//
//	pid                   number  the serving generation's process ID
//	generation            number  1 for the process systemd or a shell started, then 2, 3, ...
//	state                 string  "starting", "serving", "upgrading", "draining" or "stopping"
//	last_upgrade          string  this generation's last upgrade attempt: "ok", or what failed
//	last_upgrade_at       string  when that attempt ended
//	consecutive_failures  number  failed upgrades in a row
//	backoff_until         string  while upgrades are held back after repeated failures: until when
//	version               string  the build this generation runs
//	rollback_to           string  the build a rollback would start; absent when there is none
//	history               array   the last upgrades, oldest first (the last may be in progress)
//	totals                object  counts since the service started, across every generation
//
// Each entry of history has these keys (durations in nanoseconds):
//
//	kind                  string  "upgrade" (the binary on disk) or "rollback"
//	requested             string  when the first request it answered arrived
//	started, finished     string  when the attempt began and ended
//	from, to              object  the two generations: pid, generation, version
//	outcome               string  "in progress", "ok", "failed", "taken back" or "canceled"
//	reason                string  a failure's code ("exited", "crashed", "timed-out", ...), "died" for a take-back
//	error                 string  what went wrong, in a line
//	took_ns               number  from started to finished
//	drained_at            string  when the old generation's drain ended
//	drain_ns              number  how long that drain took
//	drain_ended           number  connections it let end
//	drain_cut             number  connections it cut
//
// totals has upgrades, failures, failures_by_reason (an object: reason →
// count), take_backs, drain_ended and drain_cut. -schema prints the JSON
// schema of all this (control.StatusSchema).
//
// For example:
//
//	{
//	  "pid": 31395,
//	  "generation": 4,
//	  "state": "serving",
//	  "last_upgrade": "ok",
//	  "last_upgrade_at": "2026-12-01T10:00:00.123+01:00",
//	  "version": "v1.4.2",
//	  "history": [
//	    {
//	      "kind": "upgrade",
//	      "requested": "2026-12-01T10:00:00.001+01:00",
//	      "started": "2026-12-01T10:00:00.001+01:00",
//	      "finished": "2026-12-01T10:00:00.123+01:00",
//	      "from": {"pid": 31390, "generation": 3, "version": "v1.4.1"},
//	      "to": {"pid": 31395, "generation": 4, "version": "v1.4.2"},
//	      "outcome": "ok",
//	      "took_ns": 122000000,
//	      "drained_at": "2026-12-01T10:00:01.500+01:00",
//	      "drain_ns": 1377000000,
//	      "drain_ended": 12
//	    }
//	  ],
//	  "totals": {"upgrades": 3, "failures": 1, "failures_by_reason": {"exited": 1}, "drain_ended": 40}
//	}
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hitlessgo/hitless/control"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage:
  hitless reload   -socket PATH [-timeout D] [-hurry]
  hitless rollback -socket PATH [-timeout D] [-hurry]
  hitless stop     -socket PATH [-timeout D]
  hitless status -socket PATH [-timeout D] [-json]
  hitless status -schema
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	verb := args[0]
	fs := flag.NewFlagSet("hitless "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "the service's control socket (required)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	hurry := fs.Bool("hurry", false, "reload, rollback: ask a generation that still drains to cut its drain short")
	asJSON := fs.Bool("json", false, "status: print JSON")
	schema := fs.Bool("schema", false, "status: print the JSON schema of -json's output and exit")
	switch verb {
	case "reload", "rollback", "stop", "status":
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "hitless: unknown command %q\n%s", verb, usage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *schema && verb == "status" && *socket == "" && fs.NArg() == 0 {
		stdout.Write(control.StatusSchema())
		return 0
	}
	if *socket == "" || fs.NArg() > 0 || *timeout <= 0 {
		fmt.Fprintf(stderr, "hitless %s: -socket is required, -timeout must be positive, and no other arguments are taken\n%s", verb, usage)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c := control.Client{Socket: *socket}
	switch verb {
	case "reload", "rollback":
		begin := time.Now()
		var opts []control.ReloadOption
		if *hurry {
			opts = append(opts, control.Hurry())
		}
		do := c.Reload
		if verb == "rollback" {
			do = c.Rollback
		}
		if err := do(ctx, opts...); err != nil {
			fmt.Fprintf(stderr, "hitless %s: FAILED: %s\n", verb, explain(err, *timeout))
			return 1
		}
		took := time.Since(begin).Round(time.Millisecond)
		st, err := c.Status(ctx)
		if err != nil {
			fmt.Fprintf(stdout, "hitless %s: ok after %v\n", verb, took)
			return 0
		}
		fmt.Fprintf(stdout, "hitless %s: ok after %v: generation %d, pid %d, %s, version %s\n", verb, took, st.Generation, st.PID, st.State, st.Version)
	case "stop":
		if err := c.Stop(ctx); err != nil {
			fmt.Fprintf(stderr, "hitless stop: FAILED: %s\n", explain(err, *timeout))
			return 1
		}
		fmt.Fprintln(stdout, "hitless stop: stopped")
	case "status":
		st, err := c.Status(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "hitless status: FAILED: %s\n", explain(err, *timeout))
			return 1
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(st); err != nil {
				fmt.Fprintf(stderr, "hitless status: %v\n", err)
				return 1
			}
			return 0
		}
		fmt.Fprintf(stdout, "pid %d, generation %d, %s\n", st.PID, st.Generation, st.State)
		if st.LastUpgrade != "" {
			fmt.Fprintf(stdout, "last upgrade (%s): %s\n", st.LastUpgradeAt.Format(time.RFC3339), st.LastUpgrade)
		}
		if !st.BackoffUntil.IsZero() {
			fmt.Fprintf(stdout, "backing off after %d failed upgrades in a row, until %s\n", st.Failures, st.BackoffUntil.Format(time.RFC3339))
		}
		printHistory(stdout, st)
	}
	return 0
}

// printHistory prints st's version, totals and history for an operator.
func printHistory(w io.Writer, st control.Status) {
	if st.Version != "" {
		fmt.Fprintf(w, "version %s\n", st.Version)
	}
	if st.RollbackTo != "" {
		fmt.Fprintf(w, "rollback to %q possible (hitless rollback)\n", st.RollbackTo)
	}
	t := st.Totals
	if t.Upgrades+t.Failures+t.TakeBacks+t.DrainEnded+t.DrainCut > 0 {
		failures := fmt.Sprint(t.Failures, " failed")
		if len(t.FailuresByReason) > 0 {
			var by []string
			for reason, n := range t.FailuresByReason {
				by = append(by, fmt.Sprintf("%s %d", reason, n))
			}
			sort.Strings(by)
			failures += " (" + strings.Join(by, ", ") + ")"
		}
		fmt.Fprintf(w, "since the service started: %d upgrades, %s, %d taken back; drains: %d connections ended, %d cut\n",
			t.Upgrades, failures, t.TakeBacks, t.DrainEnded, t.DrainCut)
	}
	if len(st.History) == 0 {
		return
	}
	fmt.Fprintln(w, "history (oldest first):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  WHEN\tFROM → TO\tOUTCOME\tTOOK\tDRAIN\tENDED/CUT")
	for _, u := range st.History {
		outcome := string(u.Outcome)
		if u.Reason != "" {
			outcome += ": " + u.Reason
		}
		if u.Kind != "" && u.Kind != control.KindUpgrade {
			outcome = string(u.Kind) + " " + outcome
		}
		took, drained, counts := "-", "-", "-"
		if !u.Finished.IsZero() {
			took = u.Took.Round(time.Millisecond).String()
		}
		if !u.DrainedAt.IsZero() {
			drained = u.DrainTook.Round(time.Millisecond).String()
			counts = fmt.Sprintf("%d/%d", u.DrainEnded, u.DrainCut)
		}
		fmt.Fprintf(tw, "  %s\t%s → %s\t%s\t%s\t%s\t%s\n", u.Started.Format(time.RFC3339), side(u.From), side(u.To), outcome, took, drained, counts)
	}
	tw.Flush()
}

// side names one generation of an upgrade: its PID and version.
func side(p control.Process) string {
	s := "?"
	if p.PID != 0 {
		s = fmt.Sprint(p.PID)
	}
	if p.Version != "" {
		s += " " + p.Version
	}
	return s
}

// explain says what went wrong in an operator's words.
func explain(err error, timeout time.Duration) string {
	var ce *control.ChildError
	switch {
	case errors.As(err, &ce):
		return err.Error() + "; the old generation is still serving"
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no outcome within %v: %v", timeout, err)
	}
	return err.Error()
}

// Command hitless asks a running hitless service, through its control
// socket, to upgrade, stop or report its state, and waits for the truth.
// It is meant for unit files and config management:
//
//	hitless reload -socket /run/app/control.sock [-timeout 2m] [-hurry]
//	hitless stop   -socket /run/app/control.sock [-timeout 2m]
//	hitless status -socket /run/app/control.sock [-timeout 2m] [-json]
//
// reload exits 0 only when the new generation is ready and serving;
// otherwise it prints why (crashed, exited with status N, not ready in
// time, pre-flight check failed, binary missing or not executable, backing
// off) and exits 1. -hurry asks a generation that still drains to cut its
// drain short. stop drains the service and waits until its process is
// gone. Any failure exits 1, usage errors exit 2. A request that reaches the
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
//
// For example:
//
//	{
//	  "pid": 31395,
//	  "generation": 4,
//	  "state": "serving",
//	  "last_upgrade": "ok",
//	  "last_upgrade_at": "2026-12-01T10:00:00.123+01:00"
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
	"time"

	"github.com/hitlessgo/hitless/control"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage:
  hitless reload -socket PATH [-timeout D] [-hurry]
  hitless stop   -socket PATH [-timeout D]
  hitless status -socket PATH [-timeout D] [-json]
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
	hurry := fs.Bool("hurry", false, "reload: ask a generation that still drains to cut its drain short")
	asJSON := fs.Bool("json", false, "status: print JSON")
	switch verb {
	case "reload", "stop", "status":
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
	if *socket == "" || fs.NArg() > 0 || *timeout <= 0 {
		fmt.Fprintf(stderr, "hitless %s: -socket is required, -timeout must be positive, and no other arguments are taken\n%s", verb, usage)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c := control.Client{Socket: *socket}
	switch verb {
	case "reload":
		begin := time.Now()
		var opts []control.ReloadOption
		if *hurry {
			opts = append(opts, control.Hurry())
		}
		if err := c.Reload(ctx, opts...); err != nil {
			fmt.Fprintf(stderr, "hitless reload: FAILED: %s\n", explain(err, *timeout))
			return 1
		}
		took := time.Since(begin).Round(time.Millisecond)
		st, err := c.Status(ctx)
		if err != nil {
			fmt.Fprintf(stdout, "hitless reload: ok after %v\n", took)
			return 0
		}
		fmt.Fprintf(stdout, "hitless reload: ok after %v: generation %d, pid %d, %s\n", took, st.Generation, st.PID, st.State)
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
	}
	return 0
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

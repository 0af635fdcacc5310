// Command hitless asks a running hitless service, through its control
// socket, to upgrade, stop or report its state, and waits for the truth.
// It is meant for unit files and config management:
//
//	hitless reload -socket /run/app/control.sock [-timeout 2m] [-hurry]
//	hitless stop   -socket /run/app/control.sock [-timeout 1m]
//	hitless status -socket /run/app/control.sock [-json]
//
// reload exits 0 only when the new generation is ready and serving;
// otherwise it prints why (crashed, exited with status N, not ready in
// time, pre-flight check failed, binary missing or not executable, backing
// off) and exits 1. stop drains the service and waits until its process is
// gone. Usage errors exit 2.
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

	"github.com/hitlessgo/hitless/upgrade"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage:
  hitless reload -socket PATH [-timeout D] [-hurry]
  hitless stop   -socket PATH [-timeout D]
  hitless status -socket PATH [-json]
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
	c := upgrade.Client{Socket: *socket, Hurry: *hurry}
	switch verb {
	case "reload":
		begin := time.Now()
		if err := c.Reload(ctx); err != nil {
			fmt.Fprintf(stderr, "hitless reload: FAILED: %s\n", explain(err, *timeout))
			return 1
		}
		st, err := c.Status(ctx)
		if err != nil {
			fmt.Fprintf(stdout, "hitless reload: ok after %v\n", time.Since(begin).Round(time.Millisecond))
			return 0
		}
		fmt.Fprintf(stdout, "hitless reload: ok after %v: generation %d, pid %d, %s\n",
			time.Since(begin).Round(time.Millisecond), st.Generation, st.PID, st.State)
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
			enc.Encode(st)
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
	var ce *upgrade.ChildError
	switch {
	case errors.As(err, &ce):
		return err.Error() + "; the old generation is still serving"
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no outcome within %v: %v", timeout, err)
	}
	return err.Error()
}

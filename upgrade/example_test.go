package upgrade_test

import (
	"context"
	"errors"
	"log"
	"net/http"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/drain"
	"github.com/hitlessgo/hitless/upgrade"
)

// The common main: SIGHUP upgrades, SIGTERM drains and stops.
func Example() {
	upg, err := upgrade.New(upgrade.Options{PIDFile: "/run/app.pid"})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	ln, err := upg.Listen(context.Background(), "http", "tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	srv := &drain.HTTP{Server: &http.Server{Handler: http.NotFoundHandler()}}
	go srv.Serve(ln)
	if err := upg.Run(context.Background(), srv); err != nil {
		log.Print(err)
	}
}

// Upgrading from a deploy hook rather than a signal, and telling the
// failures apart.
func ExampleUpgrader_Upgrade() {
	var upg *upgrade.Upgrader // from upgrade.New
	ctx := context.Background()
	err := upg.Upgrade(ctx)
	var ce *upgrade.ChildError
	switch {
	case err == nil:
		// The new generation serves; Run is draining this one.
	case errors.As(err, &ce) && ce.Reason == control.ReasonTimedOut:
		log.Printf("new version hung at start-up (pid %d); still serving the old one", ce.PID)
	case errors.Is(err, upgrade.ErrChildFailed):
		log.Printf("new version failed, still serving the old one: %v", err)
	case errors.Is(err, upgrade.ErrBackoff):
		log.Printf("upgrades held back after repeated failures: %v", err)
	default:
		log.Printf("no upgrade: %v", err) // stopping, not ready yet, or ctx done
	}
}

// Serving with RunFunc: if a new generation dies while this one drains,
// serve is called again and this one takes the service back.
func ExampleUpgrader_RunFunc() {
	upg, err := upgrade.New(upgrade.Options{PIDFile: "/run/app.pid"})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	defer upg.HandleSignals()()

	err = upg.RunFunc(context.Background(), func(ctx context.Context) ([]drain.Drainer, error) {
		ln, err := upg.Listen(ctx, "http", "tcp", "127.0.0.1:8080")
		if err != nil {
			return nil, err
		}
		srv := &drain.HTTP{Server: &http.Server{Handler: http.NotFoundHandler()}}
		go srv.Serve(ln)
		return []drain.Drainer{srv}, nil
	})
	if err != nil {
		log.Print(err)
	}
}

// Rolling back from a deploy hook, when the new version misbehaves after
// it took over.
func ExampleUpgrader_Rollback() {
	var upg *upgrade.Upgrader // from upgrade.New
	if build, ok := upg.RollbackTarget(); ok {
		log.Printf("rolling back to %s", build)
	}
	if err := upg.Rollback(context.Background()); errors.Is(err, upgrade.ErrNoRollback) {
		log.Printf("cannot roll back: %v", err)
	}
}

package upgrade

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// HandleSignals wires the conventional signals to the Upgrader, for the
// common main: SIGHUP upgrades, SIGTERM and SIGINT stop. It is opt-in;
// nothing in this module installs a signal handler otherwise.
//
// Upgrades run one at a time; SIGHUPs that arrive while one runs coalesce
// into a single next attempt. Outcomes go to Options.Logger. The handlers
// stay installed after Exit is closed, so that a draining generation that
// receives SIGTERM (systemd signals every process of the unit) keeps
// draining instead of dying. Call the returned function (typically
// deferred in main) to uninstall them; it waits for the handling
// goroutines to end.
func (u *Upgrader) HandleSignals() (stop func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancel(context.Background())
	pending := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if sig != syscall.SIGHUP {
					u.log.Info("stop requested", "signal", sig.String())
					u.Stop()
					continue
				}
				u.log.Info("upgrade requested", "signal", sig.String())
				select {
				case pending <- struct{}{}:
				default: // coalesced into the attempt already pending
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-pending:
				// Upgrade logs its outcome.
				_ = u.Upgrade(ctx)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(sigs)
			cancel()
			wg.Wait()
		})
	}
}

package upgrade

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// HandleSignals wires the conventional signals to the Upgrader, for the
// common main: SIGHUP upgrades, SIGTERM and SIGINT stop. It is opt-in;
// nothing in this module installs a signal handler otherwise.
//
// SIGHUPs are queued and coalesced like every upgrade request (see
// Upgrade). Outcomes go to Options.Logger. The handlers
// stay installed after Exit is closed, so that a draining generation that
// receives SIGTERM (systemd signals every process of the unit) keeps
// draining instead of dying. Call the returned function (typically
// deferred in main) to uninstall them; it waits for the handling
// goroutines to end.
func (u *Upgrader) HandleSignals() (stop func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				if sig != syscall.SIGHUP {
					u.log.Info("stop requested", "signal", sig.String())
					u.Stop()
					continue
				}
				// Queued and coalesced by the Upgrader; the outcome is
				// logged there.
				u.requestAsync()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			<-ended
		})
	}
}

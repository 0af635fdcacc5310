package upgrade

import (
	"os"
	"strconv"
	"time"
)

// States of a generation, as Status reports them.
const (
	StateStarting  = "starting"  // not ready yet
	StateServing   = "serving"   // ready, no upgrade running
	StateUpgrading = "upgrading" // an upgrade attempt runs or waits for the previous generation
	StateDraining  = "draining"  // a newer generation serves; this one drains
	StateStopping  = "stopping"  // stopping for good; draining
)

// Status describes a generation, for operators (the control socket's
// status verb) and for the application's own reporting.
type Status struct {
	PID int
	// Generation counts generations since the service started: 1 for the
	// process started by systemd or a shell, then 2, 3, ...
	Generation int
	State      string
	// LastUpgrade is the outcome of this generation's last upgrade
	// attempt: empty if none, "ok", or the error's text.
	LastUpgrade   string
	LastUpgradeAt time.Time
	// Failures counts failed upgrades in a row.
	Failures int
	// BackoffUntil is set while upgrade requests are refused after
	// repeated failures.
	BackoffUntil time.Time
}

// Status returns the current status. Safe for concurrent use.
func (u *Upgrader) Status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.status
}

func (u *Upgrader) setState(state string) {
	u.mu.Lock()
	u.status.State = state
	u.mu.Unlock()
}

// envGeneration carries the generation number to the next generation. It
// is set only for the moment the next generation is started, so processes
// the application spawns never see it.
const envGeneration = "HITLESS_GENERATION"

// takeGeneration reads this process's generation number and removes it from
// the environment.
func takeGeneration() int {
	g, err := strconv.Atoi(os.Getenv(envGeneration))
	os.Unsetenv(envGeneration)
	if err != nil || g < 1 {
		return 1
	}
	return g
}

package upgrade

import (
	"context"
	"errors"

	"github.com/hitlessgo/hitless/internal/handoff"
)

// ErrNoRollback matches the error of a rollback that cannot be made:
// this is the first generation, or one a rollback started, or the
// previous generation could not keep its executable (a script, no
// /proc), or that file was overwritten in place since. The error says
// which.
var ErrNoRollback = handoff.ErrNoRollback

// errRollbackBusy refuses a rollback while another upgrade is under way:
// a rollback is carried out alone, never merged with requests for an
// upgrade to the binary on disk.
var errRollbackBusy = errors.New("upgrade: an upgrade is in progress; ask for the rollback again once it has ended")

// Rollback is Upgrade to the previous generation's build: the new
// generation runs the executable the previous generation ran, which the
// previous generation handed to this one (kept open, so it does not
// matter what the deploy has put at its path since), with the same
// arguments, readiness check, probation and hand-over as any upgrade, and
// the same errors. It fails at once with an error matching ErrNoRollback
// when there is nothing to roll back to, and with an error while another
// upgrade is in progress. The generation a rollback starts cannot roll
// back further: it has nothing older. RollbackTarget says what it would
// start.
func (u *Upgrader) Rollback(ctx context.Context) error { return publicErr(u.rollback(ctx, false)) }

func (u *Upgrader) rollback(ctx context.Context, hurry bool) error {
	if _, err := u.h.PreviousBinary(); err != nil {
		return err
	}
	return u.requestKind(ctx, hurry, true)
}

// RollbackTarget returns the build (Options.Version of the previous
// generation) that Rollback would start, and false if there is none.
func (u *Upgrader) RollbackTarget() (build string, ok bool) { return u.h.PreviousBuild() }

package upgrade

import (
	"errors"

	"github.com/hitlessgo/hitless/control"
	"github.com/hitlessgo/hitless/internal/handoff"
)

// Errors callers can match with errors.Is. The ones an upgrade ends with
// are defined in package control, because they also cross the control
// socket; they are the same values here.
var (
	// ErrNotSupported is returned by New on platforms without descriptor
	// passing between processes (Windows).
	ErrNotSupported = handoff.ErrNotSupported
	// ErrSingleton is returned by New when an Upgrader already exists in
	// this process: listening sockets are handed to a new generation per
	// process, so there can be only one.
	ErrSingleton = handoff.ErrSingleton
	// ErrNotReady is returned by Upgrade before Ready has succeeded: a
	// generation that is not serving yet cannot hand over.
	ErrNotReady = control.ErrNotReady
	// ErrStopped is returned by Upgrade after Stop.
	ErrStopped = control.ErrStopped
	// ErrUpgraded is returned by Upgrade once an upgrade has succeeded:
	// this generation is draining and a newer one serves.
	ErrUpgraded = control.ErrUpgraded
	// ErrChildFailed matches every *ChildError.
	ErrChildFailed = control.ErrChildFailed
	// ErrBackoff matches every *BackoffError.
	ErrBackoff = control.ErrBackoff
	// ErrNotHandedOver is returned by File and State when the previous
	// generation handed nothing over under the name (or there is no
	// previous generation, or the name was taken already, or Ready has
	// closed what was not taken); the error says which.
	ErrNotHandedOver = handoff.ErrNotHandedOver
	// ErrNameTaken is returned by OfferFile and OfferState for a name
	// already offered (files and states share one namespace).
	ErrNameTaken = handoff.ErrNameTaken
	// ErrStateTooLarge matches a state over Options.StateLimit: the
	// upgrade that took the snapshot fails with it (in its ChildError),
	// and State in the new generation returns it, before reading a byte,
	// when its own limit is lower.
	ErrStateTooLarge = errors.New("state over the size limit")
)

// ChildError says why a new generation did not take over; see
// control.ChildError.
type ChildError = control.ChildError

// BackoffError says that upgrades are held back after repeated failures;
// see control.BackoffError.
type BackoffError = control.BackoffError

// errPassedOn is what a request that arrived while another upgrade ran
// and succeeded gets: the new generation carries it out. Over the control
// socket that is control.ErrForwarded (the client asks again there); a
// caller of Upgrade gets ErrUpgraded.
var errPassedOn = control.ErrForwarded

func publicErr(err error) error {
	if errors.Is(err, errPassedOn) {
		return ErrUpgraded
	}
	return err
}

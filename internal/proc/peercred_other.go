//go:build !linux && !darwin && !freebsd

package proc

// Peers cannot be identified here, so a control socket serves nobody, and
// a client trusts no server: failing closed is the point of the check.
func peerCred(uintptr) (Cred, error) { return Cred{}, ErrNotSupported }

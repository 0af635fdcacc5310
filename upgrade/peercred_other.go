//go:build unix && !linux && !darwin && !freebsd

package upgrade

import "errors"

// Peers cannot be identified here, so the control socket serves nobody.
func peerUID(uintptr) (int, error) {
	return -1, errors.New("peer credentials are not supported on this platform")
}

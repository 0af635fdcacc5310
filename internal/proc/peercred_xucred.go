//go:build darwin || freebsd

package proc

import "golang.org/x/sys/unix"

// The xucred carries no PID (macOS has LOCAL_PEERPID, FreeBSD a union
// member x/sys does not expose); the PID is only for log lines, so it is
// left out rather than read a second, different way.
func peerCred(fd uintptr) (Cred, error) {
	cred, err := unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return Cred{}, err
	}
	return Cred{UID: int(cred.Uid)}, nil
}

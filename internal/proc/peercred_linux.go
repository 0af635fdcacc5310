package proc

import "golang.org/x/sys/unix"

func peerCred(fd uintptr) (Cred, error) {
	cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Cred{}, err
	}
	return Cred{UID: int(cred.Uid), PID: int(cred.Pid)}, nil
}

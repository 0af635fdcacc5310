package proc

import "golang.org/x/sys/unix"

// sZomb is SZOMB from <sys/proc.h>.
const sZomb = 5

func isZombie(pid int) bool {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	return err == nil && kp.Proc.P_stat == sZomb
}

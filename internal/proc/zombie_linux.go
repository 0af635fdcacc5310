package proc

import (
	"bytes"
	"os"
	"strconv"
)

// isZombie reads the state field of /proc/<pid>/stat. It follows the
// command name, which may hold spaces and parentheses, so it is found after
// the last ')'.
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

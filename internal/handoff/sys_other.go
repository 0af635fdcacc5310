//go:build !unix

package handoff

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

var errUnsupported = errors.New("not supported on this platform")

func closeOnExec(int)                              {}
func readable(int, time.Duration) bool             { return true }
func checkExecutable(string) error                 { return nil }
func lookPath(file string) (string, error)         { return "", errUnsupported }
func socketpair() (*os.File, *os.File, error)      { return nil, nil, errUnsupported }
func rights(*os.File) []byte                       { return nil }
func parseRights([]byte, string) (*os.File, error) { return nil, nil }
func captureStderr() (*os.File, *os.File, error)   { return nil, nil, errUnsupported }
func restoreStderr(*os.File) error                 { return errUnsupported }
func dupFile(*os.File) (*os.File, error)           { return nil, errUnsupported }

func dupFD(uintptr, string) (*os.File, error)          { return nil, errUnsupported }
func signaled(*os.ProcessState) (syscall.Signal, bool) { return 0, false }
func signalName(s syscall.Signal) string               { return s.String() }

func dupAbove(*os.File, int) (*os.File, error) { return nil, errUnsupported }

func recvNow(*net.UnixConn, []byte, []byte) (int, int, error) { return 0, 0, errUnsupported }

func ctl(*os.File, func(int)) {}

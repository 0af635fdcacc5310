//go:build !unix

package upgrade

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"syscall"
)

const sigHUP = syscall.Signal(1)

var errUnsupported = errors.New("not supported on this platform")

type hurrier struct{}

func newHurrier(int, syscall.Signal) hurrier { return hurrier{} }
func (hurrier) send() error                  { return errUnsupported }

func sendSignal(int, syscall.Signal) error { return errUnsupported }
func checkExecutable(string) error         { return nil }
func monotonicUsec() string                { return "" }
func newestChild() int                     { return 0 }
func peerUID(uintptr) (int, error)         { return -1, errUnsupported }
func waitGone(context.Context, int) error  { return errUnsupported }

func hurrySignals(syscall.Signal) chan os.Signal                          { return nil }
func stopHurrySignals(chan os.Signal)                                     {}
func listenHurry(chan os.Signal, context.CancelFunc, *slog.Logger) func() { return func() {} }

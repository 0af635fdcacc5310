//go:build !unix

package upgrade

func (u *Upgrader) captureStderr() (done func() string) { return func() string { return "" } }
func (u *Upgrader) adoptStderr()                        {}

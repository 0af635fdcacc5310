//go:build !linux

package handoff

import "os"

// newStateFile returns an unlinked temporary file holding b (there is no
// memfd here): nothing is left on disk whatever becomes of the upgrade.
func newStateFile(name string, b []byte) (*os.File, error) {
	f, err := os.CreateTemp("", "hitless-state-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

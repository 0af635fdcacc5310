//go:build unix && !linux

package main

import "os"

// newCounterFile returns an unlinked temporary file of size bytes, all zero
// (there is no memfd here): it lives as long as some process has it open
// or mapped.
func newCounterFile(size int64) (*os.File, error) {
	f, err := os.CreateTemp("", "stateful-counter-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

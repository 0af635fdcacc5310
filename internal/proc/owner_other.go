//go:build !unix

package proc

func privateOwner(string) (int, error) { return -1, ErrNotSupported }

func behindRootOnly(string) bool { return false }

//go:build !unix

package listener

func closeOnExec(int) {}

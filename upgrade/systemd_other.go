//go:build !unix

package upgrade

func monotonicUsec() string { return "" }

//go:build !linux

package timeline

import "time"

// canSample is false where there is no /proc to read: the Sampler then
// starts no goroutine and records nothing.
const canSample = false

func readProc(int) (cpu time.Duration, rss int64, ok bool) { return 0, 0, false }

package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// A histogram bucket covers 1/16 of a power of two, so a quantile is
// reported within 6.25 % of the true value while the whole histogram is a
// fixed 7.5 KiB array: it never grows with the number of requests (up to
// DefaultMaxRequests), and merging is adding arrays.
const (
	subBits  = 4
	subCount = 1 << subBits
	// Values below subCount ns get exact buckets; each later power of two
	// gets subCount buckets, up to 2^63 ns.
	nBuckets = (64 - subBits) * subCount
)

// Histogram records durations in log-linear buckets. The zero value is an
// empty histogram ready to use. It is not safe for concurrent use.
type Histogram struct {
	counts [nBuckets]int64
	n      int64
	max    time.Duration
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // v>>e is in [subCount, 2*subCount)
	return (e+1)*subCount + int(v>>e) - subCount
}

// bucketMax is the largest duration that falls in bucket i.
func bucketMax(i int) time.Duration {
	if i < subCount {
		return time.Duration(i)
	}
	e := i/subCount - 1
	m := uint64(i%subCount + subCount)
	hi := (m+1)<<e - 1
	if hi > math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(hi)
}

// Record adds one duration; a negative one counts as zero.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

// Merge adds every duration recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Count is the number of durations recorded.
func (h *Histogram) Count() int64 { return h.n }

// Max is the largest duration recorded, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns an upper bound, within 6.25 %, of the q-quantile (0 < q
// <= 1) of the recorded durations, never more than Max. It is 0 for an
// empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketMax(i), h.max)
		}
	}
	return h.max
}

//go:build !linux

package timeline

import (
	"os"
	"testing"
	"time"
)

func TestSamplerRecordsNothing(t *testing.T) {
	s := NewSampler(time.Millisecond)
	s.Watch(os.Getpid())
	time.Sleep(10 * time.Millisecond)
	if got := s.Stop(); len(got) != 0 {
		t.Errorf("sampler recorded %v where there is no /proc", got)
	}
}

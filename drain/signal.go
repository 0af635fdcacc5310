package drain

import "sync"

// wrapUp is a channel closed exactly once, when a drain begins. Its zero
// value is ready to use, so that the drainers' zero values are too.
type wrapUp struct {
	once sync.Once
	c    chan struct{}
	mu   sync.Mutex
}

func (w *wrapUp) channel() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.c == nil {
		w.c = make(chan struct{})
	}
	return w.c
}

func (w *wrapUp) fire() { w.once.Do(func() { close(w.channel()) }) }

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

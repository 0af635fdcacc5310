package upgrade

import (
	"net"
	"sync"
)

// gatedListener holds Accept until the generation is ready.
//
// The listening socket is shared with the previous generation, which keeps
// accepting until this one is ready. If this generation accepted earlier and
// then crashed or was killed for not becoming ready, the connections it had
// taken would die with it. Holding Accept until Ready keeps a bad version
// from ever taking a connection: until then, queued connections wait in the
// kernel for whichever generation accepts them.
type gatedListener struct {
	net.Listener
	ready     <-chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *gatedListener) Accept() (net.Conn, error) {
	select {
	case <-l.ready:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	return l.Listener.Accept()
}

func (l *gatedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

//go:build !go1.27

package drain

import (
	"net/http"

	"golang.org/x/net/http2"
)

// withDrainsHTTP2 serves srv's HTTP/2 with the server drain.HTTP uses
// before Go 1.27 (x/net's), so that a benchmark's plain side differs from
// the drained one only by the drain.
func withDrainsHTTP2(srv *http.Server) *http.Server {
	//lint:ignore SA1019 the same server drain.HTTP configures (see h2setup.go)
	http2.ConfigureServer(srv, &http2.Server{})
	return srv
}

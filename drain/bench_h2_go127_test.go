//go:build go1.27

package drain

import "net/http"

// withDrainsHTTP2: from Go 1.27 drain.HTTP serves HTTP/2 with net/http's
// own server, as a plain http.Server does.
func withDrainsHTTP2(srv *http.Server) *http.Server { return srv }

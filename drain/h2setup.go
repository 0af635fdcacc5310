//go:build !go1.27

package drain

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"

	"golang.org/x/net/http2"
)

// setupHTTP2 serves HTTP/2 over TLS with golang.org/x/net/http2's server,
// whose ServeConn, unlike the copy inside net/http, takes a connection of
// ours: before Go 1.27, net/http hands its HTTP/2 server the *tls.Conn
// itself, and the tap must sit above TLS. (h2c connections are tapped
// below, by sniffListener: their bytes on the wire are the frames.) A
// server whose TLSNextProto is already set has chosen its own HTTP/2 (or
// none) and is left alone: its HTTP/2 connections get the single GOAWAY.
func (h *HTTP) setupHTTP2() error {
	srv := h.Server
	if srv.TLSNextProto != nil {
		return nil
	}
	if p := srv.Protocols; p != nil && !p.HTTP2() && !p.UnencryptedHTTP2() {
		return nil
	}
	//lint:ignore SA1019 x/net's HTTP/2 server is deprecated for users of net/http, but net/http before Go 1.27 offers no way to serve HTTP/2 over a connection of one's own; this is the server net/http bundles, configured from the same http.Server.
	h2 := &http2.Server{}
	//lint:ignore SA1019 see above
	if err := http2.ConfigureServer(srv, h2); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	srv.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, c *tls.Conn, next http.Handler) {
		tc := &tlsH2Conn{Conn: c}
		tap := newH2Tap(c)
		tc.tap.Store(tap)
		tc.decided.Store(true)
		h.tapped(c, tap)
		// net/http passes the connection's base context through a method
		// of the handler it hands over, as it does to its own HTTP/2
		// server; handlers find WrapUp in it.
		var ctx context.Context
		if bc, ok := next.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		//lint:ignore SA1019 see above
		h2.ServeConn(tc, &http2.ServeConnOpts{Context: ctx, Handler: next, BaseConfig: hs})
	}
	h.twoPhase = true
	return nil
}

// serveTLS is http.Server.ServeTLS: HTTP/2 connections are tapped in
// TLSNextProto (see setupHTTP2).
func (h *HTTP) serveTLS(ln net.Listener, certFile, keyFile string) error {
	return h.Server.ServeTLS(ln, certFile, keyFile)
}

// tapTLS returns a TLS connection from a listener of the caller's as it
// is: TLSNextProto taps it (see setupHTTP2).
func tapTLS(c *tls.Conn) net.Conn { return c }

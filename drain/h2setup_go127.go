//go:build go1.27

package drain

import (
	"crypto/tls"
	"net"
	"slices"
)

// setupHTTP2: from Go 1.27 net/http serves HTTP/2 over any connection that
// offers ConnectionState, so ServeTLS taps TLS connections as it accepts
// them (see serveTLS), and net/http's own HTTP/2 server serves them. (h2c
// connections are tapped by sniffListener.) A server whose TLSNextProto is
// set has chosen its own HTTP/2 (or none) and is left alone: its HTTP/2
// connections get the single GOAWAY.
func (h *HTTP) setupHTTP2() error {
	srv := h.Server
	if srv.TLSNextProto != nil {
		return nil
	}
	p := srv.Protocols
	if p != nil && !p.HTTP2() && !p.UnencryptedHTTP2() {
		return nil
	}
	// http.Server.Serve sets up HTTP/2 only if the server's TLS
	// configuration offers it (ServeTLS always does): offer it, as
	// ServeTLS would have.
	if c := srv.TLSConfig; c != nil && (p == nil || p.HTTP2()) && !slices.Contains(c.NextProtos, "h2") {
		c.NextProtos = append(slices.Clone(c.NextProtos), "h2")
	}
	h.twoPhase = true
	return nil
}

// serveTLS is http.Server.ServeTLS with every accepted connection wrapped
// in a tlsH2Conn, which taps it once its handshake chose HTTP/2. It builds
// the TLS configuration as ServeTLS does: the server's, its certificate
// loaded from the files unless it has one, ALPN protocols per
// Server.Protocols.
func (h *HTTP) serveTLS(ln net.Listener, certFile, keyFile string) error {
	srv := h.Server
	if !h.twoPhase {
		return srv.ServeTLS(ln, certFile, keyFile)
	}
	config := &tls.Config{}
	if srv.TLSConfig != nil {
		config = srv.TLSConfig.Clone()
	}
	http1, http2 := true, true
	if p := srv.Protocols; p != nil && (p.HTTP1() || p.HTTP2() || p.UnencryptedHTTP2()) {
		http1, http2 = p.HTTP1(), p.HTTP2()
	}
	config.NextProtos = slices.DeleteFunc(slices.Clone(config.NextProtos), func(p string) bool {
		return p == "h2" && !http2 || p == "http/1.1" && !http1
	})
	if http2 && !slices.Contains(config.NextProtos, "h2") {
		config.NextProtos = append(config.NextProtos, "h2")
	}
	if http1 && !slices.Contains(config.NextProtos, "http/1.1") {
		config.NextProtos = append(config.NextProtos, "http/1.1")
	}
	hasCert := len(config.Certificates) > 0 || config.GetCertificate != nil || config.GetConfigForClient != nil
	if !hasCert || certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		config.Certificates = []tls.Certificate{cert}
	}
	return srv.Serve(tapTLSListener{tls.NewListener(ln, config)})
}

// tapTLSListener wraps the TLS connections it accepts in tlsH2Conn.
type tapTLSListener struct{ net.Listener }

func (l tapTLSListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tapTLS(c.(*tls.Conn)), nil
}

// tapTLS wraps a TLS connection, which net/http serves as it would the
// *tls.Conn, in a tlsH2Conn.
func tapTLS(c *tls.Conn) net.Conn { return &tlsH2Conn{Conn: c} }

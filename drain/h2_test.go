package drain

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/hitlessgo/hitless/internal/h2watch"
)

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// h2Client makes single HTTP/2 connections that never retry a request
// (http.Transport.NewClientConn), over TLS or h2c; over h2c the Dialer
// has every connection, its frames watched.
func h2Client(t *testing.T, tlsOn bool) (*http.Transport, *h2watch.Dialer) {
	d := new(h2watch.Dialer)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	if tlsOn {
		tr.Protocols.SetHTTP2(true)
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
		tr.DialContext = d.DialContext
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, d
}

func h2Server(t *testing.T, tlsOn bool) (*HTTP, string) {
	h, addr := serveH2(t, handler(), tlsOn, false)
	h.IdleTimeout = 5 * time.Second // read by Drain only
	return h, addr
}

// serveH2 serves hd with HTTP/1.1 and HTTP/2 (h2c, or TLS with a
// self-signed certificate) through an HTTP on a loopback listener: with
// ServeTLS, or, if ownListener, with Serve on a TLS listener of the
// caller's.
func serveH2(t *testing.T, hd http.Handler, tlsOn, ownListener bool) (*HTTP, string) {
	srv := &http.Server{Handler: hd, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	if tlsOn {
		srv.Protocols.SetHTTP2(true)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	h := &HTTP{Server: srv}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		switch {
		case tlsOn && ownListener:
			h.Serve(tls.NewListener(ln, &tls.Config{Certificates: srv.TLSConfig.Certificates, NextProtos: []string{"h2", "http/1.1"}}))
		case tlsOn:
			h.ServeTLS(ln, "", "")
		default:
			h.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return h, ln.Addr().String()
}

func h2Get(cc *http.ClientConn, scheme, addr, path string) (*http.Response, error) {
	req, _ := http.NewRequest("GET", scheme+"://"+addr+path, nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return nil, err
	}
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		return nil, errors.New("not an HTTP/2 200: " + resp.Proto + " " + resp.Status)
	}
	return resp, nil
}

func TestHTTP2GoAwayThenStreamsFinish(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tls    bool
		scheme string
	}{{"h2c", false, "http"}, {"tls", true, "https"}} {
		t.Run(tc.name, func(t *testing.T) {
			h, addr := h2Server(t, tc.tls)
			tr, watchers := h2Client(t, tc.tls)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			busy, err := tr.NewClientConn(ctx, tc.scheme, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			idle, err := tr.NewClientConn(ctx, tc.scheme, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			if _, err := h2Get(idle, tc.scheme, addr, "/"); err != nil {
				t.Fatal(err)
			}
			slow := make(chan error, 1)
			go func() {
				_, err := h2Get(busy, tc.scheme, addr, "/?sleep=400ms")
				slow <- err
			}()
			time.Sleep(100 * time.Millisecond)
			res := drainIn(h, 10*time.Second)
			if err := <-slow; err != nil {
				t.Fatalf("stream in flight during the drain failed: %v", err)
			}
			got := <-res
			if got.err != nil || got.r.Open != 2 || got.r.Ended != 2 || got.r.Cut != 0 {
				t.Fatalf("Drain = %v, %v; want 2 open, 2 ended", got.r, got.err)
			}
			t.Logf("%v", got.r)
			// Both connections were told, and neither takes requests.
			for _, cc := range []*http.ClientConn{busy, idle} {
				if cc.Available() != 0 {
					t.Error("client connection still available after the drain")
				}
			}
			if tc.tls {
				return // the frames are encrypted; h2c shows them
			}
			if len(watchers.Conns()) != 2 {
				t.Fatalf("%d connections", len(watchers.Conns()))
			}
			for i, w := range watchers.Conns() {
				goAways, _ := w.GoAways()
				end := w.End()
				if len(goAways) == 0 || goAways[0] != 0 {
					t.Errorf("connection %d: GOAWAY codes %v, want a graceful one (NO_ERROR)", i, goAways)
				}
				if end != nil && (errors.Is(end, syscall.ECONNRESET) || !errors.Is(end, io.EOF) && !errors.Is(end, net.ErrClosed)) {
					t.Errorf("connection %d ended with %v, want EOF", i, end)
				}
			}
		})
	}
}

func TestHTTP2StreamCutAtDeadline(t *testing.T) {
	h, addr := h2Server(t, false)
	tr, _ := h2Client(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := tr.NewClientConn(ctx, "http", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	slow := make(chan error, 1)
	go func() {
		_, err := h2Get(cc, "http", addr, "/?sleep=5s")
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	got := <-drainIn(h, 300*time.Millisecond)
	took := time.Since(start)
	if got.r.Cut != 1 || !errors.Is(got.err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, %v; want 1 cut", got.r, got.err)
	}
	if took < 290*time.Millisecond || took > 600*time.Millisecond {
		t.Fatalf("cut after %v, want at the 300ms deadline", took)
	}
	if err := <-slow; err == nil {
		t.Fatal("a stream past the deadline completed")
	}
}

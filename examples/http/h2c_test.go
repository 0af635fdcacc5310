//go:build unix

package main

import (
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestH2c checks that -h2c serves HTTP/2 with prior knowledge on the
// listener that serves HTTP/1.1: what the bench's h2load rows rely on.
func TestH2c(t *testing.T) {
	s := start(t, "-h2c")
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true) // and nothing else: no fallback to HTTP/1.1
	tr := &http.Transport{Protocols: p}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	resp, err := c.Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || pid != s.PID() {
		t.Errorf("GET / over h2c: %s %s from pid %d (%q); want HTTP/2.0 200 from %d", resp.Proto, resp.Status, pid, body, s.PID())
	}
}

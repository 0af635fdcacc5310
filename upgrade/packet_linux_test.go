package upgrade

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// With Options.FDStore, datagram sockets go to systemd's fd store under
// their names, as listeners do.
func TestFDStoreKeepsDatagramSockets(t *testing.T) {
	sd := startFakeSystemd(t)
	ts := startTestServer(t, "udp", envPacketServer+"=1", "NOTIFY_SOCKET="+sd.path, envFDStore+"=1")
	addr, err := os.ReadFile(filepath.Join(ts.dir, "udp.addr"))
	if err != nil {
		t.Fatal(err)
	}
	// The store is filled right after READY=1, which follows the PID file.
	var dns, log []notifyMsg
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && (dns == nil || log == nil); time.Sleep(10 * time.Millisecond) {
		dns, log = nil, nil
		for _, m := range sd.messages() {
			switch {
			case strings.HasPrefix(m.text, "FDSTORE=1\nFDNAME=dns"):
				dns = append(dns, m)
			case strings.HasPrefix(m.text, "FDSTORE=1\nFDNAME=log"):
				log = append(log, m)
			}
		}
	}
	if len(dns) != 1 || len(dns[0].socks) != 1 || dns[0].socks[0] != string(addr) {
		t.Fatalf("FDSTORE for the udp socket dns: %+v; want one carrying the socket at %s", dns, addr)
	}
	if len(log) != 1 {
		t.Fatalf("FDSTORE for the unixgram socket log: %+v; want one", log)
	}
}

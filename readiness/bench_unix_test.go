//go:build unix

package readiness

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The cost of telling systemd something, to a socket that reads as fast as
// it can:
//
//	go test -run '^$' -bench Notify -benchmem ./readiness/
func BenchmarkNotify(b *testing.B) {
	path := filepath.Join(b.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			// Close what was passed, as systemd's store de-duplicates.
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}()
	b.Setenv("NOTIFY_SOCKET", path)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	b.Run("status", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Notify(Status("serving, generation 4, pid 1234")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("watchdog", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Notify(Watchdog); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fdstore", func(b *testing.B) {
		b.ReportAllocs()
		name, _ := FDName("http")
		for b.Loop() {
			if _, err := NotifyWithFiles([]syscall.Conn{ln.(*net.TCPListener)}, FDStore, name); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Command notifyd is the smallest Type=notify service: it listens on
// 127.0.0.1 (port from -addr, 0 = any free one), tells systemd its address
// (STATUS=) and that it is ready (READY=1) with a plain unixgram datagram to
// NOTIFY_SOCKET, and answers every HTTP request with "notifyd pid=<its PID>".
// SIGTERM makes it exit 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "notifyd pid=%d\n", os.Getpid())
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.Serve(ln)

	if err := notify("STATUS=listening on " + ln.Addr().String() + "\nREADY=1"); err != nil {
		log.Fatal(err)
	}
	log.Printf("ready, listening on %s", ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	log.Print("stopping")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
}

// notify sends one datagram to $NOTIFY_SOCKET (a leading @ names an
// abstract socket; Go's net package maps it).
func notify(msg string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return fmt.Errorf("NOTIFY_SOCKET is not set")
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

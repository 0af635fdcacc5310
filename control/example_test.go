package control_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hitlessgo/hitless/control"
)

// A deploy step: upgrade, and say what happened.
func ExampleClient_Reload() {
	c := control.Client{Socket: "/run/app/control.sock"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.Reload(ctx, control.Hurry())
	var ce *control.ChildError
	var be *control.BackoffError
	switch {
	case err == nil:
		fmt.Println("the new version serves")
	case errors.As(err, &be):
		fmt.Println("upgrades are held back until", be.Until)
	case errors.As(err, &ce):
		fmt.Printf("the new version failed (%v, pid %d); the old one still serves\n", ce.Reason, ce.PID)
		fmt.Println(ce.Stderr)
	default:
		fmt.Println("no outcome:", err)
	}
}

// service is what a Handler looks like; package upgrade's Upgrader is the
// real one.
type service struct{ stop chan struct{} }

func (s *service) Status() control.Status {
	return control.Status{PID: 1, Generation: 1, State: control.StateServing}
}

func (s *service) Reload(ctx context.Context, hurry bool) error { return control.ErrNotReady }

func (s *service) Stop() { close(s.stop) }

// Serving a control socket.
func ExampleServer() {
	ln, err := net.Listen("unix", "/run/app/control.sock")
	if err != nil {
		fmt.Println(err)
		return
	}
	svc := &service{stop: make(chan struct{})}
	srv := &control.Server{Handler: svc, Logger: slog.Default()}
	go srv.Serve(ln)
	<-svc.stop
	srv.Close() // not from inside a Handler call
}

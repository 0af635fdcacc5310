package main

import (
	"fmt"
	"os"
	"time"
)

func init() {
	if os.Getenv("BENCH_DIALS") == "" {
		return
	}
	onDial = func(client string, start time.Time, took time.Duration, err error) {
		fmt.Fprintf(os.Stderr, "DIAL %s %s took %v err %v\n", client, start.Format("15:04:05.000"), took, err)
	}
}

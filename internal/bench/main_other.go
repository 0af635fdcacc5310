//go:build !unix

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench: hitless upgrades need a unix system")
	os.Exit(1)
}

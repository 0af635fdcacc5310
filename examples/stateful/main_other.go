//go:build !unix

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "stateful: hitless upgrades need a unix system (Linux, macOS, BSD)")
	os.Exit(1)
}

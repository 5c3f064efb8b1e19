//go:build !linux

package main

import (
	"fmt"
	"os"
)

func pid1() {
	fmt.Fprintln(os.Stderr, "init: Linux only")
	os.Exit(1)
}

func modprobeMain([]string) int { return 1 }

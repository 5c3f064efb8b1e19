package main

import (
	"fmt"
	"os"
	"strings"

	"xedge/init/modules"
)

// modprobeMain is the kernel's request_module helper: "modprobe -q -- NAME".
func modprobeMain(args []string) int {
	quiet := false
	var names []string
	for _, a := range args {
		switch {
		case a == "-q" || a == "--quiet":
			quiet = true
		case strings.HasPrefix(a, "-"):
		default:
			names = append(names, a)
		}
	}
	if len(names) == 0 {
		fmt.Fprintln(os.Stderr, "usage: modprobe [-q] MODULE|ALIAS")
		return 1
	}
	as, err := modules.LoadAliases()
	if err == nil {
		err = modules.Probe(as, names[:1])
	}
	if err != nil {
		if !quiet {
			fmt.Fprintf(os.Stderr, "modprobe: %v\n", err)
		}
		return 1
	}
	return 0
}

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
		kmsg(fmt.Sprintf("<4>modprobe %s: %v", names[0], err))
		if !quiet {
			fmt.Fprintf(os.Stderr, "modprobe: %v\n", err)
		}
		return 1
	}
	kmsg(fmt.Sprintf("<6>modprobe %s: loaded", names[0]))
	return 0
}

// kmsg writes one record to the kernel log (the kernel runs modprobe with no console).
func kmsg(rec string) {
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write([]byte(rec))
}

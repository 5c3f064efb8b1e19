// Command init is the appliance's PID 1: it mounts the initramfs root, loads the
// kernel modules the hardware needs, brings the network up by DHCP, assembles the
// configuration and runs xmppd as a supervised child, with the restricted admin shell
// on the serial console. It never exits: fatal errors end in a sync and reboot.
//
// Invoked as "modprobe" (the kernel's /sbin/modprobe points here) it loads one module.
package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// version is set by the image builder (-X main.version=...).
var version = "dev"

func main() {
	switch filepath.Base(os.Args[0]) {
	case "modprobe":
		os.Exit(modprobeMain(os.Args[1:]))
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: must run as PID 1 (it is the xedge appliance's init)")
		os.Exit(1)
	}
	pid1()
}

package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"
)

// ipxeKeyLimit bounds how long a PXE box's key presser runs (its DHCP request
// normally comes 0.5-1 s after power-on).
const ipxeKeyLimit = 30 * time.Second

// pressThroughIPXEBanner presses the space bar of a PXE box's keyboard (qemu's
// monitor, `sendkey spc`) every 100 ms from power-on until the lab's boot server
// has seen the box's DHCP request, or for at most limit.
//
// qemu's network boot ROMs (Debian's ipxe-qemu) stop at "Press Ctrl-B for the
// iPXE command line..." for 2 s before iPXE asks for an address: 2 s of every
// PXE boot, measured on the serial console with SeaBIOS's serial output on. Any
// key other than Ctrl-B ends that prompt and iPXE boots on; later presses are
// read and dropped by iPXE while it works (only Ctrl-C cancels) and the booted
// kernel has no keyboard reader. A site's own NIC firmware is configured
// without the wait; in the lab, this is the operator pressing a key.
func pressThroughIPXEBanner(ctx context.Context, dir, vmDir, mac string, limit time.Duration, log io.Writer) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	presses := 0
	defer func() {
		if log != nil {
			fmt.Fprintf(log, "%s: %d key presses through iPXE's prompt in %.1f s\n", filepath.Base(vmDir), presses, time.Since(start).Seconds())
		}
	}()
	var c net.Conn
	for c == nil && ctx.Err() == nil {
		var err error
		if c, err = net.DialTimeout("unix", filepath.Join(vmDir, "monitor.sock"), time.Second); err != nil {
			c = nil
			sleepCtx(ctx, 20*time.Millisecond)
		}
	}
	if c == nil {
		return
	}
	defer c.Close()
	go func() { // the monitor's banner and echoes; read so qemu never blocks on them
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
		}
	}()
	for ctx.Err() == nil {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("sendkey spc\n")); err != nil {
			return
		}
		presses++
		if dhcpSeen(dir, mac) {
			return
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// dhcpSeen reports whether the lab's boot server has a DHCP event of mac.
func dhcpSeen(dir, mac string) bool {
	out, err := Control(dir, "boxes")
	if err != nil {
		return false
	}
	return boxHasDHCP(out, mac)
}

// boxHasDHCP reads the boot server's `boxes` answer: "MAC IP step=time ...".
func boxHasDHCP(boxes, mac string) bool {
	for _, l := range strings.Split(boxes, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && strings.EqualFold(f[0], mac) && strings.Contains(l, " dhcp=") {
			return true
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

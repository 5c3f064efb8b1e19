//go:build vmtest

package vmtest

import (
	"strings"
	"testing"
	"time"
)

// TestLateDHCPLease: a box whose first DHCP lease comes after init's network
// phase gave up (xedge.dhcp_timeout=1ms here; a busy segment or a slow boot
// server in the field) is first in maintenance for want of a network, then
// finishes its boot on that lease and serves. Before, it stayed in maintenance
// until rebooted (seen in qemu scenario (f): a lease 6 s after the 10 s phase).
func TestLateDHCPLease(t *testing.T) {
	need(t)
	n := boot(t, "xedge.domain=vm.example xedge.dhcp_timeout=1ms")
	expect(t, n, `maintenance: xmppd not started`, 2*time.Minute)
	expect(t, n, `network: \S+ on \S+ after the boot gave up waiting; finishing the boot`, time.Minute)
	m := expect(t, n, readyRe.String(), 2*time.Minute)
	if m[1] != "10.0.2.15" {
		t.Errorf("ready line %q: want the late lease's address 10.0.2.15", m[0])
	}
	if out := cmd(t, n, "status"); !strings.Contains(out, "vm.example") {
		t.Fatalf("status after the late boot: %q", out)
	}
}

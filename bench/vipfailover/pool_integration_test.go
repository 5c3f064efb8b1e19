//go:build integration && linux

package vipfailover

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/packet"
)

// TestVIPPoolSpreadAndMinimalMovement: three xmppd in namespaces share a pool of
// three VIPs (--vip A,B,C). The pool spreads one VIP per node, each VIP on
// exactly one node's interface and every node agreeing on the holders; a
// gratuitous ARP for a VIP from a foreign MAC makes its holder re-announce (the
// conflict path from netcfg's watch through the plan), nothing moves; a node
// whose client port stops answering (its c2s health check) gives its VIP up and
// takes one again once it answers; when a holder dies, only its VIP moves (to
// one survivor), the survivors keep theirs.
func TestVIPPoolSpreadAndMinimalMovement(t *testing.T) {
	pool := []string{subnet + ".100/24", subnet + ".101/24", subnet + ".102/24"}
	h := startHarness(t, Options{Pool: pool})

	// placement is the VIP -> holder map every live node agrees on, with each VIP
	// master at its holder and on that holder's interface only; "" and why not.
	placement := func(live []*node) (map[string]string, string) {
		var agreed map[string]string
		for _, n := range live {
			st, err := h.status(n)
			if err != nil || !st.Healthy || !st.Quorum || len(st.VIPs) != len(pool) {
				return nil, fmt.Sprintf("%s: %v %+v", n.name, err, st)
			}
			m := map[string]string{}
			for _, v := range st.VIPs {
				m[v.VIP] = v.Holder
				if (v.Holder == n.name) != (v.State == "master") {
					return nil, fmt.Sprintf("%s: %s held by %s, its state here %s", n.name, v.VIP, v.Holder, v.State)
				}
			}
			if agreed == nil {
				agreed = m
			} else if !maps.Equal(agreed, m) {
				return nil, fmt.Sprintf("views differ: %v and %s's %v", agreed, n.name, m)
			}
		}
		for _, v := range pool {
			addr := v[:strings.IndexByte(v, '/')] + "/"
			on := []string{}
			for _, n := range live {
				out, _ := exec.Command("ip", "-n", n.ns, "addr", "show", "dev", "eth0").Output()
				if strings.Contains(string(out), " "+addr) {
					on = append(on, n.name)
				}
			}
			if len(on) != 1 || on[0] != agreed[v] {
				return nil, fmt.Sprintf("%s is on %v, its holder is %q", v, on, agreed[v])
			}
		}
		return agreed, ""
	}
	wait := func(d time.Duration, what string, live []*node, ok func(map[string]string) bool) map[string]string {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			m, why := placement(live)
			if m != nil && ok(m) {
				return m
			}
			if m != nil {
				why = fmt.Sprintf("placement %v", m)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not reached within %s: %s", what, d, why)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	onePerNode := func(m map[string]string) bool {
		holders := slices.Sorted(maps.Values(m))
		return slices.Equal(holders, []string{"n1", "n2", "n3"})
	}
	before := wait(60*time.Second, "one VIP per node", h.nodes, onePerNode)
	t.Logf("pool spread: %v", before)

	// Another MAC announces the first VIP (a stale or foreign announcer): its
	// holder, the one the plan names, sees the conflict and re-announces at once.
	vip0 := netip.MustParsePrefix(pool[0]).Addr()
	if err := h.inClient(func() error { return forgedGARP(vip0) }); err != nil {
		t.Fatal(err)
	}
	var holder0 *node
	for _, n := range h.nodes {
		if n.name == before[pool[0]] {
			holder0 = n
		}
	}
	waitFor(t, 10*time.Second, holder0.name+" to re-announce "+pool[0]+" after the conflict", func() bool {
		b, _ := os.ReadFile(filepath.Join(h.opt.Dir, holder0.name+".log"))
		return strings.Contains(string(b), "vip conflict: re-announcing")
	})
	if m, why := placement(h.nodes); m == nil || !maps.Equal(m, before) {
		t.Fatalf("the placement changed after a foreign announcement: %v %s", m, why)
	}

	// Local health: the first VIP's holder stops accepting client streams (its
	// c2s port refused on loopback, where its check dials): it turns unhealthy
	// and holds nothing, the two others hold the pool; back, it gets one again.
	rule := []string{"INPUT", "-i", "lo", "-p", "tcp", "--dport", "5222", "-j", "REJECT", "--reject-with", "tcp-reset"}
	iptables := func(op string) { // both families: the check dials ::1 when the listener is dual-stack
		t.Helper()
		for _, tool := range []string{"iptables", "ip6tables"} {
			if out, err := exec.Command("ip", append([]string{"netns", "exec", holder0.ns, tool, op}, rule...)...).CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v %s", tool, op, err, out)
			}
		}
	}
	iptables("-I")
	t.Cleanup(func() {
		for _, tool := range []string{"iptables", "ip6tables"} {
			exec.Command("ip", append([]string{"netns", "exec", holder0.ns, tool, "-D"}, rule...)...).Run()
		}
	})
	var others []*node
	for _, n := range h.nodes {
		if n != holder0 {
			others = append(others, n)
		}
	}
	waitFor(t, 20*time.Second, holder0.name+" unhealthy and holding nothing, the pool on the others", func() bool {
		st, err := h.status(holder0)
		out, _ := exec.Command("ip", "-n", holder0.ns, "addr", "show", "dev", "eth0").Output()
		m, _ := placement(others)
		return err == nil && !st.Healthy && m != nil && !strings.Contains(string(out), " "+subnet+".10")
	})
	iptables("-D")
	before = wait(30*time.Second, "one VIP per node again once c2s answers", h.nodes, onePerNode)
	t.Logf("after %s's c2s check failed and recovered: %v", holder0.name, before)

	// The holder of the last VIP dies like a power loss.
	var victim *node
	var survivors []*node
	for _, n := range h.nodes {
		if n.name == before[pool[2]] {
			victim = n
		} else {
			survivors = append(survivors, n)
		}
	}
	t0 := time.Now()
	if err := ip("-n", victim.ns, "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	victim.cmd.Process.Kill()
	<-victim.done
	after := wait(20*time.Second, "the dead node's VIP on a survivor", survivors, func(m map[string]string) bool {
		return m[pool[2]] != victim.name && m[pool[2]] != ""
	})
	t.Logf("after %s died (%.2f s): %v", victim.name, time.Since(t0).Seconds(), after)
	for _, v := range pool[:2] {
		if after[v] != before[v] {
			t.Errorf("%s moved from %s to %s although its holder lives (want only the dead node's VIP to move)", v, before[v], after[v])
		}
	}
}

// forgedGARP sends, on the client's bridge, a gratuitous ARP request for ip from
// a MAC no node has (02:00:00:00:00:99).
func forgedGARP(ip netip.Addr) error {
	ifi, err := net.InterfaceByName("br0")
	if err != nil {
		return err
	}
	c, err := packet.Listen(ifi, packet.Raw, 0x0806, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 0x99}
	a := ip.As4()
	f := make([]byte, 0, 42)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, mac...)
	f = append(f, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1) // ARP, Ethernet/IPv4, request
	f = append(f, mac...)
	f = append(f, a[:]...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	f = append(f, a[:]...)
	_, err = c.WriteTo(f, &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
	return err
}

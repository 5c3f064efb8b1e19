//go:build integration && linux

package vipfailover

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestVIPPoolSpreadAndMinimalMovement: three xmppd in namespaces share a pool of
// three VIPs (--vip A,B,C). The pool spreads one VIP per node, each VIP on
// exactly one node's interface and every node agreeing on the holders; when a
// holder dies, only its VIP moves (to one survivor), the survivors keep theirs.
func TestVIPPoolSpreadAndMinimalMovement(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs integration tests as root)")
	}
	pool := []string{subnet + ".100/24", subnet + ".101/24", subnet + ".102/24"}
	h, err := newHarness(Options{Dir: t.TempDir(), Log: testWriter{t}, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.teardown)
	keepLogs(t, h)

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

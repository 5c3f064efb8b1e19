//go:build integration && linux

package vipfailover

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVIPPartitionMinorityWithdraws cuts the VIP holder off from its two peers
// (iptables DROP inside its namespace) while it still reaches the client segment:
// the majority takes the VIP, the isolated holder sees 1 of 3 members, loses quorum
// and takes the address off its interface (no duplicate VIP on the wire), and the
// notify hooks report fault on the old holder and master on the new one. After
// the partition heals the cluster settles on exactly one holder again.
func TestVIPPartitionMinorityWithdraws(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "notify.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$3 $1 $2\" >> "+filepath.Join(dir, "notify.log")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := startHarness(t, Options{Dir: dir, Extra: []string{"--vip-notify", hook}})
	old, err := h.holder(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Partition: the holder drops everything from and to its peers.
	for _, n := range h.nodes {
		if n == old {
			continue
		}
		for _, args := range [][]string{{"-A", "INPUT", "-s", n.ip, "-j", "DROP"}, {"-A", "OUTPUT", "-d", n.ip, "-j", "DROP"}} {
			if out, err := exec.Command("ip", append([]string{"netns", "exec", old.ns, "iptables"}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("iptables: %v %s", err, out)
			}
		}
	}
	cut := time.Now()
	var newHolder *node
	deadline := time.Now().Add(20 * time.Second)
	for newHolder == nil {
		if time.Now().After(deadline) {
			t.Fatal("the majority did not take the VIP")
		}
		for _, n := range h.nodes {
			if n == old {
				continue
			}
			if st, err := h.status(n); err == nil && len(st.VIPs) == 1 && st.VIPs[0].State == "master" && st.Quorum {
				newHolder = n
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("majority holder %s after %s", newHolder.name, time.Since(cut).Round(time.Millisecond))
	// The minority withdrew: no quorum, fault, address gone.
	for {
		st, err := h.status(old)
		out, _ := exec.Command("ip", "-n", old.ns, "addr", "show", "dev", "eth0").Output()
		if err == nil && !st.Quorum && st.VIPs[0].State == "fault" && !strings.Contains(string(out), "10.66.0.100") {
			t.Logf("isolated %s withdrew after %s", old.name, time.Since(cut).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("isolated holder %s did not withdraw: %+v err %v\n%s", old.name, st, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The client segment sees the new holder.
	for h.neighbour() != newHolder.mac {
		if time.Now().After(deadline) {
			t.Fatalf("client's neighbour entry %s, want %s", h.neighbour(), newHolder.mac)
		}
		// Make the client resolve the VIP again.
		exec.Command("ip", "netns", "exec", h.prefix+"-c", "ip", "neigh", "flush", "10.66.0.100").Run()
		if c, err := h.login(2 * time.Second); err == nil {
			c.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Hooks: fault on the old holder, master on the new.
	waitFor(t, 10*time.Second, "the notify hooks to report fault and master", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "notify.log"))
		s := string(b)
		return strings.Contains(s, old.name+" fault 10.66.0.100/24") && strings.Contains(s, newHolder.name+" master 10.66.0.100/24")
	})
	// Heal.
	if out, err := exec.Command("ip", "netns", "exec", old.ns, "iptables", "-F").CombinedOutput(); err != nil {
		t.Fatalf("iptables -F: %v %s", err, out)
	}
	if _, err := h.holder(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, n := range h.nodes {
		out, _ := exec.Command("ip", "-n", n.ns, "addr", "show", "dev", "eth0").Output()
		if strings.Contains(string(out), "10.66.0.100") {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("after healing the VIP is on %d nodes", count)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s in vain for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

//go:build integration && linux

package vipfailover

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVIPStorageLoss: the storage input of a node's VIP health, end to end.
// Three xmppd in namespaces share one VIP (the keepalived case, preempt on); n1
// is the master (--vip-priority 120, the others 100) and keeps raft's state on an
// iSCSI LUN of a real tgtd (in the client namespace, reached over its eth0).
// tgtd is frozen: n1's initiator times out, its store goes RAM-only, its
// storage check goes down and its priority drops by the storage weight (-50) to
// 70 — still healthy, but below the backups: the VIP moves to one of them (every
// node agrees, the address is on that node's interface only). tgtd thaws: n1
// re-persists, its storage check comes up, priority 120 again, and preemption
// brings the VIP back to it.
func TestVIPStorageLoss(t *testing.T) {
	start := time.Now()
	h := startHarness(t, Options{ISCSI: []string{"n1"}, NodeExtra: map[string][]string{"n1": {"--vip-priority", "120"}}})
	n1 := h.nodes[0]
	if out, err := h.tgtd.Show(); err != nil || !strings.Contains(out, "I_T nexus:") {
		t.Fatalf("n1 has no session with tgtd (its storage is not the LUN): %v\n%s", err, out)
	}

	// where returns the holder every node agrees on (master there, the address
	// on its eth0 and on no other node's), with n1's own view of itself, or ""
	// and why not.
	where := func() (string, vipStatus, string) {
		var n1v vipStatus
		holder := ""
		for _, n := range h.nodes {
			v, err := h.status(n)
			if err != nil || !v.Quorum || len(v.VIPs) != 1 {
				return "", n1v, fmt.Sprintf("%s: %v %+v", n.name, err, v)
			}
			if n == n1 {
				n1v = v
			}
			hn := v.VIPs[0].Holder
			if holder == "" {
				holder = hn
			} else if hn != holder {
				return "", n1v, fmt.Sprintf("views differ: %s and %s's %s", holder, n.name, hn)
			}
			if (hn == n.name) != (v.VIPs[0].State == "master") {
				return "", n1v, fmt.Sprintf("%s: held by %s, its state here %s", n.name, hn, v.VIPs[0].State)
			}
		}
		var on []string
		for _, n := range h.nodes {
			if hasVIP(n) {
				on = append(on, n.name)
			}
		}
		if len(on) != 1 || on[0] != holder {
			return "", n1v, fmt.Sprintf("the VIP is on %v, its holder is %q", on, holder)
		}
		return holder, n1v, ""
	}
	wait := func(d time.Duration, what string, ok func(holder string, n1v vipStatus) bool) string {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			holder, n1v, why := where()
			if holder != "" && ok(holder, n1v) {
				return holder
			}
			if holder != "" {
				why = fmt.Sprintf("holder %s; n1: priority %d, healthy %v, storage track %+v", holder, n1v.Priority, n1v.Healthy, n1v.track("storage"))
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not reached within %s: %s", what, d, why)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	wait(60*time.Second, "n1 (priority 120, durable storage) holding the VIP", func(holder string, v vipStatus) bool {
		return holder == "n1" && v.Priority == 120 && v.track("storage").Up
	})
	if st := storageMode(t, h, n1); st != "durable" {
		t.Fatalf("n1's storage before the fault: %s", st)
	}
	t.Logf("settled after %.1f s: n1 holds the VIP, storage durable on its LUN", time.Since(start).Seconds())

	// The LUN stops answering: tgtd frozen (its sockets open and silent).
	frozen := time.Now()
	if err := h.tgtd.Freeze(); err != nil {
		t.Fatal(err)
	}
	moved := wait(30*time.Second, "the VIP on a backup after n1's storage failed", func(holder string, v vipStatus) bool {
		tr := v.track("storage")
		return holder != "n1" && !tr.Up && v.Priority == 70 && v.Healthy
	})
	t.Logf("storage frozen: VIP moved n1 -> %s after %.2f s (n1 %s, priority 70, still healthy)", moved, time.Since(frozen).Seconds(), storageMode(t, h, n1))
	if m := storageMode(t, h, n1); m == "durable" {
		t.Fatalf("n1's store reports durable with its LUN frozen")
	}
	// n1's own view and its peers' give n1 the lowered priority.
	for _, n := range h.nodes {
		v, err := h.status(n)
		if err != nil {
			t.Fatal(err)
		}
		if p := v.priorityOf("n1"); p != 70 {
			t.Errorf("%s sees n1 with priority %d, want 70 (120 - storage weight 50)", n.name, p)
		}
	}

	// The LUN answers again: n1 re-persists, is durable and the master again.
	thawed := time.Now()
	if err := h.tgtd.Thaw(); err != nil {
		t.Fatal(err)
	}
	wait(60*time.Second, "the VIP back on n1 after its storage returned", func(holder string, v vipStatus) bool {
		return holder == "n1" && v.Priority == 120 && v.track("storage").Up
	})
	if m := storageMode(t, h, n1); m != "durable" {
		t.Fatalf("n1 holds the VIP again but its store is %s", m)
	}
	t.Logf("storage thawed: n1 durable and holding the VIP again after %.2f s (test %.1f s so far)", time.Since(thawed).Seconds(), time.Since(start).Seconds())
}

// storageMode is n's store mode by `xmppctl --json storage`.
func storageMode(t *testing.T, h *harness, n *node) string {
	t.Helper()
	out, err := exec.Command(h.opt.Xmppct, "--socket", filepath.Join(n.data, "admin.sock"), "--timeout", "5s", "--json", "storage").Output()
	if err != nil {
		t.Fatalf("xmppctl storage on %s: %v", n.name, err)
	}
	var st struct {
		Mode string `json:"mode"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("xmppctl storage on %s: %v: %s", n.name, err, out)
	}
	return st.Mode
}

//go:build integration && linux

package vipfailover

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestVIPSpare: three xmppd in namespaces, n3 a spare (--in-service=false). The
// spare replicates (it is a live member of the view) and holds no VIP while every
// member is up; when the holder dies the spare stands in and takes the VIP; once
// the dead node is back the spare gives the VIP back. An operator then puts the
// spare in service (`xmppctl vip in-service on`) and takes the other two out of
// service: the former spare takes the VIP.
func TestVIPSpare(t *testing.T) {
	h := startHarness(t, Options{Spare: "n3"})
	spare := h.nodes[2]
	holder, err := h.holder(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if holder == spare {
		t.Fatalf("the spare holds the VIP with every member up")
	}
	st, err := h.status(spare)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	out, _ := exec.Command(h.opt.Xmppct, "--socket", spare.data+"/admin.sock", "--json", "vip").Output()
	_ = json.Unmarshal(out, &raw)
	if raw["in_service"] != false || len(st.Nodes) != 3 {
		t.Fatalf("spare's view: in_service %v, %d nodes (want false, 3): %s", raw["in_service"], len(st.Nodes), out)
	}
	if hasVIP(spare) {
		t.Fatal("the VIP address is on the spare's interface")
	}
	// Every node's view shows the spare out of service.
	for _, n := range h.nodes {
		if s := inServiceOf(t, h, n, spare.name); s != false {
			t.Fatalf("%s sees the spare with in_service %v", n.name, s)
		}
	}

	// The holder dies: the spare stands in.
	t0 := time.Now()
	if err := ip("-n", holder.ns, "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	holder.cmd.Process.Kill()
	<-holder.done
	holder.log.Close()
	waitFor(t, 10*time.Second, "the spare to take the VIP after the holder died", func() bool {
		return hasVIP(spare) && viewHolder(h, spare) == spare.name
	})
	t.Logf("the spare took the VIP %.2f s after the holder died", time.Since(t0).Seconds())
	for _, n := range h.nodes {
		if n != holder && n != spare && hasVIP(n) {
			t.Fatalf("%s holds the VIP too", n.name)
		}
	}

	// The dead node comes back: the spare gives the VIP back.
	if err := ip("-n", holder.ns, "link", "set", "eth0", "up"); err != nil {
		t.Fatal(err)
	}
	if err := h.start(holder); err != nil {
		t.Fatal(err)
	}
	if err := h.waitAdmin(holder, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	back, err := h.holder(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if back == spare {
		t.Fatal("the spare kept the VIP after every member was back")
	}
	waitFor(t, 10*time.Second, "the VIP address to leave the spare", func() bool { return !hasVIP(spare) })

	// The operator puts the spare in service and the other two out of service.
	if err := h.ctl(spare, "vip", "in-service", "on"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "every node to see the spare in service", func() bool {
		for _, n := range h.nodes {
			if inServiceOf(t, h, n, spare.name) != true {
				return false
			}
		}
		return true
	})
	for _, n := range h.nodes[:2] {
		if err := h.ctl(n, "vip", "in-service", "off"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the former spare to take the VIP", func() bool {
		return hasVIP(spare) && viewHolder(h, spare) == spare.name && !hasVIP(h.nodes[0]) && !hasVIP(h.nodes[1])
	})
	if err := h.ctl(spare, "vip", "in-service", "maybe"); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Fatalf("a bad in-service argument: %v (want a usage error)", err)
	}
}

func hasVIP(n *node) bool {
	out, _ := exec.Command("ip", "-n", n.ns, "addr", "show", "dev", "eth0").Output()
	return strings.Contains(string(out), subnet+".100/")
}

func viewHolder(h *harness, n *node) string {
	st, err := h.status(n)
	if err != nil || len(st.VIPs) != 1 || st.VIPs[0].State != "master" {
		return ""
	}
	return st.VIPs[0].Holder
}

// inServiceOf is node name's in-service flag in n's view (nil: not in the view).
func inServiceOf(t *testing.T, h *harness, n *node, name string) any {
	out, err := exec.Command(h.opt.Xmppct, "--socket", n.data+"/admin.sock", "--timeout", "2s", "--json", "vip").Output()
	if err != nil {
		return nil
	}
	var v struct {
		Nodes []map[string]any `json:"nodes"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Logf("xmppctl vip on %s: %v", n.name, err)
		return nil
	}
	for _, m := range v.Nodes {
		if m["name"] == name {
			return m["in_service"]
		}
	}
	return nil
}

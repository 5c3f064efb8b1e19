package server

import (
	"strings"
	"testing"

	"xedge/discovery"
	"xedge/discovery/vip"
	"xedge/netcfg"
	"xedge/xmppd/config"
)

func TestFirewallSpecFromConfig(t *testing.T) {
	c := config.Defaults()
	c.C2S, c.C2STLS, c.ClusterAddr = "0.0.0.0:5222", ":5223", "127.0.0.1:7400"
	c.DNS.Listen = "0.0.0.0:53"
	c.VIP.FirewallClusterNets = "10.1.2.3/24"
	s, err := firewallSpec(&c)
	if err != nil {
		t.Fatal(err)
	}
	got := func(ps []netcfg.Port) string {
		var out []string
		for _, p := range ps {
			out = append(out, p.String())
		}
		return strings.Join(out, " ")
	}
	if g := got(s.Open); g != "5222/tcp 5223/tcp 53/udp 53/tcp" {
		t.Fatalf("open %s", g)
	}
	if g := got(s.Cluster); g != "7400/tcp 7401/tcp 7401/udp" {
		t.Fatalf("cluster %s", g)
	}
	if len(s.ClusterSubnets) != 1 || s.ClusterSubnets[0].String() != "10.1.2.0/24" || s.RatePerSource != 20 || !s.DropOther {
		t.Fatalf("spec %+v", s)
	}
	// Without subnets the cluster address's interface names it (loopback here).
	c.VIP.FirewallClusterNets = ""
	if s, err = firewallSpec(&c); err != nil || len(s.ClusterSubnets) != 1 || s.ClusterSubnets[0].String() != "127.0.0.0/8" {
		t.Fatalf("derived subnets %v %v", s.ClusterSubnets, err)
	}
	c.ClusterAddr = "0.0.0.0:7400"
	if _, err := firewallSpec(&c); err == nil || !strings.Contains(err.Error(), "firewall-cluster-subnets") {
		t.Fatalf("unspecified cluster address: %v", err)
	}
	c.VIP.FirewallOpen = "5222,x"
	if _, err := firewallSpec(&c); err == nil {
		t.Fatal("bad port list accepted")
	}
}

// TestVIPViewSpareStandsInWhenRowsGoFirst: the VIP holder n1 dies; its VIP row
// vanishes (the store's ephemeral timeout) while the gossip still has it alive
// or suspect. The spare n3 must stand in at once, not the in-service n2 (which
// took the VIP as an orphan and kept it: the spare never stood in).
func TestVIPViewSpareStandsInWhenRowsGoFirst(t *testing.T) {
	const pool = "10.0.0.100/24"
	policy := vip.Policy{VIPs: []string{pool}, Preempt: true, Quorum: true}
	n2 := vipRow{Healthy: true, InService: true, Priority: 100, Preemptible: true}
	spare := vip.Node{Name: "n3", Healthy: true, Priority: 100}
	members := func(n1 discovery.Status) []discovery.Member {
		return []discovery.Member{{Name: "n1", Status: n1}, {Name: "n2", Status: discovery.StatusAlive}, {Name: "n3", Status: discovery.StatusAlive}}
	}
	known := map[string]bool{}
	// Every member up: n1 holds the VIP, the spare holds nothing.
	rows := []peerVIPRow{{"n1", vipRow{Healthy: true, InService: true, Priority: 100, Preemptible: true, Holds: []string{pool}}}, {"n2", n2}}
	v := buildVIPView(spare, rows, members(discovery.StatusAlive), known)
	if p := policy.Assign(v); p.Holder[pool] != "n1" || p.StandIn {
		t.Fatalf("all up: holder %q stand-in %v, want n1 without stand-in", p.Holder[pool], p.StandIn)
	}
	// n1's row is gone, the gossip has not declared it failed yet (both orders).
	for _, st := range []discovery.Status{discovery.StatusAlive, discovery.StatusSuspect, discovery.StatusFailed} {
		v := buildVIPView(spare, rows[1:], members(st), known)
		if p := policy.Assign(v); p.Holder[pool] != "n3" || !p.StandIn {
			t.Errorf("n1 %v without a row: holder %q stand-in %v (view known %d visible %d), want the spare n3 standing in",
				st, p.Holder[pool], p.StandIn, v.Known, v.Visible)
		}
	}
	// n1 restarted: a live member again, but it stands for itself only once it
	// publishes its row (until then the spare keeps standing in).
	v = buildVIPView(spare, rows[1:], members(discovery.StatusAlive), known)
	if !policy.Assign(v).StandIn {
		t.Error("a restarted member without a row yet ended the stand-in")
	}
	back := []peerVIPRow{{"n1", vipRow{Healthy: true, InService: true, Priority: 100}}, {"n2", n2}}
	if p := policy.Assign(buildVIPView(spare, back, members(discovery.StatusAlive), known)); p.StandIn {
		t.Errorf("every member back with its row: still standing in (holder %q)", p.Holder[pool])
	}
	// A witness publishes no VIP row: the membership alone makes it visible.
	w := append(members(discovery.StatusAlive), discovery.Member{Name: "w", Status: discovery.StatusAlive})
	if v := buildVIPView(spare, back, w, known); v.Visible != 4 || v.Known != 4 {
		t.Errorf("with a witness: known %d visible %d, want 4 and 4", v.Known, v.Visible)
	}
}

package server

import (
	"strings"
	"testing"

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

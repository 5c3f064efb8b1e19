package dns

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func testParams() Params {
	return Params{Zone: "example.org", Domain: "example.org", Self: "n1", TTL: 30, DomainAddrs: true}
}

func node(name, addr string, load int) Node {
	return Node{Name: name, Addrs: []netip.Addr{netip.MustParseAddr(addr)}, C2SPort: 5222, C2STLSPort: 5223,
		Healthy: true, InService: true, Load: load}
}

func srvs(rrs []mdns.RR, owner string) map[string]*mdns.SRV {
	out := map[string]*mdns.SRV{}
	for _, rr := range rrs {
		if s, ok := rr.(*mdns.SRV); ok && s.Hdr.Name == owner {
			out[s.Target] = s
		}
	}
	return out
}

func addrsOf(rrs []mdns.RR, name string) []string {
	var out []string
	for _, rr := range rrs {
		switch r := rr.(type) {
		case *mdns.A:
			if r.Hdr.Name == name {
				out = append(out, r.A.String())
			}
		case *mdns.AAAA:
			if r.Hdr.Name == name {
				out = append(out, r.AAAA.String())
			}
		}
	}
	return out
}

func TestBuildHealthyInServiceOnly(t *testing.T) {
	b := NewBuilder(testParams())
	spare := node("n3", "10.0.0.3", 0)
	spare.InService = false
	sick := node("n4", "10.0.0.4", 0)
	sick.Healthy = false
	res := b.Build(View{Nodes: []Node{node("n1", "10.0.0.1", 10), node("n2", "2001:db8::2", 10), spare, sick}})
	c := srvs(res.RRs, "_xmpp-client._tcp.example.org.")
	if len(c) != 2 || c["n1.node.example.org."] == nil || c["n2.node.example.org."] == nil {
		t.Fatalf("client SRV targets = %v, want n1 and n2 only", c)
	}
	if s := c["n1.node.example.org."]; s.Port != 5222 || s.Priority != PrioNode || s.Weight != 100 {
		t.Errorf("n1 SRV = %v", s)
	}
	if tls := srvs(res.RRs, "_xmpps-client._tcp.example.org."); len(tls) != 2 || tls["n2.node.example.org."].Port != 5223 {
		t.Errorf("xmpps-client SRV = %v", tls)
	}
	// Nobody offers s2s: one "." target says so (RFC 2782).
	if s2s := srvs(res.RRs, "_xmpp-server._tcp.example.org."); len(s2s) != 1 || s2s["."] == nil {
		t.Errorf("xmpp-server SRV = %v, want the lone '.'", s2s)
	}
	if got := addrsOf(res.RRs, "n2.node.example.org."); len(got) != 1 || got[0] != "2001:db8::2" {
		t.Errorf("n2 AAAA = %v", got)
	}
	if got := addrsOf(res.RRs, "n4.node.example.org."); len(got) != 0 {
		t.Errorf("unhealthy n4 has addresses %v", got)
	}
	// The spare is healthy: it serves DNS and is a name server, but gets no SRV.
	var ns []string
	for _, rr := range res.RRs {
		if n, ok := rr.(*mdns.NS); ok {
			ns = append(ns, n.Ns)
		}
	}
	if strings.Join(ns, ",") != "n1.node.example.org.,n2.node.example.org.,n3.node.example.org." {
		t.Errorf("NS = %v", ns)
	}
	if got := addrsOf(res.RRs, "example.org."); len(got) != 2 {
		t.Errorf("domain addresses = %v, want both healthy nodes'", got)
	}
}

func TestBuildVIPsPreferredAndDomainAddrs(t *testing.T) {
	b := NewBuilder(testParams())
	v := View{Nodes: []Node{node("n1", "10.0.0.1", 10), node("n2", "10.0.0.2", 10)},
		VIPs: []VIP{{netip.MustParseAddr("10.0.0.100"), "n1"}, {netip.MustParseAddr("10.0.0.101"), "n2"}, {netip.MustParseAddr("10.0.0.102"), ""}}}
	res := b.Build(v)
	c := srvs(res.RRs, "_xmpp-client._tcp.example.org.")
	if len(c) != 4 {
		t.Fatalf("targets %v, want 2 VIPs + 2 nodes (the unheld VIP is not published)", c)
	}
	if s := c["10-0-0-100.vip.example.org."]; s == nil || s.Priority != PrioVIP || s.Port != 5222 {
		t.Errorf("VIP SRV = %v", s)
	}
	if got := addrsOf(res.RRs, "10-0-0-101.vip.example.org."); len(got) != 1 || got[0] != "10.0.0.101" {
		t.Errorf("VIP A = %v", got)
	}
	if got := strings.Join(addrsOf(res.RRs, "example.org."), ","); got != "10.0.0.100,10.0.0.101" {
		t.Errorf("domain A = %s, want the VIPs", got)
	}
}

func TestBuildLoadedAndDrainingSteerByPriority(t *testing.T) {
	b := NewBuilder(testParams())
	dr := node("n3", "10.0.0.3", 0)
	dr.Draining = true
	v := View{Nodes: []Node{node("n1", "10.0.0.1", 100), node("n2", "10.0.0.2", 400), dr, node("n4", "10.0.0.4", 100)},
		VIPs: []VIP{{netip.MustParseAddr("10.0.0.100"), "n2"}, {netip.MustParseAddr("10.0.0.103"), "n3"}}}
	res := b.Build(v)
	c := srvs(res.RRs, "_xmpp-client._tcp.example.org.")
	want := map[string]uint16{
		"n1.node.example.org.": PrioNode, "n4.node.example.org.": PrioNode,
		"n2.node.example.org.": PrioNodeLoaded, "10-0-0-100.vip.example.org.": PrioVIPLoaded,
		"n3.node.example.org.": PrioNodeDraining, "10-0-0-103.vip.example.org.": PrioVIPDraining,
	}
	for tg, p := range want {
		if c[tg] == nil || c[tg].Priority != p {
			t.Errorf("%s: %v, want priority %d", tg, c[tg], p)
		}
	}
	if strings.Join(res.Loaded, ",") != "n2" {
		t.Errorf("loaded = %v", res.Loaded)
	}
	// Weights fall with load: average of n1,n2,n4 is 200.
	if w1, w2 := c["n1.node.example.org."].Weight, c["n2.node.example.org."].Weight; !(w1 > w2) {
		t.Errorf("weights n1 %d, n2 %d: the busier node must weigh less", w1, w2)
	}
	// The domain's A goes to the best tier: the unloaded nodes (no VIP is unloaded).
	if got := strings.Join(addrsOf(res.RRs, "example.org."), ","); got != "10.0.0.1,10.0.0.4" {
		t.Errorf("domain A = %s", got)
	}
}

func TestLoadedHysteresis(t *testing.T) {
	b := NewBuilder(testParams()) // factor 1.5, min 50
	view := func(l2 int) View {
		return View{Nodes: []Node{node("n1", "10.0.0.1", 100), node("n2", "10.0.0.2", l2), node("n3", "10.0.0.3", 100)}}
	}
	steps := []struct {
		load   int
		loaded bool
	}{
		{140, false}, // avg 113: 1.24x
		{220, true},  // avg 140: 1.57x, +80
		{180, true},  // avg 127: 1.42x — above the exit line (1.25x) so it stays
		{150, true},  // avg 117: 1.29x and +33: still above the exit line (1.25x, +25)
	}
	for i, s := range steps {
		res := b.Build(view(s.load))
		got := len(res.Loaded) == 1
		if got != s.loaded {
			t.Fatalf("step %d load %d: loaded=%v, want %v", i, s.load, got, s.loaded)
		}
	}
	if res := b.Build(view(120)); len(res.Loaded) != 0 {
		t.Fatalf("load 120 (1.06x) still loaded")
	}
	if res := b.Build(view(180)); len(res.Loaded) != 0 {
		t.Fatalf("load 180 re-entered loaded below the entry line (1.42x)")
	}
}

func TestAbsoluteLoadHighAndSmallNumbers(t *testing.T) {
	p := testParams()
	p.LoadHigh = 1000
	b := NewBuilder(p)
	// 3x the average but only 20 connections more: not loaded (small numbers).
	if res := b.Build(View{Nodes: []Node{node("n1", "10.0.0.1", 5), node("n2", "10.0.0.2", 30)}}); len(res.Loaded) != 0 {
		t.Errorf("loaded %v on tiny counts", res.Loaded)
	}
	res := b.Build(View{Nodes: []Node{node("n1", "10.0.0.1", 1000), node("n2", "10.0.0.2", 1010)}})
	if len(res.Loaded) != 2 {
		t.Errorf("loaded %v, want both over load-high", res.Loaded)
	}
}

func TestWeightQuantized(t *testing.T) {
	for _, c := range []struct {
		load, avg float64
		want      uint16
	}{{100, 100, 100}, {110, 100, 100}, {200, 100, 50}, {0, 100, 1000}, {10000, 100, 1}, {0, 0, 100}} {
		if got := weight(c.load, c.avg); got != c.want {
			t.Errorf("weight(%v, %v) = %d, want %d", c.load, c.avg, got, c.want)
		}
	}
}

func TestHostNames(t *testing.T) {
	b := NewBuilder(testParams())
	res := b.Build(View{Nodes: []Node{node("Edge_1", "10.0.0.1", 0), node("edge-1", "10.0.0.2", 0)}})
	c := srvs(res.RRs, "_xmpp-client._tcp.example.org.")
	if len(c) != 2 {
		t.Fatalf("targets %v: two nodes whose names sanitize alike must stay apart", c)
	}
	if c["edge-1.node.example.org."] == nil {
		t.Errorf("targets %v", c)
	}
	if h := b.VIPHost(netip.MustParseAddr("fd00::1")); h != "fd00--1.vip.example.org." {
		t.Errorf("VIP host %s", h)
	}
}

func TestParamsCheck(t *testing.T) {
	if err := (Params{Zone: "example.org", Domain: "chat.example.org"}).Check(); err != nil {
		t.Errorf("domain under zone: %v", err)
	}
	if err := (Params{Zone: "other.org", Domain: "example.org"}).Check(); err == nil || !strings.Contains(err.Error(), "outside zone") {
		t.Errorf("domain outside zone: %v", err)
	}
}

func TestPusherConfigCheck(t *testing.T) {
	ok := PusherConfig{Zone: "example.org", Domain: "chat.example.org", HostSuffix: []string{"node.example.org"}, Key: TSIGKey{Name: "k.", Secret: "eA=="}}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	bad := ok
	bad.Zone = "chat.example.org"
	if err := bad.Check(); err == nil || !strings.Contains(err.Error(), "host names under node.example.org.") {
		t.Fatalf("hosts outside the update zone: %v", err)
	}
}

func TestNextSerial(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	if s := NextSerial(0, now); s != 1_800_000_000 {
		t.Errorf("first serial %d", s)
	}
	if s := NextSerial(1_800_000_000, now); s != 1_800_000_001 {
		t.Errorf("same second: %d", s)
	}
	if s := NextSerial(1_800_000_005, now); s != 1_800_000_006 {
		t.Errorf("ahead of the clock: %d", s)
	}
	if s := NextSerial(0xffffffff, now); s != 1_800_000_000 {
		t.Errorf("after a wrap (RFC 1982): %d", s)
	}
}

func TestParseKey(t *testing.T) {
	k, err := ParseKey("key \"xedge-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0c2VjcmV0c2VjcmV0\";\n};\n")
	if err != nil || k.Name != "xedge-key." || k.Algorithm != mdns.HmacSHA256 || k.Secret != "c2VjcmV0c2VjcmV0c2VjcmV0" {
		t.Fatalf("ParseKey = %+v, %v", k, err)
	}
	if _, err := ParseKey(`key "k" { algorithm hmac-md5; secret "eA=="; };`); err == nil {
		t.Error("hmac-md5 accepted")
	}
	if _, err := ParseKey("garbage"); err == nil {
		t.Error("garbage accepted")
	}
}

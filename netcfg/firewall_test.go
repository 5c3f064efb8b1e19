package netcfg

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	p, err := ParsePorts("5222, 5223/tcp,53/udp")
	if err != nil || !slices.Equal(p, []Port{{"tcp", 5222}, {"tcp", 5223}, {"udp", 53}}) {
		t.Fatalf("%v %v", p, err)
	}
	for _, bad := range []string{"0", "x", "53/sctp", "70000"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestFirewallRules(t *testing.T) {
	s := FirewallSpec{Open: []Port{{"tcp", 5222}, {"udp", 53}}, Cluster: []Port{{"tcp", 7400}},
		ClusterSubnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.7/24"), netip.MustParsePrefix("fd00::/64")},
		RatePerSource:  10, DropOther: true}
	r4 := s.rules(4)
	in := r4[ChainInput]
	joined := func(r []string) string { return strings.Join(r, " ") }
	var lines []string
	for _, r := range in {
		lines = append(lines, joined(r))
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{
		"-p tcp --dport 5222 -m conntrack --ctstate NEW -j XEDGE-RATE",
		"-p udp --dport 53 -j ACCEPT",
		"-s 10.0.0.0/24 -p tcp --dport 7400 -j ACCEPT",
		"-p tcp --dport 7400 -j DROP",
	} {
		if !strings.Contains(all, want) {
			t.Fatalf("IPv4 rules lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "fd00::") {
		t.Fatal("IPv6 subnet in IPv4 rules")
	}
	if joined(in[len(in)-1]) != "-j DROP" {
		t.Fatal("DropOther must end the chain with DROP")
	}
	if !strings.Contains(joined(in[0]), "xedge "+s.hash(4)) {
		t.Fatal("first rule lacks the spec hash")
	}
	if rate := r4[ChainRate]; len(rate) != 2 || !strings.Contains(joined(rate[0]), "--hashlimit-upto 10/sec --hashlimit-burst 20 --hashlimit-mode srcip") {
		t.Fatalf("rate chain %v", rate)
	}
	if !strings.Contains(strings.Join(s.rules(6)[ChainInput][3], " "), "ipv6-icmp") {
		t.Fatal("IPv6 rules without ICMPv6")
	}
	s2 := s
	s2.RatePerSource = 0
	if _, ok := s2.rules(4)[ChainRate]; ok || s2.hash(4) == s.hash(4) {
		t.Fatal("no rate: no rate chain, and another hash")
	}
}

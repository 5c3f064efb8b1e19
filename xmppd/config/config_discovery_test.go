package config

import (
	"slices"
	"strings"
	"testing"
)

func TestDiscoverySources(t *testing.T) {
	key := "--cluster-key=0123456789abcdef"
	cases := []struct {
		args []string
		want DiscoverySources
	}{
		{[]string{}, DiscoverySources{}},
		// A plain loopback cluster (the tests' setup) runs no discovery.
		{[]string{"--cluster-addr", "127.0.0.2:7400", key, "--join", "127.0.0.1:7400"}, DiscoverySources{}},
		{[]string{"--cluster-addr", "127.0.0.2:7400", key}, DiscoverySources{}},
		{[]string{"--cluster-addr", "127.0.0.2:7400", key, "--seeds", "127.0.0.1:7401"}, DiscoverySources{Serf: true, AutoJoin: true}},
		// The appliance: no join, no seeds: serf + scan + auto-join.
		{[]string{"--cluster-addr", "10.0.0.5:7400", key}, DiscoverySources{Serf: true, Scan: true, AutoJoin: true}},
		{[]string{"--cluster-addr", "10.0.0.5:7400", key, "--join", "10.0.0.1:7400"}, DiscoverySources{Serf: true}},
		{[]string{"--cluster-addr", "10.0.0.5:7400", key, "--discover-domain", "lab.example"}, DiscoverySources{Serf: true, DNS: true, AutoJoin: true}},
		{[]string{"--cluster-addr", "127.0.0.5:7400", key, "--discover", "scan"}, DiscoverySources{Serf: true, Scan: true, AutoJoin: true}},
		{[]string{"--cluster-addr", "10.0.0.5:7400", key, "--discover", "none"}, DiscoverySources{}},
	}
	for _, c := range cases {
		cfg, _, err := Parse("xmppd", c.args)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := cfg.DiscoverySources(); got != c.want {
			t.Errorf("%v: got %+v want %+v", c.args, got, c.want)
		}
	}
}

func TestGossipAddrsAndSeeds(t *testing.T) {
	cfg, _, err := Parse("xmppd", []string{"--cluster-addr", "0.0.0.0:7400", "--advertise-addr", "10.0.0.5:7400",
		"--cluster-key", "0123456789abcdef", "--join", "10.0.0.1:7400,10.0.0.2:7500", "--seeds", "10.0.0.3, 10.0.0.4:9000,10.0.0.1:7401"})
	if err != nil {
		t.Fatal(err)
	}
	bind, adv, err := cfg.GossipAddrs()
	if err != nil || bind.String() != "0.0.0.0:7401" || adv.String() != "10.0.0.5:7401" {
		t.Fatalf("gossip addrs %v %v %v", bind, adv, err)
	}
	want := []string{"10.0.0.3:7401", "10.0.0.4:9000", "10.0.0.1:7401", "10.0.0.2:7501"}
	if got := cfg.GossipSeeds(); !slices.Equal(got, want) {
		t.Fatalf("seeds %v want %v", got, want)
	}
	cfg, _, err = Parse("xmppd", []string{"--cluster-addr", "10.0.0.5:7400", "--cluster-key", "0123456789abcdef", "--gossip-addr", "10.0.0.5:8301", "--gossip-advertise", "192.0.2.5:8301"})
	if err != nil {
		t.Fatal(err)
	}
	if bind, adv, _ := cfg.GossipAddrs(); bind.String() != "10.0.0.5:8301" || adv.String() != "192.0.2.5:8301" {
		t.Fatalf("explicit gossip addrs %v %v", bind, adv)
	}
}

func TestDiscoveryChecks(t *testing.T) {
	key := "--cluster-key=0123456789abcdef"
	bad := map[string][]string{
		"discover \"scan,ftp\"":                {"--cluster-addr", "10.0.0.5:7400", key, "--discover", "scan,ftp"},
		"scan-rate":                            {"--cluster-addr", "10.0.0.5:7400", key, "--scan-rate", "0"},
		"scan-max-prefix":                      {"--cluster-addr", "10.0.0.5:7400", key, "--scan-max-prefix", "8"},
		"dns-servers":                          {"--cluster-addr", "10.0.0.5:7400", key, "--dns-servers", "ns.example"},
		"port must be 1-65535":                 {"--cluster-addr", "10.0.0.5:7400", key, "--seeds", "10.0.0.1:0"},
		"without cluster-addr":                 {"--seeds", "10.0.0.1"},
		"no port above it":                     {"--cluster-addr", "10.0.0.5:65535", key},
		"listens on every address":             {"--cluster-addr", "0.0.0.0:7400", key, "--advertise-addr", "10.0.0.5:7400", "--gossip-advertise", "0.0.0.0:7401"},
		"gossip-addr \"nohost\": want ip:port": {"--cluster-addr", "10.0.0.5:7400", key, "--gossip-addr", "nohost"},
	}
	for want, args := range bad {
		_, _, err := Parse("xmppd", args)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err %v, want %q", args, err, want)
		}
	}
}

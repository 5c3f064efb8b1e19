package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDNSSettings(t *testing.T) {
	d, _, err := Parse("xmppd", nil)
	if err != nil || d.DNS.Enabled() || d.DNS.TTL != 30*time.Second || !d.DNS.DomainAddrs || d.DNS.LoadFactor != 1.5 {
		t.Fatalf("defaults: %+v %v", d.DNS, err)
	}
	f := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(f, []byte("dns-listen: 127.0.0.1:5353\ndns_ns: ns1.example.org, ns2.example.org\ndns-ttl: 10s\n"), 0o600)
	c, _, err := Parse("xmppd", []string{"--config", f, "--dns-update", "127.0.0.1:53", "--dns-tsig-key-file", "/k"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.DNS.Enabled() || c.DNS.Listen != "127.0.0.1:5353" || c.DNS.TTL != 10*time.Second || strings.Join(c.DNS.NSList(), "|") != "ns1.example.org|ns2.example.org" {
		t.Fatalf("%+v", c.DNS)
	}
	for _, bad := range [][]string{
		{"--dns-update", "127.0.0.1:53"},                             // no key
		{"--dns-listen", "nohostport"},                               // not host:port
		{"--dns-listen", ":53", "--dns-ttl", "0s"},                   // TTL
		{"--dns-listen", ":53", "--dns-load-factor", "1"},            // factor
		{"--dns-listen", ":53", "--dns-s2s-port", "70000"},           // port
		{"--dns-update", "127.0.0.1:0", "--dns-tsig-key-file", "/k"}, // update needs a real port
	} {
		if _, _, err := Parse("xmppd", bad); err == nil || !strings.Contains(err.Error(), "dns") {
			t.Errorf("%v accepted (err %v)", bad, err)
		}
	}
}

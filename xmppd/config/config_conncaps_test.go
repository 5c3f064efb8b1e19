package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestConnCaps(t *testing.T) {
	c, _, err := Parse("xmppd", nil)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := c.ConnCaps.ExemptPrefixes()
	if err != nil || c.ConnCaps.MaxPerIP != 32 || len(ex) != 2 || !ex[0].Contains(netip.MustParseAddr("127.9.9.9")) || !ex[1].Contains(netip.MustParseAddr("::1")) {
		t.Fatalf("defaults: %+v %v %v", c.ConnCaps, ex, err)
	}
	if _, ok, _ := c.ConnCaps.ListenerRate(c.ConnCaps.C2S); ok {
		t.Fatal("a listener shaper by default: c2s-shaper should apply")
	}
	// ejabberd's form in YAML: a map of named rates, listeners naming one.
	f := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(f, []byte("max_connections_per_ip: 5\nshapers: {normal: 3000, fast: 50000}\nc2s_listener_shaper: normal\nc2s_tls_listener_shaper: none\n"), 0o600)
	c, _, err = Parse("xmppd", []string{"--config", f})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok, err := c.ConnCaps.ListenerRate(c.ConnCaps.C2S); err != nil || !ok || r != 3000 {
		t.Fatalf("c2s listener: %d %v %v", r, ok, err)
	}
	if r, ok, err := c.ConnCaps.ListenerRate(c.ConnCaps.C2STLS); err != nil || !ok || r != 0 {
		t.Fatalf("c2s-tls listener: %d %v %v", r, ok, err)
	}
	if c.ConnCaps.MaxPerIP != 5 {
		t.Fatalf("max: %d", c.ConnCaps.MaxPerIP)
	}
	for _, bad := range [][]string{
		{"--c2s-listener-shaper", "slow"},
		{"--shapers", "normal=fast"},
		{"--shapers", "none=5"},
		{"--max-connections-per-ip", "-1"},
		{"--max-connections-per-ip-exempt", "10.0.0.0/33"},
	} {
		if _, _, err := Parse("xmppd", bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseFileAndFlags(t *testing.T) {
	f := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(f, []byte("domain: example.org\nc2s_shaper: 5000\nc2s-tls: \"\"\nkeepalive: 2s\nallow-registration: false\ndata: /tmp/d\n"), 0o600)
	c, _, err := Parse("xmppd", []string{"--config", f, "--domain", "flag.org"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Domain != "flag.org" || c.C2SShaper != 5000 || c.C2STLS != "" || c.Keepalive != 2*time.Second || c.AllowRegistration {
		t.Fatalf("%+v", c)
	}
	if c.AdminSocket != "/tmp/d/admin.sock" {
		t.Fatal(c.AdminSocket)
	}
	os.WriteFile(f, []byte("bogus: 1\n"), 0o600)
	if _, _, err := Parse("xmppd", []string{"--config", f}); err == nil {
		t.Fatal("unknown key accepted")
	}
	if _, _, err := Parse("xmppd", []string{"--cert", "x"}); err == nil {
		t.Fatal("cert without key accepted")
	}
	d, _, err := Parse("xmppd", nil)
	if err != nil || d.Domain != "localhost" || d.C2S != "127.0.0.1:5222" || d.C2STLS != "127.0.0.1:5223" || !d.AllowRegistration || d.MaxStanza != 262144 {
		t.Fatalf("%+v %v", d, err)
	}
}

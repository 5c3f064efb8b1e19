package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestComponentSecrets(t *testing.T) {
	c, _, err := Parse("xmppd", []string{"--component", "127.0.0.1:5347", "--components", "gw.example=s1,Irc.Example=s2"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Component.Secrets["gw.example"] != "s1" || c.Component.Secrets["irc.example"] != "s2" || len(c.Component.Secrets) != 2 {
		t.Fatalf("%v", c.Component.Secrets)
	}
	if c.Storm.PresenceMax != 10 || c.Storm.MaxUserSessions != 10 {
		t.Fatalf("storm defaults %+v", c.Storm)
	}
	f := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(f, []byte("component: 127.0.0.1:5347\ncomponents:\n  gw.example.com: {secret: abc}\n  irc.example.com:\n    secret: def\n"), 0o600)
	c, _, err = Parse("xmppd", []string{"--config", f})
	if err != nil {
		t.Fatal(err)
	}
	if c.Component.Secrets["gw.example.com"] != "abc" || c.Component.Secrets["irc.example.com"] != "def" {
		t.Fatalf("%v", c.Component.Secrets)
	}
	if _, _, err := Parse("xmppd", []string{"--component", "127.0.0.1:5347"}); err == nil {
		t.Fatal("a listener without components accepted")
	}
	if _, _, err := Parse("xmppd", []string{"--components", "gw.example"}); err == nil {
		t.Fatal("a domain without a secret accepted")
	}
}

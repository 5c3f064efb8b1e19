package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRegisterPolicy(t *testing.T) {
	c, _, err := Parse("xmppd", nil)
	if err != nil || c.Register.Policy != RegisterLoopback || c.EffectiveRegister() != RegisterLoopback {
		t.Fatalf("default: %v %+v", err, c.Register)
	}
	c, _, err = Parse("xmppd", []string{"--register", "allow", "--allow-registration=false"})
	if err != nil || c.EffectiveRegister() != RegisterDeny {
		t.Fatalf("allow-registration=false must win: %v %q", err, c.EffectiveRegister())
	}
	if _, _, err = Parse("xmppd", []string{"--register", "sometimes"}); err == nil || !strings.Contains(err.Error(), "register") {
		t.Fatalf("bad policy accepted: %v", err)
	}
}

func TestContactAddresses(t *testing.T) {
	f := filepath.Join(t.TempDir(), "x.yaml")
	os.WriteFile(f, []byte("contact-admin: [mailto:admin@example.org, xmpp:admin@example.org]\ncontact_abuse: mailto:abuse@example.org\n"), 0o600)
	c, _, err := Parse("xmppd", []string{"--config", f, "--contact-security", "https://example.org/security"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"admin-addresses":    {"mailto:admin@example.org", "xmpp:admin@example.org"},
		"abuse-addresses":    {"mailto:abuse@example.org"},
		"security-addresses": {"https://example.org/security"},
	}
	if got := c.Contact.Addresses(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v", got)
	}
	if _, _, err := Parse("xmppd", []string{"--contact-support", "support at example"}); err == nil {
		t.Fatal("a non-URI contact address was accepted")
	}
}

func TestPushDefaults(t *testing.T) {
	c, _, err := Parse("xmppd", []string{"--push-include-body"})
	if err != nil || !c.Push.IncludeBody || !c.Push.IncludeSender {
		t.Fatalf("%v %+v", err, c.Push)
	}
}

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func parseYAML(t *testing.T, yaml string, args ...string) (*Config, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "x.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := Parse("xmppd", append([]string{"--config", f}, args...))
	return c, err
}

func TestHostsMerged(t *testing.T) {
	c, err := parseYAML(t, `
hosts: [a.example, b.example]
auth_backend_timeout: 3s
register: allow
cert: /etc/a.pem
key: /etc/a.key
host_config:
  b.example:
    auth_method: external
    extauth_program: /usr/local/bin/auth.py --x
    extauth-pool-size: 2
    register: deny
    certfile: /etc/b.pem
    keyfile: /etc/b.key
    muc_domain: rooms.b.example
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Domain != "a.example" || strings.Join(c.HostNames(), ",") != "a.example,b.example" || !c.IsHost("b.example") || c.IsHost("c.example") {
		t.Fatalf("domain %q hosts %v", c.Domain, c.HostNames())
	}
	a, ok := c.Host("a.example")
	if !ok || a.Auth.Method != "internal" || a.Register != RegisterAllow || a.Cert != "/etc/a.pem" || a.MUCDomain != "conference.a.example" || a.UploadDomain != "upload.a.example" {
		t.Fatalf("a: %+v", a)
	}
	b, ok := c.Host("b.example")
	if !ok || b.Auth.Method != "external" || b.Auth.ExtauthProgram != "/usr/local/bin/auth.py --x" || b.Auth.ExtauthPoolSize != 2 ||
		b.Auth.Timeout.String() != "3s" || b.Register != RegisterDeny || b.Cert != "/etc/b.pem" || b.Key != "/etc/b.key" || b.MUCDomain != "rooms.b.example" {
		t.Fatalf("b: %+v", b)
	}
	if _, ok := c.Host("c.example"); ok {
		t.Fatal("unserved host has a config")
	}
	// The global setting is not changed by a host's section.
	if c.Auth.Method != "internal" || c.Register.Policy != RegisterAllow {
		t.Fatalf("global changed: %+v", c.Auth)
	}
}

func TestHostsDefaults(t *testing.T) {
	c, _, err := Parse("xmppd", []string{"--domain", "x.example"})
	if err != nil || strings.Join(c.HostNames(), ",") != "x.example" || !c.IsHost("x.example") {
		t.Fatalf("%v %v", c.HostNames(), err)
	}
	h, ok := c.Host("x.example")
	if !ok || h.Register != RegisterLoopback || h.Auth.Method != "internal" {
		t.Fatalf("%+v", h)
	}
	// Flags: domain given and in hosts is the default host.
	c, _, err = Parse("xmppd", []string{"--hosts", "a.example,b.example", "--domain", "b.example", "--allow-registration=false",
		"--host-config", "{a.example: {allow_registration: true, register: allow}}"})
	if err != nil || c.Domain != "b.example" {
		t.Fatalf("%v %v", c.Domain, err)
	}
	if a, _ := c.Host("a.example"); a.Register != RegisterAllow {
		t.Fatalf("a: %+v", a)
	}
	if b, _ := c.Host("b.example"); b.Register != RegisterDeny {
		t.Fatalf("b: %+v", b)
	}
}

func TestHostsErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"hosts: [a.example, a.example]\n", "listed twice"},
		{"hosts: [a.example]\ndomain: b.example\n", `domain "b.example" is not in hosts`},
		{"hosts: [a.example, bad_host]\n", `host "bad_host"`},
		{"hosts: [A.example]\n", "lowercase"},
		{"hosts: [a.example]\nhost_config:\n  c.example:\n    register: deny\n", `names "c.example", which is not in hosts`},
		{"hosts: [a.example]\nhost_config:\n  a.example:\n    c2s: 1.2.3.4:5222\n", `key "c2s" cannot be set per host`},
		{"hosts: [a.example]\nhost_config:\n  a.example:\n    auth_method: external\n", "needs extauth-program"},
		{"hosts: [a.example]\nhost_config:\n  a.example:\n    register: maybe\n", `register "maybe"`},
		{"hosts: [a.example]\nhost_config:\n  a.example:\n    certfile: /x.pem\n", "given together"},
		{"hosts: [a.example]\nhost_config:\n  a.example:\n    extauth_pool_size: many\n", `key "extauth-pool-size"`},
		{"hosts: [a.example]\nhost_config: [a.example]\n", "host-config"},
		{"hosts: [a.example]\nhost_config:\n  a.example:\n    sasl_channel_binding: tls-exporter\n", "server-wide"},
	} {
		_, err := parseYAML(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

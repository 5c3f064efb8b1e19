package s2s

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
)

// A server with two virtual hosts sends each host's stanzas on that host's own
// link (stream from and dialback key of the host, its certificate for SASL
// EXTERNAL), and takes streams to either host.
func TestVirtualHostLinks(t *testing.T) {
	for _, tc := range []struct {
		name, auth string
		ca         bool
	}{{"dialback", "dialback", false}, {"sasl-external", "sasl-external", true}} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDNS(t)
			roots := x509.NewCertPool()
			var ca *tls.Certificate
			if tc.ca {
				c := testCert(t, "test CA", nil, true)
				ca = &c
				roots.AddCert(c.Leaf)
			}
			vcert := testCert(t, "v.test", ca, false)
			hosts := func(dom string) bool { return dom == "a.test" || dom == "v.test" }
			a := startNode(t, d, "a.test", testCert(t, "a.test", ca, false), roots, func(c *Config) {
				c.NoBidi = true
				c.Local, c.Hosts = hosts, hosts
				c.TLS.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
					if h.ServerName == "v.test" {
						return &vcert, nil
					}
					return nil, nil
				}
			})
			d.addSRV("xmpp-server", "v.test", "s2s.a.test", a.Addrs()[0].(*net.TCPAddr).Port)
			b := startNode(t, d, "b.test", testCert(t, "b.test", ca, false), roots, func(c *Config) { c.NoBidi = true })

			send(a, "carol@v.test/r", "bob@b.test", "from v")
			got := b.wait(t, "b.test")
			if got.Attr("from") != "carol@v.test/r" || got.ChildText("", "body") != "from v" {
				t.Fatalf("b.test got %s", got)
			}
			send(a, "alice@a.test/r", "bob@b.test", "from a")
			if got := b.wait(t, "b.test"); got.Attr("from") != "alice@a.test/r" {
				t.Fatalf("b.test got %s", got)
			}
			if got := linkAuth(b, "v.test", "in"); got != tc.auth {
				t.Errorf("b.test's stream from v.test: auth %q, want %s (%+v)", got, tc.auth, b.Status())
			}
			if got := linkAuth(b, "a.test", "in"); got != tc.auth {
				t.Errorf("b.test's stream from a.test: auth %q, want %s", got, tc.auth)
			}
			froms := map[string]bool{}
			for _, l := range a.Status() {
				if l.Direction == "out" && l.Domain == "b.test" {
					froms[l.From] = true
				}
			}
			if !froms[""] || !froms["v.test"] || len(a.Domains()) != 2 {
				t.Fatalf("a's links %+v, keys %v", a.Status(), a.Domains())
			}
			// Back to the virtual host: b.test's stream to v.test is accepted.
			send(b, "bob@b.test/x", "carol@v.test/r", "to v")
			if got := a.wait(t, "v.test"); got.Attr("to") != "carol@v.test/r" || got.ChildText("", "body") != "to v" {
				t.Fatalf("v.test got %s", got)
			}
		})
	}
}

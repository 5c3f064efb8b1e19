package c2s

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"xedge/xmppd/internal/scram"
	"xedge/xmppd/internal/testenv"
)

// passwordOnly is an Authenticator that only checks passwords (like extauth or
// LDAP): "ext-pw" opens any account; down makes it fail like a dead backend.
type passwordOnly struct {
	down   atomic.Bool
	checks atomic.Int32
}

func (p *passwordOnly) Method() string { return "external" }
func (p *passwordOnly) CheckPassword(_ context.Context, user, pw string) (bool, error) {
	p.checks.Add(1)
	if p.down.Load() {
		return false, errors.New("backend down")
	}
	return user == "carol" && pw == "ext-pw", nil
}
func (p *passwordOnly) SCRAM(string) scram.Lookup { return nil }
func (p *passwordOnly) SCRAMMechanisms() []string { return nil }
func (p *passwordOnly) CanRegister() bool         { return false }
func (p *passwordOnly) Exists(_ context.Context, user string) (bool, error) {
	return user == "carol", nil
}
func (p *passwordOnly) Create(context.Context, string, string) error { return errors.New("read-only") }
func (p *passwordOnly) SetPassword(context.Context, string, string) error {
	return errors.New("read-only")
}
func (p *passwordOnly) Delete(context.Context, string) error   { return errors.New("read-only") }
func (p *passwordOnly) List(context.Context) ([]string, error) { return nil, errors.New("read-only") }

// With a backend that keeps no SCRAM keys, only PLAIN (under TLS) is offered;
// SCRAM is refused; a user the backend knows (and the accounts table does not)
// logs in and binds; a backend failure is <temporary-auth-failure/> and is not
// counted as a failed guess; registration is not-allowed.
func TestAuthenticatorWithoutSCRAM(t *testing.T) {
	e := start(t, func(c *Config) { c.AllowPlaintext = true })
	pa := &passwordOnly{}
	e.srv.SetAuthenticator(pa)

	if f := testenv.Dial(t, e.addr).Open("localhost"); strings.Contains(f, "<mechanism>") {
		t.Fatalf("mechanisms offered without TLS to a password-only backend: %s", f)
	}
	c := testenv.Dial(t, e.addr)
	f := c.StartTLS("localhost")
	if !strings.Contains(f, "<mechanism>PLAIN</mechanism>") || strings.Contains(f, "SCRAM") {
		t.Fatalf("features under TLS: %s", f)
	}
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" +
		base64.StdEncoding.EncodeToString([]byte("n,,n=carol,r=abcdefgh")) + "</auth>")
	c.Expect("<invalid-mechanism", 5*time.Second)
	c.Send("<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>dave</username><password>y</password></query></iq>")
	if got := c.Expect("</iq>", 5*time.Second); !strings.Contains(got, "not-allowed") {
		t.Fatalf("registration with a read-only backend: %s", got)
	}
	pa.down.Store(true)
	plain := base64.StdEncoding.EncodeToString([]byte("\x00carol\x00ext-pw"))
	for range 6 { // more than AuthFailMax: backend failures are not guesses
		c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + plain + "</auth>")
		c.Expect("<temporary-auth-failure", 5*time.Second)
	}
	pa.down.Store(false)
	c.AuthPlain("localhost", "carol", "ext-pw")
	if j := c.Bind("r"); j != "carol@localhost/r" {
		t.Fatalf("bound %s", j)
	}
	if n := pa.checks.Load(); n != 7 {
		t.Fatalf("backend asked %d times, want 7", n)
	}
}

package c2s

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"xedge/xmppd/internal/scram"
	"xedge/xmppd/internal/testenv"

	"mellium.im/sasl"
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

// scramClient runs a SCRAM exchange with mellium's client (which binds to
// tls-exporter on TLS 1.3) and returns what ended it: "success" or the failure.
func scramClient(t *testing.T, c *testenv.Raw, m sasl.Mechanism, opts ...sasl.Option) string {
	t.Helper()
	return scramAs(t, c, m, "alice", "secret", opts...)
}

// scramAs is scramClient with the credentials of one's choice.
func scramAs(t *testing.T, c *testenv.Raw, m sasl.Mechanism, user, pw string, opts ...sasl.Option) string {
	t.Helper()
	opts = append(opts, sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte(user), []byte(pw), nil }))
	cl := sasl.NewClient(m, opts...)
	_, first, err := cl.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	// next reads one top-level SASL element (up to its first end tag).
	next := func() string {
		a, _ := c.ReadUntil("</", 5*time.Second)
		b, _ := c.ReadUntil(">", 5*time.Second)
		return a + b
	}
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + m.Name + "'>" + base64.StdEncoding.EncodeToString(first) + "</auth>")
	ch := next()
	if !strings.Contains(ch, "<challenge") {
		return ch
	}
	ch = ch[strings.Index(ch, "<challenge"):]
	ch = ch[strings.Index(ch, ">")+1 : strings.LastIndex(ch, "</")]
	sf, _ := base64.StdEncoding.DecodeString(ch)
	_, final, err := cl.Step(sf)
	if err != nil {
		t.Fatal(err)
	}
	c.Send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(final) + "</response>")
	if end := next(); !strings.Contains(end, "<success") {
		return end
	}
	return "success"
}

// With channel binding on, SCRAM-SHA-*-PLUS and XEP-0440's tls-exporter are
// offered under TLS; mellium's client binds to the TLS exporter and logs in;
// binding data of another connection is refused; the "y" flag (client thinks the
// server cannot bind) is refused as a downgrade; off, nothing -PLUS is offered.
func TestSCRAMPlusTLSExporter(t *testing.T) {
	e := start(t, nil)
	e.srv.SetChannelBinding(true)
	c := testenv.Dial(t, e.addr)
	f := c.StartTLS("localhost")
	for _, want := range []string{"<mechanism>SCRAM-SHA-256-PLUS</mechanism>", "<mechanism>SCRAM-SHA-1-PLUS</mechanism>",
		"<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-exporter'/>"} {
		if !strings.Contains(f, want) {
			t.Fatalf("features lack %s: %s", want, f)
		}
	}
	state := c.Conn.(*tls.Conn).ConnectionState()
	remote := sasl.RemoteMechanisms("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1")
	if got := scramClient(t, c, sasl.ScramSha256Plus, sasl.TLSState(state), remote); got != "success" {
		t.Fatalf("SCRAM-SHA-256-PLUS: %s", got)
	}
	c.Open("localhost")
	if j := c.Bind("plus"); j != "alice@localhost/plus" {
		t.Fatal(j)
	}

	// Another connection's exporter: the binding does not match.
	other := testenv.Dial(t, e.addr)
	other.StartTLS("localhost")
	if got := scramClient(t, other, sasl.ScramSha1Plus, sasl.TLSState(state), remote); !strings.Contains(got, "<malformed-request") {
		t.Fatalf("foreign channel binding: %s", got)
	}
	// A client that could bind but believes the server cannot ("y" flag).
	y := testenv.Dial(t, e.addr)
	y.StartTLS("localhost")
	y.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>" +
		base64.StdEncoding.EncodeToString([]byte("y,,n=alice,r=abcdefghijkl")) + "</auth>")
	if got := y.Expect("</failure>", 5*time.Second); !strings.Contains(got, "<not-authorized") {
		t.Fatalf("y flag while -PLUS was offered: %s", got)
	}
	// A -PLUS mechanism without binding ("n" or "y") is malformed.
	if got := scramClient(t, y, sasl.ScramSha256Plus, sasl.TLSState(y.Conn.(*tls.Conn).ConnectionState())); !strings.Contains(got, "<malformed-request") {
		t.Fatalf("-PLUS without binding: %s", got)
	}

	off := start(t, nil)
	if f := testenv.Dial(t, off.addr).StartTLS("localhost"); strings.Contains(f, "PLUS") || strings.Contains(f, "sasl-cb") {
		t.Fatalf("channel binding offered while off: %s", f)
	}
}

package c2s

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/internal/testenv"
	"xedge/xmppd/router"
	"xedge/xmppd/tlscert"
	"xedge/xmppd/xmlstream"
)

// startHosts serves localhost (default: registration allowed, the default
// certificate) and b.example (its own certificate, registration denied);
// alice has an account on each, with different passwords.
func startHosts(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := memstore.New("n1")
	r := router.New(router.Config{Domain: "localhost", Hosts: []string{"localhost", "b.example"}, Node: "n1", Store: st, Logger: log})
	a := accounts.New(st, "localhost", nil)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hs := accounts.NewHosts("localhost")
	hs.Set("localhost", a)
	hs.Set("b.example", a.ForHost("b.example"))
	r.SetAccounts(hs)
	if err := hs.Create(ctx, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	if err := hs.Create(ctx, "alice@b.example", "bsecret"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cf, kf, _, err := tlscert.EnsureSelfSigned(filepath.Join(dir, "tls"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlscert.Config(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	bcf, bkf, _, err := tlscert.EnsureSelfSigned(filepath.Join(dir, "tls"), "b.example")
	if err != nil {
		t.Fatal(err)
	}
	bcert, err := tls.LoadX509KeyPair(bcf, bkf)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Domain: "localhost", TLS: tc, Limits: xmlstream.DefaultLimits(), AllowRegistration: true,
		IdleTimeout: time.Minute, SMTimeout: time.Minute, Logger: log}, r, a)
	if err := s.SetHosts([]Host{{Domain: "localhost", Register: RegisterAllow}, {Domain: "b.example", Register: RegisterDeny, Cert: &bcert}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHosts([]Host{{Domain: "b.example"}}); err == nil {
		t.Fatal("hosts without the default host accepted")
	}
	s.Listen("127.0.0.1:0", false)
	s.Listen("127.0.0.1:0", true)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return &env{srv: s, r: r, store: st, addr: strings.TrimPrefix(s.Addrs()[0], "starttls ")}
}

func peerName(t *testing.T, c *testenv.Raw) string {
	t.Helper()
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		t.Fatal("not TLS")
	}
	return tc.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func plainAuth(c *testenv.Raw, user, pw string) string {
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pw)) + "</auth>")
	got, _ := c.ReadUntil("</", 10*time.Second)
	return got
}

func TestVirtualHostStreams(t *testing.T) {
	e := startHosts(t)
	// An unserved host: <host-unknown/>.
	c := testenv.Dial(t, e.addr)
	c.Send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='c.example' version='1.0'>")
	if got := c.Expect("</stream:stream>", 5*time.Second); !strings.Contains(got, "<host-unknown") {
		t.Fatalf("unserved host: %s", got)
	}
	// b.example: its certificate (SNI), its accounts, its registration policy.
	c = testenv.Dial(t, e.addr)
	f := c.StartTLS("b.example")
	if n := peerName(t, c); n != "b.example" {
		t.Fatalf("b.example's stream got the certificate of %q", n)
	}
	if testenv.Attr(f, "from") != "b.example" {
		t.Fatalf("stream from %q", testenv.Attr(f, "from"))
	}
	if strings.Contains(f, "iq-register") {
		t.Fatalf("b.example offers registration: %s", f)
	}
	c.Send("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>carol</username><password>x</password></query></iq>")
	if got := c.Expect("</iq>", 5*time.Second); !strings.Contains(got, "<not-allowed") {
		t.Fatalf("registration on b.example: %s", got)
	}
	if got := plainAuth(c, "alice", "secret"); !strings.Contains(got, "<failure") {
		t.Fatalf("b.example's alice accepted localhost's password: %s", got)
	}
	c = testenv.Dial(t, e.addr)
	c.StartTLS("b.example")
	if j := c.LoginPlain("b.example", "alice", "bsecret", "r"); j != "alice@b.example/r" {
		t.Fatalf("bound %q", j)
	}
	c.Send("<presence/>")
	// localhost: the default certificate, registration allowed.
	d := testenv.Dial(t, e.addr)
	f = d.StartTLS("localhost")
	if n := peerName(t, d); n != "localhost" || !strings.Contains(f, "iq-register") {
		t.Fatalf("localhost: certificate %q, features %s", n, f)
	}
	d.Send("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>carol</username><password>x</password></query></iq>")
	if got := d.Expect("id='r1'", 5*time.Second); !strings.Contains(got, "type='result'") {
		t.Fatalf("registration on localhost: %s", got)
	}
	if ok, _ := e.r.Accounts().Exists(context.Background(), "carol@b.example"); ok {
		t.Fatal("carol registered on localhost exists on b.example")
	}
	if j := d.LoginPlain("localhost", "alice", "secret", "r"); j != "alice@localhost/r" {
		t.Fatalf("bound %q", j)
	}
	// alice@localhost -> alice@b.example: another account.
	d.Send("<message to='alice@b.example' type='chat' id='m1'><body>hi b</body></message>")
	if got := c.Expect("</message>", 5*time.Second); !strings.Contains(got, "alice@localhost/r") {
		t.Fatalf("alice@b.example got %s", got)
	}
	// After authentication a stream restart may not switch hosts.
	x := testenv.Dial(t, e.addr)
	x.StartTLS("b.example")
	plainAuth(x, "alice", "bsecret")
	x.Send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
	if got := x.Expect("</stream:stream>", 5*time.Second); !strings.Contains(got, "<host-unknown") {
		t.Fatalf("host switch after auth: %s", got)
	}
}

// Direct TLS (XEP-0368): the SNI name picks the host and its certificate
// before any stream header.
func TestVirtualHostSNI(t *testing.T) {
	e := startHosts(t)
	addr := strings.TrimPrefix(e.srv.Addrs()[1], "direct-tls ")
	for _, host := range []string{"b.example", "localhost", ""} {
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: host})
		if err != nil {
			t.Fatal(err)
		}
		want := host
		if want == "" {
			want = "localhost"
		}
		if n := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; n != want {
			t.Fatalf("SNI %q: certificate of %q", host, n)
		}
		tc.Close()
	}
}

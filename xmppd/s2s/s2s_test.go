package s2s

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"xedge/xmppd/jid"
	"xedge/xmppd/xmlstream"
)

// fakeDNS answers SRV and A queries from a map (a unit-test stand-in for the BIND
// of the integration test); unknown names get NXDOMAIN.
type fakeDNS struct {
	mu   sync.Mutex
	srv  map[string][]*dns.SRV // "_xmpp-server._tcp.b.test." -> records
	a    map[string]string     // "b.test." -> IPv4
	addr string
}

func startDNS(t *testing.T) *fakeDNS {
	t.Helper()
	f := &fakeDNS{srv: map[string][]*dns.SRV{}, a: map[string]string{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	server := &dns.Server{PacketConn: pc, Handler: f}
	go server.ActivateAndServe()
	t.Cleanup(func() { server.Shutdown() })
	return f
}

func (f *fakeDNS) addSRV(service, domain, target string, port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := "_" + service + "._tcp." + domain + "."
	f.srv[name] = append(f.srv[name], &dns.SRV{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 5},
		Priority: 0, Weight: 5, Port: uint16(port), Target: dns.Fqdn(target)})
}

func (f *fakeDNS) addA(host, ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.a[dns.Fqdn(host)] = ip
}

func (f *fakeDNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	_, hasA := f.a[name]
	_, hasSRV := f.srv[name]
	switch {
	case q.Qtype == dns.TypeSRV && hasSRV:
		for _, rr := range f.srv[name] {
			m.Answer = append(m.Answer, rr)
		}
	case q.Qtype == dns.TypeA && hasA:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(f.a[name])})
	case hasA || hasSRV:
		// NOERROR, no data.
	default:
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

// testCert returns a certificate for domain (server and client use), signed by ca
// (nil: self-signed) and, for isCA, a CA certificate.
func testCert(t *testing.T, domain string, ca *tls.Certificate, isCA bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: domain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.DNSNames = []string{domain}
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.Leaf, ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// node is one s2s.Server under test with the stanzas it routed.
type node struct {
	*Server
	got chan *xmlstream.Element
}

func startNode(t *testing.T, d *fakeDNS, domain string, cert tls.Certificate, roots *x509.CertPool, mod func(*Config)) *node {
	t.Helper()
	n := &node{got: make(chan *xmlstream.Element, 100)}
	cfg := Config{Domain: domain, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}, RootCAs: roots,
		Resolver: d.addr, DialbackSecret: []byte("secret of " + domain), ConnectTimeout: 5 * time.Second,
		Route:  func(_ context.Context, st *xmlstream.Element) { n.got <- st },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		cfg.Logger = slog.Default()
	}
	if mod != nil {
		mod(&cfg)
	}
	n.Server = New(cfg)
	n.Listen("127.0.0.1:0")
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Stop(ctx)
	})
	port := n.Addrs()[0].(*net.TCPAddr).Port
	d.addSRV("xmpp-server", domain, "s2s."+domain, port)
	d.addA("s2s."+domain, "127.0.0.1")
	return n
}

func (n *node) wait(t *testing.T, what string) *xmlstream.Element {
	t.Helper()
	select {
	case st := <-n.got:
		return st
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing routed", what)
		return nil
	}
}

func message(from, to, body string) (*xmlstream.Element, jid.JID, jid.JID) {
	st := xmlstream.New(xmlstream.NSClient, "message", "from", from, "to", to, "type", "chat", "id", body)
	st.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
	return st, jid.MustParse(from), jid.MustParse(to)
}

func send(n *node, from, to, body string) {
	st, f, tj := message(from, to, body)
	n.Send(context.Background(), st, f, tj)
}

func linkAuth(n *node, domain, dir string) string {
	for _, l := range n.Status() {
		if l.Domain == domain && l.Direction == dir {
			return l.Auth
		}
	}
	return ""
}

// exchange sends a message each way and checks what arrives.
func exchange(t *testing.T, a, b *node) {
	t.Helper()
	send(a, "alice@a.test/r", "bob@b.test", "hello bob")
	got := b.wait(t, "b.test")
	if got.Space != xmlstream.NSClient || got.Attr("from") != "alice@a.test/r" || got.Attr("to") != "bob@b.test" ||
		got.ChildText(xmlstream.NSClient, "body") != "hello bob" {
		t.Fatalf("b.test got %s", got)
	}
	send(b, "bob@b.test/x", "alice@a.test/r", "hi alice")
	got = a.wait(t, "a.test")
	if got.Attr("from") != "bob@b.test/x" || got.ChildText(xmlstream.NSClient, "body") != "hi alice" {
		t.Fatalf("a.test got %s", got)
	}
}

func TestSASLExternalWhenCertificatesVerify(t *testing.T) {
	d := startDNS(t)
	ca := testCert(t, "test CA", nil, true)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	a := startNode(t, d, "a.test", testCert(t, "a.test", &ca, false), roots, func(c *Config) { c.NoBidi = true })
	b := startNode(t, d, "b.test", testCert(t, "b.test", &ca, false), roots, func(c *Config) { c.NoBidi = true })
	exchange(t, a, b)
	for _, c := range []struct {
		n      *node
		domain string
	}{{a, "b.test"}, {b, "a.test"}} {
		if got := linkAuth(c.n, c.domain, "out"); got != "sasl-external" {
			t.Errorf("%s's link to %s: auth %q, want sasl-external (%+v)", c.n.cfg.Domain, c.domain, got, c.n.Status())
		}
		if got := linkAuth(c.n, c.domain, "in"); got != "sasl-external" {
			t.Errorf("%s's stream from %s: auth %q, want sasl-external", c.n.cfg.Domain, c.domain, got)
		}
	}
}

func TestDialbackWhenCertificatesDoNotVerify(t *testing.T) {
	d := startDNS(t)
	empty := x509.NewCertPool()
	a := startNode(t, d, "a.test", testCert(t, "a.test", nil, false), empty, func(c *Config) { c.NoBidi = true })
	b := startNode(t, d, "b.test", testCert(t, "b.test", nil, false), empty, func(c *Config) { c.NoBidi = true })
	exchange(t, a, b)
	if got := linkAuth(a, "b.test", "out"); got != "dialback" {
		t.Errorf("a.test's link: auth %q, want dialback", got)
	}
	if got := linkAuth(b, "a.test", "in"); got != "dialback" {
		t.Errorf("b.test's stream from a.test: auth %q, want dialback", got)
	}
}

func TestSecureAuthRefusesUnverifiedPeer(t *testing.T) {
	d := startDNS(t)
	empty := x509.NewCertPool()
	a := startNode(t, d, "a.test", testCert(t, "a.test", nil, false), empty, func(c *Config) { c.SecureAuth = true })
	startNode(t, d, "b.test", testCert(t, "b.test", nil, false), empty, nil)
	send(a, "alice@a.test/r", "bob@b.test", "secret")
	got := a.wait(t, "bounce")
	if got.Attr("type") != "error" || got.Attr("to") != "alice@a.test/r" || got.Attr("from") != "bob@b.test" ||
		got.Child("", "error") == nil || !strings.Contains(got.String(), "remote-server-not-found") {
		t.Fatalf("bounce: %s", got)
	}
}

// silentListener accepts connections and never answers.
func silentListener(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

func TestQueuedStanzasBouncedOnTimeout(t *testing.T) {
	d := startDNS(t)
	a := startNode(t, d, "a.test", testCert(t, "a.test", nil, false), nil, func(c *Config) {
		c.ConnectTimeout = 300 * time.Millisecond
		c.QueueMax = 3
	})
	d.addSRV("xmpp-server", "slow.test", "slow.test", silentListener(t))
	d.addA("slow.test", "127.0.0.1")
	for i := range 4 {
		send(a, "alice@a.test/r", "x@slow.test", "m"+strconv.Itoa(i))
	}
	// An unavailable presence is dropped, never bounced.
	a.Send(context.Background(), xmlstream.New(xmlstream.NSClient, "presence", "from", "alice@a.test/r", "to", "x@slow.test", "type", "unavailable"),
		jid.MustParse("alice@a.test/r"), jid.MustParse("x@slow.test"))
	conds := map[string]string{}
	for range 4 {
		got := a.wait(t, "bounce")
		if got.Local != "message" || got.Attr("type") != "error" {
			t.Fatalf("bounce: %s", got)
		}
		conds[got.Attr("id")] = got.Child("", "error").FirstChild().Local
	}
	want := map[string]string{"m0": "remote-server-timeout", "m1": "remote-server-timeout", "m2": "remote-server-timeout", "m3": "resource-constraint"}
	for id, c := range want {
		if conds[id] != c {
			t.Errorf("%s bounced with %q, want %q (all: %v)", id, conds[id], c, conds)
		}
	}
	select {
	case st := <-a.got:
		t.Fatalf("more than the four bounces: %s", st)
	case <-time.After(100 * time.Millisecond):
	}
	if ds := a.Domains(); len(ds) != 0 {
		t.Fatalf("links left after the failure: %v", ds)
	}
}

func TestUnknownDomainAndRefusedConnectionBounceNotFound(t *testing.T) {
	d := startDNS(t)
	a := startNode(t, d, "a.test", testCert(t, "a.test", nil, false), nil, nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	d.addSRV("xmpp-server", "down.test", "down.test", port)
	d.addA("down.test", "127.0.0.1")
	for _, to := range []string{"x@down.test", "x@nowhere.test"} {
		send(a, "alice@a.test/r", to, "hello")
		got := a.wait(t, to)
		if got.Attr("type") != "error" || !strings.Contains(got.String(), "remote-server-not-found") {
			t.Fatalf("%s: bounce %s", to, got)
		}
	}
}

func TestAddressFallbackWithoutSRV(t *testing.T) {
	d := startDNS(t)
	empty := x509.NewCertPool()
	b := startNode(t, d, "b.test", testCert(t, "b.test", nil, false), empty, func(c *Config) {
		c.Local = func(x string) bool { return x == "b.test" || x == "c.test" }
	})
	bport := b.Addrs()[0].(*net.TCPAddr).Port
	d.addA("c.test", "127.0.0.1") // c.test: no SRV, served by b's listener on the default port
	a := startNode(t, d, "a.test", testCert(t, "a.test", nil, false), empty, func(c *Config) { c.DefaultPort = bport })
	send(a, "alice@a.test/r", "carol@c.test", "via A")
	got := b.wait(t, "c.test")
	if got.Attr("to") != "carol@c.test" {
		t.Fatalf("got %s", got)
	}
}

// rawPeer speaks the initiating side by hand, to check what the receiving side
// refuses.
type rawPeer struct {
	t   *testing.T
	c   net.Conn
	dec *xmlstream.Decoder
	id  string
}

func dialRaw(t *testing.T, n *node, from, to string) *rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", n.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	p := &rawPeer{t: t, c: c}
	p.open(from, to)
	p.expect(NSTLS, "starttls")
	io.WriteString(p.c, "<starttls xmlns='"+NSTLS+"'/>")
	p.next()
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	p.c = tc
	p.open(from, to)
	return p
}

func (p *rawPeer) open(from, to string) {
	p.t.Helper()
	io.WriteString(p.c, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='"+from+"' to='"+to+"' version='1.0'>")
	p.dec = xmlstream.NewDecoder(bufio.NewReader(p.c), xmlstream.DefaultLimits())
	hdr, err := p.dec.StreamHeader()
	if err != nil {
		p.t.Fatal(err)
	}
	p.id = hdr.Attr("id")
}

func (p *rawPeer) next() *xmlstream.Element {
	p.t.Helper()
	el, err := p.dec.Next()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return el
}

// expect reads the features and checks they have space/local.
func (p *rawPeer) expect(space, local string) *xmlstream.Element {
	p.t.Helper()
	f := p.next()
	if f.Child(space, local) == nil {
		p.t.Fatalf("features without %s: %s", local, f)
	}
	return f
}

func TestDialbackWithForgedKeyIsRefused(t *testing.T) {
	d := startDNS(t)
	empty := x509.NewCertPool()
	startNode(t, d, "a.test", testCert(t, "a.test", nil, false), empty, nil)
	b := startNode(t, d, "b.test", testCert(t, "b.test", nil, false), empty, nil)
	p := dialRaw(t, b, "a.test", "b.test")
	feats := p.expect(NSDialbackFt, "dialback")
	if hasMechanism(feats, "EXTERNAL") {
		t.Fatalf("EXTERNAL offered without a certificate: %s", feats)
	}
	// A key a.test never gave: b.test asks a.test (the real authoritative server).
	io.WriteString(p.c, "<db:result from='a.test' to='b.test'>0123456789abcdef</db:result>")
	r := p.next()
	if r.Space != NSDialback || r.Local != "result" || r.Attr("type") != "invalid" {
		t.Fatalf("answer to a forged key: %s", r)
	}
	// Stanzas from a.test are refused on this stream.
	io.WriteString(p.c, "<message from='mallory@a.test' to='bob@b.test'><body>forged</body></message>")
	e := p.next()
	if e.Local != "error" || e.Child(nsStreams, "not-authorized") == nil {
		t.Fatalf("stanza from an unauthenticated domain: %s", e)
	}
	select {
	case st := <-b.got:
		t.Fatalf("routed a forged stanza: %s", st)
	default:
	}
}

func TestAuthoritativeVerify(t *testing.T) {
	d := startDNS(t)
	a := startNode(t, d, "a.test", testCert(t, "a.test", nil, false), nil, nil)
	p := dialRaw(t, a, "b.test", "a.test")
	p.next() // features
	good := DialbackKey(a.cfg.DialbackSecret, "b.test", "a.test", "stream-1")
	io.WriteString(p.c, "<db:verify from='b.test' to='a.test' id='stream-1'>"+good+"</db:verify>")
	if r := p.next(); r.Local != "verify" || r.Attr("type") != "valid" || r.Attr("id") != "stream-1" || r.Attr("from") != "a.test" {
		t.Fatalf("answer to a good key: %s", r)
	}
	io.WriteString(p.c, "<db:verify from='b.test' to='a.test' id='stream-2'>"+good+"</db:verify>")
	if r := p.next(); r.Attr("type") != "invalid" {
		t.Fatalf("answer to a key for another stream: %s", r)
	}
}

func TestIdleLinkClosesAndReopens(t *testing.T) {
	d := startDNS(t)
	empty := x509.NewCertPool()
	var mu sync.Mutex
	var events []string
	a := startNode(t, d, "a.test", testCert(t, "a.test", nil, false), empty, func(c *Config) {
		c.IdleTimeout = 200 * time.Millisecond
		c.OnLink = func(domain string, up bool) {
			mu.Lock()
			events = append(events, domain+"="+strconv.FormatBool(up))
			mu.Unlock()
		}
	})
	b := startNode(t, d, "b.test", testCert(t, "b.test", nil, false), empty, nil)
	send(a, "alice@a.test/r", "bob@b.test", "one")
	b.wait(t, "one")
	deadline := time.Now().Add(5 * time.Second)
	for len(a.Domains()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle link not closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	send(a, "alice@a.test/r", "bob@b.test", "two")
	if got := b.wait(t, "two"); got.ChildText(xmlstream.NSClient, "body") != "two" {
		t.Fatalf("got %s", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(events, " ") != "b.test=true b.test=false b.test=true" {
		t.Fatalf("link events %v", events)
	}
}

// A stream authenticated by dialback stays open past the negotiation timeout
// while no stanza comes (the deadline of the negotiation no longer applies).
func TestDialbackStreamOutlivesConnectTimeout(t *testing.T) {
	d := startDNS(t)
	empty := x509.NewCertPool()
	a := startNode(t, d, "a.test", testCert(t, "a.test", nil, false), empty, nil)
	b := startNode(t, d, "b.test", testCert(t, "b.test", nil, false), empty, func(c *Config) { c.ConnectTimeout = 500 * time.Millisecond })
	p := dialRaw(t, b, "a.test", "b.test")
	p.next() // features
	key := DialbackKey(a.cfg.DialbackSecret, "b.test", "a.test", p.id)
	io.WriteString(p.c, "<db:result from='a.test' to='b.test'>"+key+"</db:result>")
	if r := p.next(); r.Attr("type") != "valid" {
		t.Fatalf("answer to a's own key: %s", r)
	}
	time.Sleep(time.Second) // past b's negotiation timeout, no stanza meanwhile
	io.WriteString(p.c, "<message from='alice@a.test/r' to='bob@b.test' type='chat'><body>late</body></message>")
	if got := b.wait(t, "late"); got.ChildText(xmlstream.NSClient, "body") != "late" {
		t.Fatalf("got %s", got)
	}
}

// XEP-0288: b.test answers a.test on a.test's own stream, with SASL EXTERNAL and
// with dialback alike; no second connection is made.
func TestBidirectionalStreams(t *testing.T) {
	ca := testCert(t, "test CA", nil, true)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	for _, tc := range []struct {
		name, auth string
		cert       func(domain string) tls.Certificate
	}{
		{"sasl-external", "sasl-external", func(d string) tls.Certificate { return testCert(t, d, &ca, false) }},
		{"dialback", "dialback", func(d string) tls.Certificate { return testCert(t, d, nil, false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDNS(t)
			a := startNode(t, d, "a.test", tc.cert("a.test"), roots, nil)
			b := startNode(t, d, "b.test", tc.cert("b.test"), roots, nil)
			exchange(t, a, b)
			if got := linkAuth(a, "b.test", "out"); got != tc.auth {
				t.Errorf("a.test's link: auth %q, want %s", got, tc.auth)
			}
			if got := linkAuth(b, "a.test", "out"); got != "bidi" {
				t.Errorf("b.test's link to a.test: auth %q, want bidi (%+v)", got, b.Status())
			}
			if got := linkAuth(a, "b.test", "in"); got != "" {
				t.Errorf("a.test has an incoming stream from b.test (%s): b.test did not use the bidirectional stream", got)
			}
		})
	}
}

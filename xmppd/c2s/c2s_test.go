package c2s

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/storage"
	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/internal/testenv"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/router"
	"xedge/xmppd/tlscert"
	"xedge/xmppd/xmlstream"

	"mellium.im/sasl"
)

type env struct {
	srv   *Server
	r     *router.Router
	store *memstore.Store
	addr  string
}

func start(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := memstore.New("n1")
	r := router.New(router.Config{Domain: "localhost", Node: "n1", Store: st, Logger: log})
	a := accounts.New(st, "localhost", nil)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r.SetAccounts(a)
	for _, u := range []string{"alice", "bob"} {
		if err := a.Create(ctx, u, "secret"); err != nil {
			t.Fatal(err)
		}
	}
	cf, kf, _, err := tlscert.EnsureSelfSigned(filepath.Join(t.TempDir(), "tls"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlscert.Config(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Domain: "localhost", TLS: tc, Limits: xmlstream.DefaultLimits(), AllowRegistration: true,
		IdleTimeout: time.Minute, SMTimeout: time.Minute, Logger: log}
	if mod != nil {
		mod(&cfg)
	}
	s := New(cfg, r, a)
	s.Listen("127.0.0.1:0", false)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	addr := strings.TrimPrefix(s.Addrs()[0], "starttls ")
	return &env{srv: s, r: r, store: st, addr: addr}
}

func (e *env) login(t *testing.T, user, res string) *testenv.Raw {
	c := testenv.Dial(t, e.addr)
	c.StartTLS("localhost")
	c.LoginPlain("localhost", user, "secret", res)
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 600; i++ { // 15 s
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestStateMachine(t *testing.T) {
	e := start(t, nil)
	c := testenv.Dial(t, e.addr)
	c.Open("localhost")
	c.Send("<iq type='get' id='x'><query xmlns='jabber:iq:register'/></iq>")
	if got := c.Expect("</stream:stream>", 5*time.Second); !strings.Contains(got, "<not-authorized") {
		t.Fatalf("pre-TLS IQ: %s", got)
	}

	c = testenv.Dial(t, e.addr)
	f := c.StartTLS("localhost")
	if !strings.Contains(f, "SCRAM-SHA-1") || strings.Contains(f, "<bind") {
		t.Fatalf("pre-auth features: %s", f)
	}
	c.Send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
	if got := c.Expect("</stream:stream>", 5*time.Second); !strings.Contains(got, "<not-authorized") {
		t.Fatalf("bind before auth: %s", got)
	}

	c = testenv.Dial(t, e.addr)
	c.StartTLS("localhost")
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-UNKNOWN'/>")
	c.Expect("<invalid-mechanism", 5*time.Second)
	f = c.AuthPlain("localhost", "alice", "secret")
	if !strings.Contains(f, "<bind") || strings.Contains(f, "<mechanisms") {
		t.Fatalf("post-auth features: %s", f)
	}
	c.Send("<message to='bob@localhost'><body>x</body></message>")
	if got := c.Expect("</stream:stream>", 5*time.Second); !strings.Contains(got, "<not-authorized") {
		t.Fatalf("stanza before bind: %s", got)
	}

	c = e.login(t, "alice", "r1")
	waitFor(t, "bound", func() bool { return e.r.Count() == 1 })
	c.Send("<presence/><message to='alice@localhost/r1' id='self'><body>me</body></message>")
	c.Expect("<body>me</body>", 5*time.Second)
	c.Send("<message from='bob@localhost/x' to='alice@localhost'><body>spoof</body></message>")
	if got := c.Expect("</stream:stream>", 5*time.Second); !strings.Contains(got, "<invalid-from") {
		t.Fatalf("spoofed from: %s", got)
	}
	waitFor(t, "unbound", func() bool { return e.r.Count() == 0 })
	if rows := e.store.Ephemeral(router.SessionTable).Get("alice@localhost/r1"); len(rows) != 0 {
		t.Fatal("ephemeral session row left")
	}
	// Clean close: the server answers </stream:stream>.
	c = e.login(t, "alice", "r2")
	c.Send("</stream:stream>")
	c.Expect("</stream:stream>", 5*time.Second)
	if !c.Closed(5 * time.Second) {
		t.Fatal("not closed")
	}
}

// A client that does not read is disconnected without blocking the router.
func TestSlowClientDoesNotBlockRouter(t *testing.T) {
	e := start(t, func(c *Config) { c.SendQueue = 16 })
	slow := e.login(t, "bob", "slow")
	_ = slow
	waitFor(t, "bound", func() bool { return e.r.Count() == 1 })
	body := strings.Repeat("z", 32<<10)
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < 2000; i++ {
		m := xmlstream.New(xmlstream.NSClient, "message", "from", "alice@localhost/a", "to", "bob@localhost/slow", "type", "chat")
		m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
		e.r.Route(ctx, m)
	}
	if d := time.Since(start); d > 10*time.Second { // blocking would mean forever
		t.Fatalf("routing 2000 stanzas to a stuck client took %v", d)
	}
	waitFor(t, "the stuck client to be disconnected", func() bool { return e.r.Session(jid.MustParse("bob@localhost/slow")) == nil })
}

// Storage unavailable during in-band registration: a wait error, the stream lives on.
func TestRegistrationStorageUnavailable(t *testing.T) {
	e := start(t, nil)
	c := testenv.Dial(t, e.addr)
	c.StartTLS("localhost")
	e.store.SetFail(storage.ErrUnavailable)
	c.Send("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>carol</username><password>p</password></query></iq>")
	got := c.Expect("</iq>", 5*time.Second)
	if !strings.Contains(got, "type='wait'") || !strings.Contains(got, "<resource-constraint") {
		t.Fatalf("got %s", got)
	}
	e.store.SetFail(nil)
	c.Send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>carol</username><password>p</password></query></iq>")
	if got := c.Expect("id='r2'", 5*time.Second); !strings.Contains(got, "type='result'") {
		t.Fatalf("got %s", got)
	}
}

// TLS below 1.2 is refused; a PLAIN authzid other than the user's own is refused.
func TestTLSMinimumAndAuthzid(t *testing.T) {
	e := start(t, nil)
	c := testenv.Dial(t, e.addr)
	c.Open("localhost")
	c.Send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	c.Expect("<proceed", 5*time.Second)
	tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err == nil {
		t.Fatal("TLS 1.1 handshake accepted")
	}

	c = testenv.Dial(t, e.addr)
	c.StartTLS("localhost")
	for _, tc := range []struct{ authz, want string }{
		{"bob@localhost", "<invalid-authzid"},
		{"alice@other.example", "<invalid-authzid"},
		{"alice@localhost", "<success"},
	} {
		msg := base64.StdEncoding.EncodeToString([]byte(tc.authz + "\x00alice\x00secret"))
		c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + msg + "</auth>")
		if got := c.Expect(">", 5*time.Second); !strings.Contains(got, tc.want) {
			got += c.Expect(">", 5*time.Second)
			if !strings.Contains(got, tc.want) {
				t.Fatalf("authzid %s: %s", tc.authz, got)
			}
		}
		if tc.want != "<success" {
			c.Expect("</failure>", 5*time.Second)
		}
	}
}

// Many clients exchanging messages while some drop abruptly and some use SM: run
// with -race to check the session/router locking.
func TestConcurrentTraffic(t *testing.T) {
	e := start(t, func(c *Config) { c.SMTimeout = 200 * time.Millisecond })
	const n = 8
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if err := e.srv.accounts.Create(ctx, "u"+strconv.Itoa(i), "secret"); err != nil {
			t.Fatal(err)
		}
	}
	clients := make([]*testenv.Raw, n)
	for i := range clients {
		clients[i] = e.login(t, "u"+strconv.Itoa(i), "r")
		if i%2 == 0 {
			clients[i].Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
		}
		clients[i].Send("<presence/>")
	}
	waitFor(t, "all bound", func() bool { return e.r.Count() == n })
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(2)
		go func() { // reader: drain until closed
			defer wg.Done()
			c.ReadAll(3 * time.Second)
		}()
		go func() {
			defer wg.Done()
			for k := 0; k < 50; k++ {
				to := "u" + strconv.Itoa((i+k)%n) + "@localhost"
				if c.TrySend("<message type='chat' to='"+to+"'><body>m</body></message><r xmlns='urn:xmpp:sm:3'/>") != nil {
					return
				}
				if i%3 == 0 && k == 25 {
					c.Drop()
					return
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "every session gone", func() bool {
		for _, c := range clients {
			c.Drop()
		}
		return e.r.Count() == 0
	})
}

func TestRegistrationDisabled(t *testing.T) {
	e := start(t, func(c *Config) { c.AllowRegistration = false })
	c := testenv.Dial(t, e.addr)
	if f := c.StartTLS("localhost"); strings.Contains(f, "iq-register") {
		t.Fatalf("register feature offered: %s", f)
	}
	c.Send("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>carol</username><password>p</password></query></iq>")
	if got := c.Expect("</iq>", 5*time.Second); !strings.Contains(got, "<service-unavailable") {
		t.Fatalf("got %s", got)
	}
	if ok, _ := e.srv.accounts.Exists(context.Background(), "carol"); ok {
		t.Fatal("account created with registration disabled")
	}
	c.AuthPlain("localhost", "alice", "secret") // the stream is still usable
}

// A stream error right after a stream restart comes with a fresh stream header.
func TestStreamErrorAfterRestart(t *testing.T) {
	e := start(t, nil)
	c := testenv.Dial(t, e.addr)
	c.Open("localhost")
	c.Send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	c.Expect("<proceed", 5*time.Second)
	tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.Conn = tc
	c.Send("<!DOCTYPE x><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
	got := c.Expect("</stream:stream>", 5*time.Second)
	if !strings.Contains(got, "<?xml version") || !strings.Contains(got, "<stream:stream") || !strings.Contains(got, "<restricted-xml") {
		t.Fatalf("got %s", got)
	}
}

// registration-limit: in-band registrations per source address are bounded.
func TestRegistrationLimit(t *testing.T) {
	e := start(t, func(c *Config) { c.RegLimit = 2; c.RegWindow = time.Hour })
	c := testenv.Dial(t, e.addr)
	c.StartTLS("localhost")
	for i, want := range []string{"type='result'", "type='result'", "<resource-constraint"} {
		id := "r" + strconv.Itoa(i)
		c.Send("<iq type='set' id='" + id + "'><query xmlns='jabber:iq:register'><username>new" + strconv.Itoa(i) + "</username><password>p</password></query></iq>")
		got := c.Expect("id='"+id+"'", 5*time.Second)
		if want != "type='result'" {
			got = c.Expect("</iq>", 5*time.Second)
		}
		if !strings.Contains(got, want) {
			t.Fatalf("registration %d: want %s, got %s", i, want, got)
		}
	}
	o := testenv.DialFrom(t, "127.0.0.2", e.addr)
	o.StartTLS("localhost")
	o.Send("<iq type='set' id='x'><query xmlns='jabber:iq:register'><username>other</username><password>p</password></query></iq>")
	if got := o.Expect("id='x'", 5*time.Second); !strings.Contains(got, "type='result'") {
		t.Fatalf("another address: %s", got)
	}
}

// With plaintext allowed, SCRAM logs in without TLS (checked with mellium's SCRAM
// client over a raw stream); PLAIN and registration still need TLS.
func TestPlaintextAllowedSCRAMOnly(t *testing.T) {
	e := start(t, func(c *Config) { c.AllowPlaintext = true })
	c := testenv.Dial(t, e.addr)
	f := c.Open("localhost")
	if !strings.Contains(f, "SCRAM-SHA-256") || strings.Contains(f, "PLAIN") || strings.Contains(f, "<required") || strings.Contains(f, "iq-register") {
		t.Fatalf("plaintext features: %s", f)
	}
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")
	c.Expect("<encryption-required", 5*time.Second)
	c.Send("<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>x</username><password>y</password></query></iq>")
	if got := c.Expect("</iq>", 5*time.Second); !strings.Contains(got, "<policy-violation") {
		t.Fatalf("registration in plaintext: %s", got)
	}
	authSCRAM(t, c, sasl.ScramSha256, "alice", "secret")
	if jid := c.Bind("plain"); jid != "alice@localhost/plain" {
		t.Fatal(jid)
	}
}

// A client's stream error ends its session cleanly.
func TestClientStreamError(t *testing.T) {
	e := start(t, nil)
	c := e.login(t, "alice", "r")
	waitFor(t, "bound", func() bool { return e.r.Count() == 1 })
	c.Send("<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>")
	c.Expect("</stream:stream>", 5*time.Second)
	waitFor(t, "unbound", func() bool { return e.r.Count() == 0 })
}

// authSCRAM authenticates c with mellium's SCRAM client and reopens the stream.
func authSCRAM(tb testing.TB, c *testenv.Raw, m sasl.Mechanism, user, password string) {
	tb.Helper()
	cl := sasl.NewClient(m, sasl.Credentials(func() ([]byte, []byte, []byte) { return []byte(user), []byte(password), nil }))
	_, first, _ := cl.Step(nil)
	c.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='" + m.Name + "'>" + base64.StdEncoding.EncodeToString(first) + "</auth>")
	ch := c.Expect("</challenge>", 5*time.Second)
	ch = ch[strings.Index(ch, ">")+1 : strings.LastIndex(ch, "</challenge>")]
	sf, _ := base64.StdEncoding.DecodeString(ch)
	_, final, err := cl.Step(sf)
	if err != nil {
		tb.Fatal(err)
	}
	c.Send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.StdEncoding.EncodeToString(final) + "</response>")
	c.Expect("<success", 5*time.Second)
	c.Open("localhost")
}

// A panic while handling one client's stanza (here a hook) ends that stream only;
// odd payloads on the namespaces the core owns get errors, not crashes.
func TestPanicAndOddPayloadsEndOnlyThatStream(t *testing.T) {
	e := start(t, nil)
	e.r.Hook(module.EvC2SIn, 0, func(_ context.Context, _ module.Host, ev *module.EventData) bool {
		if ev.Stanza.ChildText("", "body") == "boom" {
			panic("test panic")
		}
		return false
	})
	other := e.login(t, "bob", "b")
	c := e.login(t, "alice", "a")
	for i, odd := range []string{
		"<iq type='set' id='o1'><foo xmlns='jabber:iq:register'/></iq>",
		"<iq type='get' id='o2'><query xmlns='jabber:iq:register'/></iq>",
		"<iq type='set' id='o3'><query xmlns='jabber:iq:register'/></iq>",
		"<iq type='set' id='o4'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>x</resource></bind></iq>",
		"<iq type='set' id='o5'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
		"<iq type='get' id='o6'/>",
		"<iq type='get' id='o7'><a xmlns='urn:x'/><b xmlns='urn:x'/></iq>",
		"<iq id='o8'><q xmlns='urn:x'/></iq>",
		"<iq type='get' id='o9' to='not a jid@@'><q xmlns='urn:x'/></iq>",
	} {
		c.Send(odd)
		id := "o" + strconv.Itoa(i+1)
		if got := c.Expect("id='"+id+"'", 5*time.Second); strings.Contains(got, "stream:error") {
			t.Fatalf("%s: %s", odd, got)
		}
	}
	c.Send("<message to='bob@localhost/b'><body>boom</body></message>")
	if got := c.Expect("</stream:stream>", 5*time.Second); !strings.Contains(got, "<internal-server-error") {
		t.Fatalf("after a panic: %s", got)
	}
	other.Send("<message to='bob@localhost/b'><body>still here</body></message>")
	other.Expect("still here", 5*time.Second)
	waitFor(t, "alice unbound", func() bool { return e.r.Count() == 1 })
}

//go:build integration

package server_test

import (
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

const sec = time.Second

// PLAIN (and any SASL) is refused before TLS; after STARTTLS it works.
func TestPlainOnlyAfterTLS(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	s.Register(t, "alice", "secret")
	r := testenv.Dial(t, s.Addr())
	f := r.Open(s.Domain)
	if !strings.Contains(f, "<starttls") || !strings.Contains(f, "<required") || strings.Contains(f, "PLAIN") {
		t.Fatalf("pre-TLS features: %s", f)
	}
	r.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>")
	r.Expect("<encryption-required", 5*sec)
	// The same stream can still do STARTTLS and then PLAIN.
	r.Send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	r.Expect("<proceed", 5*sec)

	r2 := testenv.Dial(t, s.Addr())
	f = r2.StartTLS(s.Domain)
	for _, m := range []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "jabber.org/features/iq-register", "<c xmlns='http://jabber.org/protocol/caps'"} {
		if !strings.Contains(f, m) {
			t.Errorf("post-TLS features lack %s: %s", m, f)
		}
	}
	full := r2.LoginPlain(s.Domain, "alice", "secret", "")
	if !strings.HasPrefix(full, "alice@localhost/") || len(full) <= len("alice@localhost/") {
		t.Fatalf("server-assigned resource: %q", full)
	}
}

// Server-assigned and client-chosen resources; binding an existing full JID replaces
// the older session with a <conflict/> stream error.
func TestBindAndConflict(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	s.Register(t, "alice", "secret")
	old := testenv.DialTLS(t, s)
	if got := old.LoginPlain(s.Domain, "alice", "secret", "desk"); got != "alice@localhost/desk" {
		t.Fatalf("chosen resource: %q", got)
	}
	out := s.RunPython(t, 30*sec, `
import xmpptest as X
async def main():
    c = X.client(X.jid("alice", "desk"), "secret")
    await X.start(c)
    print("BOUND", c.boundjid.full)
    await X.stop(c)
X.run(main)
`)
	if !strings.Contains(out, "BOUND alice@localhost/desk") {
		t.Fatal(out)
	}
	got := old.Expect("</stream:stream>", 5*sec)
	if !strings.Contains(got, "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'") {
		t.Fatalf("old session did not get <conflict/>: %s", got)
	}
	if !old.Closed(5 * sec) {
		t.Fatal("old connection not closed")
	}
}

// Stream errors as RFC 6120 §4.9 defines them: header first if needed, the
// condition, </stream:stream>, close.
func TestStreamErrors(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	cases := []struct{ name, send, cond string }{
		{"host-unknown", "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='other.example' version='1.0'>", "host-unknown"},
		{"invalid-namespace", "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>", "invalid-namespace"},
		{"unsupported-version", "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='2.0'>", "unsupported-version"},
		{"not-well-formed", "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><a></b>", "not-well-formed"},
		{"not-authorized", "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><message to='a@localhost'/>", "not-authorized"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := testenv.Dial(t, s.Addr())
			r.Send(c.send)
			got := r.Expect("</stream:stream>", 5*sec)
			if !strings.Contains(got, "<stream:stream") || !strings.Contains(got, "<stream:error><"+c.cond+" xmlns='urn:ietf:params:xml:ns:xmpp-streams'") {
				t.Fatalf("got %s", got)
			}
			if !r.Closed(5 * sec) {
				t.Fatal("not closed")
			}
		})
	}
	// After TLS and authentication, an unknown top-level element.
	r := testenv.DialTLS(t, s)
	s.Register(t, "u", "p")
	r.LoginPlain(s.Domain, "u", "p", "r")
	r.Send("<foo xmlns='urn:example'/>")
	if got := r.Expect("</stream:stream>", 5*sec); !strings.Contains(got, "<unsupported-stanza-type") {
		t.Fatal(got)
	}
}

// Whitespace keepalives are sent on idle streams; a silent client is disconnected
// with <connection-timeout/> while one sending keepalives stays.
func TestKeepaliveAndIdleTimeout(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Args: []string{"--keepalive", "500ms", "--idle-timeout", "2s"}})
	s.Register(t, "alice", "secret", "bob", "secret")
	silent := testenv.DialTLS(t, s)
	silent.LoginPlain(s.Domain, "alice", "secret", "r")
	busy := testenv.DialTLS(t, s)
	busy.LoginPlain(s.Domain, "bob", "secret", "r")
	start := time.Now()
	if got := silent.Expect(" ", 2*sec); got != " " {
		t.Fatalf("expected a whitespace keepalive, got %q", got)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 8; i++ {
			time.Sleep(400 * time.Millisecond)
			if busy.TrySend(" ") != nil {
				return
			}
		}
	}()
	got := silent.Expect("</stream:stream>", 5*sec)
	if !strings.Contains(got, "<connection-timeout") {
		t.Fatalf("silent client: %s", got)
	}
	if el := time.Since(start); el < 1500*time.Millisecond || el > 8*sec {
		t.Fatalf("idle timeout after %v, want ~2s", el)
	}
	<-done
	// bob sent keepalives for 3.2 s > idle timeout and must still be connected.
	busy.Send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
	if got := busy.Expect("id='p1'", 5*sec); strings.Contains(got, "stream:error") {
		t.Fatalf("busy client lost: %s", got)
	}
	// slixmpp with its own whitespace keepalive also survives.
	out := s.RunPython(t, 30*sec, `
import asyncio, xmpptest as X
async def main():
    c = X.client(X.jid("alice", "py"), "secret")
    c.whitespace_keepalive_interval = 0.5
    await X.start(c)
    await asyncio.sleep(3.5)
    r = await c["xep_0199"].ping(jid=X.DOMAIN, timeout=5) if "xep_0199" in c.plugin else None
    print("ALIVE", c.is_connected())
    await X.stop(c)
X.run(main)
`)
	if !strings.Contains(out, "ALIVE True") {
		t.Fatal(out)
	}
}

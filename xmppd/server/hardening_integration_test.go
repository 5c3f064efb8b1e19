//go:build integration

package server_test

import (
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// watcher is a logged-in client that proves the server still serves others.
func ping(t *testing.T, r *testenv.Raw, id string, within time.Duration) {
	t.Helper()
	start := time.Now()
	r.Send("<iq type='get' id='" + id + "' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
	got := r.Expect("id='"+id+"'", within)
	if strings.Contains(got, "stream:error") {
		t.Fatalf("watcher lost its stream: %s", got)
	}
	if d := time.Since(start); d > within {
		t.Fatalf("ping took %v", d)
	}
}

func expectStreamError(t *testing.T, r *testenv.Raw, cond string) {
	t.Helper()
	got := r.Expect("</stream:stream>", 5*sec)
	if !strings.Contains(got, "<stream:error><"+cond+" ") {
		t.Fatalf("want <%s/>, got %s", cond, got)
	}
	if !r.Closed(5 * sec) {
		t.Fatal("connection not closed after the stream error")
	}
}

// RFC 6120 §11.1 restrictions, the stanza size and nesting limits: each attack ends
// only the attacker's stream; a logged-in client keeps being served throughout, and a
// new slixmpp client logs in afterwards.
func TestHardeningXMLLimits(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Args: []string{"--max-stanza", "8192", "--max-depth", "16"}})
	s.Register(t, "alice", "secret", "mallory", "secret")
	w := testenv.DialTLS(t, s)
	w.LoginPlain(s.Domain, "alice", "secret", "watch")
	hdr := "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"

	t.Run("doctype", func(t *testing.T) {
		r := testenv.Dial(t, s.Addr())
		r.Send("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY lol 'lol'>]>" + hdr)
		expectStreamError(t, r, "restricted-xml")
		ping(t, w, "p-doctype", 5*sec)
	})
	t.Run("entity-in-stream", func(t *testing.T) {
		r := testenv.Dial(t, s.Addr())
		r.Open(s.Domain)
		r.Send("<!ENTITY lol 'lol'>")
		got := r.Expect("</stream:stream>", 5*sec)
		if !strings.Contains(got, "<restricted-xml ") && !strings.Contains(got, "<not-well-formed ") {
			t.Fatal(got)
		}
		ping(t, w, "p-entity", 5*sec)
	})
	t.Run("oversize-stanza", func(t *testing.T) {
		r := testenv.DialTLS(t, s)
		r.LoginPlain(s.Domain, "mallory", "secret", "m")
		r.Send("<message to='alice@localhost/watch'><body>" + strings.Repeat("A", 20000) + "</body></message>")
		expectStreamError(t, r, "policy-violation")
		ping(t, w, "p-size", 5*sec)
	})
	t.Run("oversize-before-auth", func(t *testing.T) {
		r := testenv.Dial(t, s.Addr())
		r.Open(s.Domain)
		r.TrySend("<x>" + strings.Repeat("B", 20000) + "</x>")
		expectStreamError(t, r, "policy-violation")
	})
	t.Run("deep-nesting", func(t *testing.T) {
		r := testenv.DialTLS(t, s)
		r.LoginPlain(s.Domain, "mallory", "secret", "m2")
		r.Send("<message to='alice@localhost/watch'>" + strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40) + "</message>")
		expectStreamError(t, r, "policy-violation")
		ping(t, w, "p-depth", 5*sec)
	})
	out := s.RunPython(t, 30*sec, `
import xmpptest as X
async def main():
    c = X.client(X.jid("alice", "after"), "secret")
    await X.start(c)
    print("STILL-SERVING", c.boundjid.full)
    await X.stop(c)
X.run(main)
`)
	if !strings.Contains(out, "STILL-SERVING alice@localhost/after") {
		t.Fatal(out)
	}
}

// c2s_shaper: a client flooding the server is read at the configured rate, while
// another client is served at once.
func TestHardeningShaper(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Config: "c2s_shaper: 16384\n"})
	s.Register(t, "alice", "secret", "mallory", "secret")
	w := testenv.DialTLS(t, s)
	w.LoginPlain(s.Domain, "alice", "secret", "watch")
	m := testenv.DialTLS(t, s)
	m.LoginPlain(s.Domain, "mallory", "secret", "flood")
	start := time.Now()
	flooded := make(chan time.Duration, 1)
	go func() {
		// 80 KiB of whitespace keepalives then a ping: at 16 KiB/s (16 KiB burst) the
		// ping can be read no earlier than ~4 s later.
		m.TrySend(strings.Repeat(" ", 80<<10) + "<iq type='get' id='flood' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
		flooded <- time.Since(start)
	}()
	time.Sleep(500 * time.Millisecond)
	ping(t, w, "w1", 3*sec) // the flood itself takes >= 4 s
	m.Expect("id='flood'", 20*sec)
	took := time.Since(start)
	if took < 3*sec {
		t.Fatalf("flood of 80 KiB read in %v; shaper at 16 KiB/s should take >= 4 s", took)
	}
	t.Logf("flood read in %v", took)
	ping(t, w, "w2", 3*sec)
}

// Failed-authentication throttling per source IP: after auth-fail-max failures the
// address gets <temporary-auth-failure/> even with the right password, other
// addresses are unaffected, and the block lifts after auth-fail-time.
func TestHardeningAuthThrottle(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Args: []string{"--auth-fail-max", "3", "--auth-fail-time", "3s"}})
	s.Register(t, "alice", "secret")
	r := testenv.DialTLS(t, s)
	bad := "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>"      // alice/wrong
	good := "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>" // alice/secret
	for i := 0; i < 3; i++ {
		r.Send(bad)
		if got := r.Expect("</failure>", 5*sec); !strings.Contains(got, "<not-authorized") {
			t.Fatalf("attempt %d: %s", i, got)
		}
	}
	r.Send(good)
	if got := r.Expect("</failure>", 5*sec); !strings.Contains(got, "<temporary-auth-failure") {
		t.Fatalf("throttled attempt: %s", got)
	}
	// Another source address logs in normally.
	o := testenv.DialFrom(t, "127.0.0.2", s.Addr())
	o.StartTLS(s.Domain)
	o.LoginPlain(s.Domain, "alice", "secret", "other")
	// The block is per IP and lifts after auth-fail-time.
	time.Sleep(3500 * time.Millisecond)
	r2 := testenv.DialTLS(t, s)
	r2.LoginPlain(s.Domain, "alice", "secret", "later")
	if n := strings.Count(s.Logs(), "too many failed authentications"); n != 1 {
		t.Fatalf("throttle logged %d times, want once", n)
	}
}

//go:build integration

package server_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// capScript: three slixmpp sessions from 127.0.0.1 log in; a fourth connection
// from it gets the stream error <policy-violation/>; the three still work.
const capScript = `
import asyncio, xmpptest as X

async def main():
    cs = []
    for u in ('alice', 'bob', 'carol'):
        cs.append(await X.start(X.client(X.jid(u, 'r'), 'pw')))
    d = X.client(X.jid('alice', 'r4'), 'pw')
    err = X.event(d, 'stream_error')
    d.connect((X.HOST, X.PORT))
    e = await asyncio.wait_for(err, 15)
    assert e['condition'] == 'policy-violation', e
    print('REFUSED', e['condition'], e['text'])
    got = X.event(cs[1], 'message')
    cs[0].send_message(mto=X.jid('bob'), mbody='still here', mtype='chat')
    m = await asyncio.wait_for(got, 10)
    assert m['body'] == 'still here', m
    for c in cs:
        await X.stop(c)

X.run(main)
`

// Per-IP connection caps and shapers per listener on a real xmppd: the cap
// refuses a slixmpp client's fourth connection with <policy-violation/> (one
// log line), leaves an exempt address alone; the c2s listener's shaper "slow"
// (1000 B/s) holds back a large stanza while a message sent after it through the
// unshaped direct TLS listener overtakes it.
func TestConnCapsPerIPAndListenerShapers(t *testing.T) {
	testenv.NeedSlixmpp(t)
	s := testenv.Start(t, testenv.Options{Args: []string{
		"--max-connections-per-ip", "3", "--max-connections-per-ip-exempt", "127.0.0.2",
		"--shapers", "slow=1000,fast=10000000", "--c2s-listener-shaper", "slow", "--c2s-tls-listener-shaper", "none"}})
	s.Register(t, "alice", "pw", "bob", "pw", "carol", "pw")
	out := s.RunPython(t, 60*time.Second, capScript)
	if !strings.Contains(out, "REFUSED policy-violation too many connections") {
		t.Fatalf("slixmpp: %s", out)
	}
	if n := strings.Count(s.Logs(), "per-IP connection cap reached"); n != 1 {
		t.Fatalf("cap logged %d times:\n%s", n, s.Logs())
	}
	if !strings.Contains(s.Logs(), `listener shaper`) {
		t.Fatalf("no listener shaper in the log:\n%s", s.Logs())
	}
	// The exempt address holds more than 3.
	for i := 0; i < 4; i++ {
		c := testenv.DialFrom(t, "127.0.0.2", s.Addr())
		if f := c.Open("localhost"); !strings.Contains(f, "starttls") {
			t.Fatalf("exempt connection %d: %s", i, f)
		}
	}
	// Shapers: carol and bob on the unshaped direct TLS listener, alice on the
	// shaped c2s listener.
	direct := func(user string) *testenv.Raw {
		r := testenv.DialFrom(t, "127.0.0.2", s.TLSAddr())
		tc := tls.Client(r.Conn, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		r.Conn = tc
		r.Open("localhost")
		r.AuthPlain("localhost", user, "pw")
		r.Bind("r")
		return r
	}
	carol, bob := direct("carol"), direct("bob")
	carol.Send("<presence/>")
	alice := testenv.DialFrom(t, "127.0.0.2", s.Addr())
	alice.StartTLS("localhost")
	alice.LoginPlain("localhost", "alice", "pw", "r") // under the 4096-byte burst
	big := strings.Repeat("x", 12000)
	alice.Send("<message to='carol@localhost' type='chat' id='big'><body>" + big + "</body></message>")
	bob.Send("<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>")
	bob.Expect("id='ping1'", 5*time.Second) // bob's stanzas are read after alice's was sent
	bob.Send("<message to='carol@localhost' type='chat' id='small'><body>small</body></message>")
	got := carol.Expect("id='small'", 10*time.Second)
	if strings.Contains(got, "id='big'") {
		t.Fatalf("the shaped listener's 12 kB stanza arrived before the unshaped one's: %.300s", got)
	}
	carol.Expect("id='big'", 30*time.Second)
	if got := carol.Expect("</message>", 30*time.Second); !strings.Contains(got, big) {
		t.Fatal("the shaped stanza did not arrive whole")
	}
}

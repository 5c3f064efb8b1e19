//go:build integration

package server_test

import (
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// RFC 6121 §8: a message to the bare JID goes to the highest non-negative priority
// resource; a negative-priority resource never gets bare-JID messages but does get
// messages to its full JID. Stanzas to a non-existent local account are answered
// with <service-unavailable/>.
func TestDeliveryRulesAndUnknownUser(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	s.Register(t, "alice", "secret", "bob", "secret")
	out := s.RunPython(t, 60*time.Second, `
import asyncio, xmpptest as X
async def main():
    a = X.client(X.jid("alice", "a"), "secret")
    hi = X.client(X.jid("bob", "hi"), "secret")
    lo = X.client(X.jid("bob", "lo"), "secret")
    neg = X.client(X.jid("bob", "neg"), "secret")
    got = {"hi": [], "lo": [], "neg": []}
    for name, c in (("hi", hi), ("lo", lo), ("neg", neg)):
        c.add_event_handler("message", lambda m, name=name: got[name].append(m["body"]))
    await X.start(a)
    await X.start(hi, priority=5); await X.start(lo, priority=1); await X.start(neg, priority=-1)
    await asyncio.sleep(0.5)
    a.send_message(mto=X.jid("bob"), mbody="to-bare", mtype="chat")
    a.send_message(mto=X.jid("bob", "neg"), mbody="to-neg", mtype="chat")
    a.send_message(mto=X.jid("bob", "lo"), mbody="to-lo", mtype="chat")
    await asyncio.sleep(1)
    print("GOT", sorted(got["hi"]), sorted(got["lo"]), sorted(got["neg"]))
    # unknown user: message and IQ bounce with service-unavailable
    err = X.event(a, "message_error")
    a.send_message(mto="nobody@" + X.DOMAIN, mbody="anyone?", mtype="chat")
    e = await asyncio.wait_for(err, 10)
    print("MSG-ERR", e["error"]["condition"], e["error"]["type"])
    try:
        await a["xep_0030"].get_info(jid="nobody@" + X.DOMAIN, timeout=10) if "xep_0030" in a.plugin else None
        iq = a.make_iq_get(queryxmlns="jabber:iq:version", ito="nobody@" + X.DOMAIN)
        await iq.send(timeout=10)
        print("IQ-ERR none")
    except Exception as ex:
        print("IQ-ERR", ex.iq["error"]["condition"])
    # unknown namespace to the server
    try:
        iq = a.make_iq_get(queryxmlns="urn:example:nothing", ito=X.DOMAIN)
        await iq.send(timeout=10)
    except Exception as ex:
        print("NS-ERR", ex.iq["error"]["condition"])
    for c in (a, hi, lo, neg): await X.stop(c)
X.run(main)
`)
	for _, want := range []string{"GOT ['to-bare'] ['to-lo'] ['to-neg']", "MSG-ERR service-unavailable cancel", "IQ-ERR service-unavailable", "NS-ERR service-unavailable", "PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

// XEP-0077: in-band registration on a raw stream before authentication (slixmpp holds
// its registration back until login), then password change and account removal
// after authentication with slixmpp.
func TestInBandRegistrationAndPasswordChange(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	r := testenv.DialTLS(t, s)
	r.Send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>")
	if got := r.Expect("</iq>", 5*sec); !strings.Contains(got, "<username") || !strings.Contains(got, "<password") {
		t.Fatalf("register form: %s", got)
	}
	r.Send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>carol</username><password>first</password></query></iq>")
	if got := r.Expect("id='r2'", 5*sec); !strings.Contains(got, "type='result'") {
		t.Fatalf("register: %s", got)
	}
	r.Send("<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>carol</username><password>again</password></query></iq>")
	if got := r.Expect("</iq>", 5*sec); !strings.Contains(got, "<conflict") {
		t.Fatalf("duplicate registration: %s", got)
	}
	out := s.RunPython(t, 60*time.Second, `
import asyncio, xmpptest as X
from slixmpp.exceptions import IqError
async def main():
    c = X.client(X.jid("carol", "x"), "first")
    await X.start(c)
    print("LOGIN-1 ok")
    iq = c.make_iq_set(ito=X.DOMAIN)
    q = iq.xml.makeelement("{jabber:iq:register}query", {})
    for k, v in (("username", "carol"), ("password", "second")):
        e = q.makeelement("{jabber:iq:register}" + k, {}); e.text = v; q.append(e)
    iq.xml.append(q)
    await iq.send(timeout=10)
    print("PASSWD ok")
    await X.stop(c)
    old = X.client(X.jid("carol", "y"), "first")
    try:
        await X.start(old, timeout=8)
        print("OLD-PASSWORD accepted")
    except Exception as e:
        print("OLD-PASSWORD refused")
    old.disconnect()
    n = X.client(X.jid("carol", "z"), "second")
    await X.start(n)
    print("LOGIN-2 ok")
    await X.stop(n)
X.run(main)
`)
	for _, want := range []string{"LOGIN-1 ok", "PASSWD ok", "OLD-PASSWORD refused", "LOGIN-2 ok", "PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// Account removal (XEP-0077 §3.2) on a raw authenticated stream.
	r2 := testenv.DialTLS(t, s)
	r2.LoginPlain(s.Domain, "carol", "second", "rm")
	r2.Send("<iq type='set' id='rm1'><query xmlns='jabber:iq:register'><remove/></query></iq>")
	got := r2.Expect("</stream:stream>", 5*sec)
	if !strings.Contains(got, "id='rm1'") || !strings.Contains(got, "type='result'") {
		t.Fatalf("remove: %s", got)
	}
	if o, _, _ := s.Ctl("users"); strings.Contains(o, "carol") {
		t.Fatalf("carol still listed: %s", o)
	}
}

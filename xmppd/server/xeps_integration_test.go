//go:build integration

package server_test

import (
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// XEP-0198: after the TCP connection drops, the client resumes the session with
// previd; stanzas it had not acknowledged and those that arrived while it was away
// are resent. A session not resumed within sm-timeout ends, and its unacknowledged
// messages go to offline storage.
func TestStreamManagementResume(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Args: []string{"--sm-timeout", "3s"}})
	s.Register(t, "alice", "secret", "bob", "secret")
	alice := testenv.DialTLS(t, s)
	alice.LoginPlain(s.Domain, "alice", "secret", "a")

	bob := testenv.DialTLS(t, s)
	f := bob.AuthPlain(s.Domain, "bob", "secret")
	if !strings.Contains(f, "<sm xmlns='urn:xmpp:sm:3'") {
		t.Fatalf("no sm feature: %s", f)
	}
	bob.Bind("r")
	bob.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>")
	en := bob.Expect("/>", 5*sec)
	id := testenv.Attr(en, "id")
	if !strings.Contains(en, "<enabled") || id == "" || testenv.Attr(en, "resume") != "true" {
		t.Fatalf("enable: %s", en)
	}
	// <r/> is answered with the count of stanzas the server handled (the presence).
	bob.Send("<r xmlns='urn:xmpp:sm:3'/>")
	bob.Expect("<a xmlns='urn:xmpp:sm:3' h='1'/>", 5*sec)
	alice.Send("<message to='bob@localhost/r' type='chat' id='m1'><body>one</body></message>")
	bob.Expect("<body>one</body>", 5*sec)
	bob.Drop() // no ack for m1
	alice.Send("<message to='bob@localhost/r' type='chat' id='m2'><body>two</body></message>")
	// Once alice's ping is answered, m2 is in bob's session (whether or not the
	// server has noticed the drop yet: then it is unacknowledged on the dead stream).
	roundTrip(alice, "p1")

	bob2 := testenv.DialTLS(t, s)
	bob2.AuthPlain(s.Domain, "bob", "secret")
	bob2.Send("<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='0'/>")
	got := bob2.Expect("<body>two</body>", 5*sec)
	if !strings.Contains(got, "<resumed") || testenv.Attr(got, "h") != "1" || !strings.Contains(got, "<body>one</body>") || strings.Index(got, "one") > strings.Index(got, "two") {
		t.Fatalf("resume: %s", got)
	}
	// The resumed session is the same full JID and keeps working.
	alice.Send("<message to='bob@localhost/r' type='chat' id='m3'><body>three</body></message>")
	bob2.Expect("<body>three</body>", 5*sec)
	// Acknowledge everything (self-presence, one, two, three), then drop and let the resumption window pass with one
	// unacknowledged message: it must reach offline storage and be delivered at the
	// next login.
	// bob2's <r/> is answered after its <a/> was handled (one stanza in: the presence).
	bob2.Send("<a xmlns='urn:xmpp:sm:3' h='4'/><r xmlns='urn:xmpp:sm:3'/>")
	bob2.Expect("<a xmlns='urn:xmpp:sm:3' h='1'/>", 5*sec)
	bob2.Drop()
	alice.Send("<message to='bob@localhost' type='chat' id='m4'><body>four</body></message>")
	roundTrip(alice, "p2")
	// The session waits sm-timeout (3 s) for resumption, then ends: poll the
	// server's session list (bounded) instead of sleeping.
	for i := 0; ; i++ {
		out, _, code := s.Ctl("sessions")
		if code == 0 && !strings.Contains(out, "bob@localhost/r") {
			break
		}
		if i == 300 {
			t.Fatalf("session not ended 30 s after its connection dropped (sm-timeout 3 s):\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	bob3 := testenv.Dial(t, s.Addr())
	bob3.StartTLS(s.Domain)
	bob3.AuthPlain(s.Domain, "bob", "secret")
	bob3.Send("<resume xmlns='urn:xmpp:sm:3' previd='" + id + "' h='4'/>")
	if got := bob3.Expect("</failed>", 5*sec); !strings.Contains(got, "<item-not-found") {
		t.Fatalf("expired session resumed: %s", got)
	}
	bob3.Send("<iq type='set' id='b3'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq><presence/>")
	got = bob3.Expect("<body>four</body>", 5*sec)
	if strings.Contains(got, "<body>one</body>") || strings.Contains(got, "<body>three</body>") {
		t.Fatalf("acknowledged stanzas came back: %s", got)
	}

	// slixmpp's own XEP-0198 support negotiates with the server.
	out := s.RunPython(t, 30*sec, `
import asyncio, xmpptest as X
async def main():
    c = X.client(X.jid("alice", "sm"), "secret", plugins=["xep_0198"])
    en = X.event(c, "sm_enabled")
    await X.start(c)
    await asyncio.wait_for(en, 10)
    print("SM-ID", bool(c["xep_0198"].sm_id))
    await X.stop(c)
X.run(main)
`)
	if !strings.Contains(out, "SM-ID True") {
		t.Fatal(out)
	}
}

// XEP-0352: while inactive, presence and chat states are held back (a newer
// presence from the same sender replaces an older one); a message with a body or
// a receipt goes out at once after what was held; <active/> flushes.
func TestClientStateIndication(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	s.Register(t, "alice", "secret", "bob", "secret")
	alice := testenv.DialTLS(t, s)
	alice.LoginPlain(s.Domain, "alice", "secret", "a")
	bob := testenv.DialTLS(t, s)
	f := bob.AuthPlain(s.Domain, "bob", "secret")
	if !strings.Contains(f, "<csi xmlns='urn:xmpp:csi:0'") {
		t.Fatalf("no csi feature: %s", f)
	}
	bob.Bind("r")
	bob.Send("<presence/><inactive xmlns='urn:xmpp:csi:0'/>")
	roundTrip(bob, "csi1")                      // presence and <inactive/> handled
	bob.ReadUntil("\x00", 300*time.Millisecond) // discard anything before
	alice.Send("<presence to='bob@localhost/r'><status>first</status></presence>")
	alice.Send("<presence to='bob@localhost/r'><status>second</status></presence>")
	alice.Send("<message to='bob@localhost/r' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
	if got, err := bob.ReadUntil("<", 1500*time.Millisecond); err == nil {
		t.Fatalf("inactive client got a non-urgent stanza: %q", got)
	}
	alice.Send("<message to='bob@localhost/r' type='chat'><body>urgent</body></message>")
	got := bob.Expect("<body>urgent</body>", 5*sec)
	if strings.Contains(got, "first") || !strings.Contains(got, "second") || !strings.Contains(got, "composing") {
		t.Fatalf("held stanzas before the urgent one: %s", got)
	}
	alice.Send("<presence to='bob@localhost/r'><status>third</status></presence>")
	if got, err := bob.ReadUntil("third", time.Second); err == nil {
		t.Fatalf("held presence delivered while inactive: %q", got)
	}
	// A delivery receipt has no body, and goes out at once all the same (as
	// ejabberd's mod_client_state sends it), after what was held.
	alice.Send("<message to='bob@localhost/r'><received xmlns='urn:xmpp:receipts' id='r1'/></message>")
	if got := bob.Expect("urn:xmpp:receipts", 5*sec); !strings.Contains(got, "third") {
		t.Fatalf("held presence not sent before the receipt: %s", got)
	}
	alice.Send("<presence to='bob@localhost/r'><status>fourth</status></presence>")
	if got, err := bob.ReadUntil("fourth", time.Second); err == nil {
		t.Fatalf("held presence delivered while inactive: %q", got)
	}
	bob.Send("<active xmlns='urn:xmpp:csi:0'/>")
	bob.Expect("fourth", 5*sec)
}

// XEP-0115: the stream features carry the server's caps, and the ver string matches
// what slixmpp computes from the server's disco#info (identity + module features).
func TestCapsInStreamFeatures(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	s.Register(t, "alice", "secret")
	r := testenv.Dial(t, s.Addr())
	f := r.StartTLS(s.Domain)
	ver := testenv.Attr(f[strings.Index(f, "<c xmlns='http://jabber.org/protocol/caps'"):], "ver")
	if ver == "" {
		t.Fatalf("no caps ver: %s", f)
	}
	out := s.RunPython(t, 30*sec, `
import asyncio, sys, xmpptest as X
async def main():
    c = X.client(X.jid("alice", "caps"), "secret", plugins=["xep_0030", "xep_0115"])
    await X.start(c)
    info = await c["xep_0030"].get_info(jid=X.DOMAIN, timeout=10)
    print("FEATURES", sorted(info["disco_info"]["features"]))
    print("VER", c["xep_0115"].generate_verstring(info["disco_info"], "sha-1"))
    await X.stop(c)
X.run(main)
`)
	if !strings.Contains(out, "VER "+ver+"\n") {
		t.Fatalf("stream features ver %s does not match disco#info:\n%s", ver, out)
	}
}

// XEP-0198 with a real client: slixmpp loses its TCP connection, reconnects and
// resumes; the message sent while it was away arrives on the resumed session.
// (slixmpp 1.8.3 clears its unacked queue when it sends <resume/> and then logs
// "Inconsistent sequence numbers" for the server's correct h; harmless.)
func TestStreamManagementResumeSlixmpp(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	s.Register(t, "alice", "secret", "bob", "secret")
	out := s.RunPython(t, 60*sec, `
import asyncio, xmpptest as X
async def until(cond, t=10):
    for _ in range(int(t*20)):
        if cond(): return
        await asyncio.sleep(0.05)
    raise RuntimeError("timeout")
async def main():
    a = X.client(X.jid("alice", "a"), "secret", plugins=["xep_0199"])
    b = X.client(X.jid("bob", "r"), "secret", plugins=["xep_0198"])
    msgs = []
    b.add_event_handler("message", lambda m: msgs.append(m["body"]))
    en = X.event(b, "sm_enabled")
    await X.start(a); await X.start(b)
    await asyncio.wait_for(en, 10)
    a.send_message(mto=X.jid("bob", "r"), mbody="one", mtype="chat")
    await until(lambda: "one" in msgs)
    gone = X.event(b, "disconnected")
    b.transport.abort()
    await asyncio.wait_for(gone, 10)
    a.send_message(mto=X.jid("bob", "r"), mbody="two", mtype="chat")
    await a["xep_0199"].ping(jid=X.DOMAIN, timeout=10)  # "two" is in bob's session now
    resumed = X.event(b, "session_resumed")
    b.connect((X.HOST, X.PORT))
    await asyncio.wait_for(resumed, 10)
    await until(lambda: "two" in msgs)
    print("RESUMED", b.boundjid.full, msgs)
    await X.stop(a); await X.stop(b)
X.run(main)
`)
	if !strings.Contains(out, "RESUMED bob@localhost/r ['one', 'two']") {
		t.Fatal(out)
	}
}

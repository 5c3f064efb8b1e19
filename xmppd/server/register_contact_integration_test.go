//go:build integration

package server_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// In-band registration per listener (register: loopback, the default): the
// STARTTLS listener bound to the wildcard address (it serves the network) neither
// offers registration nor performs it (<not-allowed/>); the direct-TLS listener
// bound to 127.0.0.1 does. Every connection of the test goes to 127.0.0.1.
func TestRegistrationPolicyPerListener(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Args: []string{"--c2s", "0.0.0.0:0"}})
	if l := s.Logs(); !strings.Contains(l, "(STARTTLS):        0.0.0.0:") && !strings.Contains(l, "(STARTTLS):        [::]:") {
		t.Fatalf("the STARTTLS listener is not on the wildcard address:\n%s", s.Logs())
	}
	wild := testenv.Dial(t, s.Addr())
	if f := wild.StartTLS(s.Domain); strings.Contains(f, "iq-register") {
		t.Fatalf("registration offered on a wildcard listener: %s", f)
	}
	wild.Send("<iq type='set' id='w1'><query xmlns='jabber:iq:register'><username>mallory</username><password>pw</password></query></iq>")
	if got := wild.Expect("</iq>", 10*time.Second); !strings.Contains(got, "<not-allowed") {
		t.Fatalf("registration on a wildcard listener: %s", got)
	}

	lo := testenv.Dial(t, s.TLSAddr())
	tc := tls.Client(lo.Conn, &tls.Config{InsecureSkipVerify: true, ServerName: s.Domain})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	lo.Conn = tc
	if f := lo.Open(s.Domain); !strings.Contains(f, "iq-register") {
		t.Fatalf("registration not offered on the loopback listener: %s", f)
	}
	lo.Send("<iq type='set' id='l1'><query xmlns='jabber:iq:register'><username>carol</username><password>pw</password></query></iq>")
	if got := lo.Expect("id='l1'", 10*time.Second); !strings.Contains(got, "type='result'") {
		t.Fatalf("registration on the loopback listener: %s", got)
	}
	out, _, code := s.Ctl("users")
	if code != 0 || !strings.Contains(out, "carol") || strings.Contains(out, "mallory") {
		t.Fatalf("xmppctl users (exit %d): %s", code, out)
	}
}

// XEP-0157: the contact-* settings appear in the server's disco#info as a
// serverinfo form (XEP-0128), read by slixmpp's disco; the caps ver of the stream
// features (XEP-0115) is the one slixmpp computes from that disco#info.
func TestContactAddressesWithSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	s := testenv.Start(t, testenv.Options{NoTLSListener: true, Config: `
contact-admin: [mailto:admin@example.org, xmpp:admin@example.org]
contact-abuse: mailto:abuse@example.org
contact-security: https://example.org/security
`})
	s.Register(t, "alice", "pw")
	out := s.RunPython(t, 40*time.Second, `
import asyncio
import xmpptest as X
XD = '{jabber:x:data}'
async def main():
    c = X.client(X.jid('alice', 'x'), 'pw', plugins=['xep_0030', 'xep_0128', 'xep_0115'])
    caps = X.event(c, 'entity_caps')  # the server's caps from the stream features
    await X.start(c)
    info = await c['xep_0030'].get_info(jid=X.DOMAIN, timeout=10)
    forms = info.xml.findall('{http://jabber.org/protocol/disco#info}query/' + XD + 'x')
    assert len(forms) == 1, info
    got = {}
    for f in forms[0].findall(XD + 'field'):
        got[f.get('var')] = [v.text for v in f.findall(XD + 'value')]
    want = {'FORM_TYPE': ['http://jabber.org/network/serverinfo'],
            'abuse-addresses': ['mailto:abuse@example.org'],
            'admin-addresses': ['mailto:admin@example.org', 'xmpp:admin@example.org'],
            'security-addresses': ['https://example.org/security']}
    assert got == want, got
    # slixmpp's XEP-0128 view of the same form
    ext = [f for f in info['disco_info'].iterables if f.namespace == 'jabber:x:data']
    assert len(ext) == 1, info['disco_info'].iterables
    vals = ext[0].get_values()
    assert vals['admin-addresses'] == ['mailto:admin@example.org', 'xmpp:admin@example.org'], vals
    # XEP-0115: the ver the stream features advertise covers the form (slixmpp's hash)
    ver = (await asyncio.wait_for(caps, 10))['caps']['ver']
    mine = c['xep_0115'].generate_verstring(info['disco_info'], 'sha-1')
    assert ver == mine, (ver, mine)
    print('contact-addresses ok')
    await X.stop(c)
X.run(main)
`)
	if !strings.Contains(out, "contact-addresses ok") {
		t.Fatalf("slixmpp:\n%s", out)
	}
}

//go:build integration

package server_test

import (
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// RFC 6120 STARTTLS + SASL SCRAM-SHA-1 and SCRAM-SHA-256 with slixmpp, resource
// binding, a message exchanged, and direct TLS (XEP-0368) on the second listener.
func TestLoginMechanismsAndMessage(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	s.Register(t, "alice", "secret", "bob", "pa55")
	out := s.RunPython(t, 60*time.Second, `
import asyncio, xmpptest as X
async def main():
    a = X.client(X.jid("alice", "laptop"), "secret", sasl_mech="SCRAM-SHA-1")
    b = X.client(X.jid("bob", "phone"), "pa55", sasl_mech="SCRAM-SHA-256")
    got = X.event(b, "message")
    await X.start(a); await X.start(b)
    print("MECH-A", X.mechanism(a)); print("MECH-B", X.mechanism(b))
    print("JID-A", a.boundjid.full)
    assert a.is_component is False
    await asyncio.sleep(0.2)
    a.send_message(mto=X.jid("bob"), mbody="hello bob", mtype="chat")
    m = await asyncio.wait_for(got, 10)
    print("BODY", m["body"], "FROM", m["from"])
    # direct TLS on the XEP-0368 port
    c = X.client(X.jid("alice", "tls"), "secret")
    await X.start(c, direct_tls=True)
    print("DIRECT-TLS", c.boundjid.full)
    for x in (a, b, c): await X.stop(x)
X.run(main)
`)
	for _, want := range []string{"MECH-A SCRAM-SHA-1", "MECH-B SCRAM-SHA-256", "JID-A alice@localhost/laptop", "BODY hello bob FROM alice@localhost/laptop", "DIRECT-TLS alice@localhost/tls", "PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

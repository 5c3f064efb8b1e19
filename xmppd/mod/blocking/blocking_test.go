package blocking

import (
	"context"
	"testing"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

func cmd(t *testing.T, h *modtest.Host, s *modtest.Session, typ, name string, jids ...string) *xmlstream.Element {
	t.Helper()
	r := h.IQ(s, typ, "", items(name, jids))
	if r == nil {
		t.Fatal("no reply")
	}
	return r
}

func TestBlockUnblockAndFiltering(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New(nil)
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a1, a2 := h.Connect("alice@example.org/1"), h.Connect("alice@example.org/2")
	a1.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	b := h.Connect("bob@example.org/b")
	b.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))

	if r := cmd(t, h, a2, "get", "blocklist"); len(r.Child(NS, "blocklist").Children()) != 0 {
		t.Fatal("empty list expected")
	}
	if r := cmd(t, h, a1, "set", "block", "bob@example.org"); r.Attr("type") != "result" {
		t.Fatalf("block: %+v", r)
	}
	if p := modtest.Find(a2.Take(), "iq", "set"); len(p) != 1 || p[0].Child(NS, "block") == nil {
		t.Fatal("no push to the resource that requested the list")
	}
	if u := modtest.Find(b.Take(), "presence", "unavailable"); len(u) != 1 {
		t.Fatal("blocked contact did not get unavailable")
	}
	if !m.IsBlocked("alice", jid.MustParse("bob@example.org/x")) || m.IsBlocked("alice", jid.MustParse("carol@example.org")) {
		t.Fatal("IsBlocked")
	}

	// bob's message is dropped silently; bob's IQ gets service-unavailable.
	h.Send(b, xmlstream.New(xmlstream.NSClient, "message", "to", "alice@example.org/1").Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("hi")))
	if len(a1.Take()) != 0 || len(b.Take()) != 0 {
		t.Fatal("message from a blocked JID delivered or answered")
	}
	h.Send(b, xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "q", "to", "alice@example.org/1").Append(xmlstream.New("urn:xmpp:ping", "ping")))
	if e := modtest.Find(b.Take(), "iq", "error"); len(e) != 1 || e[0].Child("", "error").Child(module.NSStanzas, "service-unavailable") == nil {
		t.Fatal("IQ from a blocked JID should get service-unavailable")
	}
	// alice's message to bob bounces with the blocked condition.
	h.Send(a1, xmlstream.New(xmlstream.NSClient, "message", "to", "bob@example.org").Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("hi")))
	e := modtest.Find(a1.Take(), "message", "error")
	if len(e) != 1 || e[0].Child("", "error").Child(module.NSStanzas, "not-acceptable") == nil || e[0].Child("", "error").Child(NSErrors, "blocked") == nil {
		t.Fatalf("outbound to blocked: %+v", e)
	}
	if len(b.Take()) != 0 {
		t.Fatal("message reached the blocked JID")
	}

	// Domain item blocks everyone there; unblock all clears.
	cmd(t, h, a1, "set", "block", "evil.example")
	if !m.IsBlocked("alice", jid.MustParse("x@evil.example/r")) {
		t.Fatal("domain item")
	}
	if r := cmd(t, h, a1, "set", "block"); r.Attr("type") != "error" {
		t.Fatal("empty block should be bad-request")
	}
	cmd(t, h, a1, "set", "unblock", "bob@example.org")
	if m.IsBlocked("alice", jid.MustParse("bob@example.org")) || len(m.List("alice")) != 1 {
		t.Fatal("unblock one")
	}
	cmd(t, h, a1, "set", "unblock")
	if len(m.List("alice")) != 0 {
		t.Fatal("unblock all")
	}
	if p := modtest.Find(a2.Take(), "iq", "set"); len(p) != 3 {
		t.Fatalf("pushes: %d", len(p))
	}
	h.Send(b, xmlstream.New(xmlstream.NSClient, "message", "to", "alice@example.org/1").Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("back")))
	if len(a1.Take()) != 1 {
		t.Fatal("message after unblock not delivered")
	}
}

package carbons

import (
	"context"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/xmlstream"
)

func enable(t *testing.T, h *modtest.Host, s *modtest.Session) {
	t.Helper()
	h.Send(s, xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "id", "c").Append(xmlstream.New(NS, "enable")))
	if r := modtest.Find(s.Take(), "iq", "result"); len(r) != 1 {
		t.Fatal("enable not acknowledged")
	}
}

func chat(from, to, body string, extra ...*xmlstream.Element) *xmlstream.Element {
	m := xmlstream.New(xmlstream.NSClient, "message", "type", "chat", "from", from, "to", to)
	m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
	for _, e := range extra {
		m.Append(e)
	}
	return m
}

func TestReceivedAndSentCopies(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	if err := New().Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a1, a2, a3 := h.Connect("alice@example.org/1"), h.Connect("alice@example.org/2"), h.Connect("alice@example.org/3")
	for _, s := range []*modtest.Session{a1, a2, a3} {
		s.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	}
	enable(t, h, a2)
	b := h.Connect("bob@example.org/b")
	b.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))

	// bob -> alice/1: a2 (enabled) gets a received copy, a3 (not enabled) nothing.
	h.Send(b, chat("", "alice@example.org/1", "hi"))
	if n := len(a1.Take()); n != 1 {
		t.Fatalf("a1 got %d", n)
	}
	got := a2.Take()
	if len(got) != 1 {
		t.Fatalf("a2 got %d", len(got))
	}
	fw := got[0].Child(NS, "received").Child(NSForward, "forwarded").Child(xmlstream.NSClient, "message")
	if fw == nil || fw.ChildText("", "body") != "hi" || got[0].Attr("from") != "alice@example.org" {
		t.Fatalf("received copy: %+v", got[0])
	}
	if len(a3.Take()) != 0 {
		t.Fatal("copy to a resource without carbons")
	}

	// alice/1 -> bob: a2 gets a sent copy.
	h.Send(a1, chat("", "bob@example.org", "yo"))
	got = a2.Take()
	if len(got) != 1 || got[0].Child(NS, "sent").Child(NSForward, "forwarded").Child("", "message").ChildText("", "body") != "yo" {
		t.Fatalf("sent copy: %+v", got)
	}

	// private: no copy, and the marker is stripped before delivery.
	h.Send(a1, chat("", "bob@example.org", "secret", xmlstream.New(NS, "private")))
	if len(a2.Take()) != 0 {
		t.Fatal("private message copied")
	}
	if bm := b.Take(); len(bm) == 0 || bm[len(bm)-1].Child(NS, "private") != nil {
		t.Fatal("private element not stripped")
	}
	// no-copy hint.
	h.Send(b, chat("", "alice@example.org/1", "x", xmlstream.New(NSHints, "no-copy")))
	if len(a2.Take()) != 0 {
		t.Fatal("no-copy message copied")
	}
	// disable.
	h.Send(a2, xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "id", "d").Append(xmlstream.New(NS, "disable")))
	a2.Take()
	h.Send(b, chat("", "alice@example.org/1", "again"))
	if len(a2.Take()) != 0 {
		t.Fatal("copy after disable")
	}
}

func TestEligible(t *testing.T) {
	normal := xmlstream.New(xmlstream.NSClient, "message")
	if Eligible(normal) {
		t.Error("normal without body")
	}
	normal.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("b"))
	if !Eligible(normal) {
		t.Error("normal with body")
	}
	gc := xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat").Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("b"))
	if Eligible(gc) {
		t.Error("groupchat")
	}
	rcpt := xmlstream.New(xmlstream.NSClient, "message").Append(xmlstream.New("urn:xmpp:receipts", "received"))
	if !Eligible(rcpt) {
		t.Error("receipt")
	}
	body := func() *xmlstream.Element { return xmlstream.New(xmlstream.NSClient, "body").AppendText("b") }
	for _, c := range []struct {
		name string
		msg  *xmlstream.Element
		want bool
	}{
		{"chat", xmlstream.New(xmlstream.NSClient, "message", "type", "chat").Append(body()), true},
		{"chat without body", xmlstream.New(xmlstream.NSClient, "message", "type", "chat"), true},
		{"headline", xmlstream.New(xmlstream.NSClient, "message", "type", "headline").Append(body()), false},
		{"error", xmlstream.New(xmlstream.NSClient, "message", "type", "error").Append(body()), false},
		{"groupchat chat state", xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat").Append(xmlstream.New("http://jabber.org/protocol/chatstates", "active")), false},
		{"normal chat state", xmlstream.New(xmlstream.NSClient, "message").Append(xmlstream.New("http://jabber.org/protocol/chatstates", "active")), true},
		{"chat private", xmlstream.New(xmlstream.NSClient, "message", "type", "chat").Append(body(), xmlstream.New(NS, "private")), false},
		{"chat no-copy", xmlstream.New(xmlstream.NSClient, "message", "type", "chat").Append(body(), xmlstream.New(NSHints, "no-copy")), false},
		{"normal carbon", xmlstream.New(xmlstream.NSClient, "message").Append(body(), xmlstream.New(NS, "received")), false},
		{"chat muc user", xmlstream.New(xmlstream.NSClient, "message", "type", "chat").Append(body(), xmlstream.New("http://jabber.org/protocol/muc#user", "x")), false},
	} {
		if got := Eligible(c.msg); got != c.want {
			t.Errorf("%s: eligible %v, want %v", c.name, got, c.want)
		}
	}
}

package private

import (
	"context"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/xmlstream"
)

func do(t *testing.T, h *modtest.Host, s *modtest.Session, typ, to string, kids ...*xmlstream.Element) *xmlstream.Element {
	t.Helper()
	q := xmlstream.New(NS, "query")
	for _, k := range kids {
		q.Append(k)
	}
	r := h.IQ(s, typ, to, q)
	if r == nil {
		t.Fatal("no reply")
	}
	return r
}

func cond(r *xmlstream.Element) string { return modtest.Cond(r) }

func TestPrivate(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	if err := New().Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a, b := h.Connect("alice@example.org/a"), h.Connect("bob@example.org/b")
	prefs := xmlstream.New("exodus:prefs", "exodus").Append(xmlstream.New("exodus:prefs", "defaultnick").AppendText("Hamlet"))
	if r := do(t, h, a, "get", "", xmlstream.New("exodus:prefs", "exodus")); r.Attr("type") != "result" || r.Child(NS, "query").Child("exodus:prefs", "exodus") == nil {
		t.Fatalf("empty get: %+v", r)
	}
	if r := do(t, h, a, "set", "", prefs); r.Attr("type") != "result" {
		t.Fatal("set")
	}
	r := do(t, h, a, "get", "", xmlstream.New("exodus:prefs", "exodus"))
	if r.Child(NS, "query").Child("exodus:prefs", "exodus").ChildText("exodus:prefs", "defaultnick") != "Hamlet" {
		t.Fatalf("get: %+v", r)
	}
	// Same name, other namespace: separate.
	if r := do(t, h, a, "get", "", xmlstream.New("other:ns", "exodus")); len(r.Child(NS, "query").Child("other:ns", "exodus").Nodes) != 0 {
		t.Fatal("namespaces mixed")
	}
	for _, ns := range []string{"jabber:client", "jabber:server", "jabber:x:data", "jabber:iq:roster", "vcard-temp", ""} {
		if r := do(t, h, a, "set", "", xmlstream.New(ns, "x")); cond(r) != "not-acceptable" {
			t.Errorf("reserved %q: %s", ns, cond(r))
		}
	}
	if r := do(t, h, b, "get", "alice@example.org", xmlstream.New("exodus:prefs", "exodus")); cond(r) != "forbidden" {
		t.Fatalf("other's storage: %s", cond(r))
	}
	if r := do(t, h, a, "get", ""); cond(r) != "bad-request" {
		t.Fatal("empty query")
	}
	h.RemoveUser("alice")
	if k := h.MemStore().Keys(Table); len(k) != 0 {
		t.Fatalf("left %q", k)
	}
}

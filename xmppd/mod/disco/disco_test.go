package disco

import (
	"context"
	"encoding/json"
	"testing"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

func ask(h *modtest.Host, s *modtest.Session, ns, to string) *xmlstream.Element {
	iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "d", "to", to).Append(xmlstream.New(ns, "query"))
	h.Send(s, iq)
	for _, st := range s.Take() {
		if st.Attr("id") == "d" {
			return st
		}
	}
	return nil
}

func TestDisco(t *testing.T) {
	ctx := context.Background()
	h := modtest.NewHost("example.org", "alice", "bob", "eve")
	r := roster.New()
	if err := r.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	h.DiscoFeature("urn:xmpp:ping")
	if err := New(r).Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	from, _ := json.Marshal(roster.Item{Sub: roster.SubFrom})
	if err := h.Store().Apply(ctx, storage.Put(roster.TableItems, modutil.Key("alice", "bob@example.org"), from)); err != nil {
		t.Fatal(err)
	}
	a, b, e := h.Connect("alice@example.org/a"), h.Connect("bob@example.org/b"), h.Connect("eve@example.org/e")

	r1 := ask(h, a, NSInfo, "example.org")
	q := r1.Child(NSInfo, "query")
	id := q.Child(NSInfo, "identity")
	if id.Attr("category") != "server" || id.Attr("type") != "im" || id.Attr("name") != "xedge" {
		t.Fatalf("identity %+v", id)
	}
	feats := map[string]bool{}
	for _, f := range q.Children() {
		feats[f.Attr("var")] = true
	}
	if !feats["urn:xmpp:ping"] || !feats[NSInfo] || !feats[NSItems] {
		t.Fatalf("features %v", feats)
	}
	if r := ask(h, a, NSItems, "example.org"); r.Attr("type") != "result" {
		t.Fatal("items")
	}
	// Account: self and subscribed contact yes, stranger no.
	for _, c := range []struct {
		s    *modtest.Session
		want string
	}{{a, "result"}, {b, "result"}, {e, "error"}} {
		r := ask(h, c.s, NSInfo, "alice@example.org")
		if r.Attr("type") != c.want {
			t.Errorf("%s asking alice: %s", c.s.JID(), r.Attr("type"))
		}
		if c.want == "result" && r.Child(NSInfo, "query").Child(NSInfo, "identity").Attr("category") != "account" {
			t.Error("account identity")
		}
		if c.want == "error" && r.Child("", "error").Child(module.NSStanzas, "service-unavailable") == nil {
			t.Error("stranger should get service-unavailable")
		}
	}
	n := xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "d", "to", "example.org").Append(xmlstream.New(NSInfo, "query", "node", "x"))
	h.Send(a, n)
	if r := modtest.Find(a.Take(), "iq", "error"); len(r) != 1 {
		t.Fatal("unknown node should be an error")
	}
}

// A client resolving the server's caps asks disco#info with node CapsNode#ver
// (XEP-0115 §6.2); it was answered item-not-found before.
func TestDiscoCapsNode(t *testing.T) {
	ctx := context.Background()
	h := modtest.NewHost("example.org", "alice")
	if err := New(nil).Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	a := h.Connect("alice@example.org/a")
	askNode := func(node string) *xmlstream.Element {
		iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "d", "to", "example.org").Append(xmlstream.New(NSInfo, "query", "node", node))
		h.Send(a, iq)
		for _, st := range a.Take() {
			if st.Attr("id") == "d" {
				return st
			}
		}
		t.Fatalf("no answer for node %q", node)
		return nil
	}
	r := askNode(CapsNode + "#abc=")
	q := r.Child(NSInfo, "query")
	if r.Attr("type") != "result" || q == nil || q.Attr("node") != CapsNode+"#abc=" || q.Child(NSInfo, "identity") == nil {
		t.Fatalf("caps node query: %s", r)
	}
	if r := askNode("urn:other#x"); r.Attr("type") != "error" {
		t.Fatalf("an unknown node must stay item-not-found: %s", r)
	}
}

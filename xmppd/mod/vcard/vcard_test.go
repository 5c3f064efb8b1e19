package vcard

import (
	"context"
	"strings"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

func do(t *testing.T, h *modtest.Host, s *modtest.Session, typ, to string, v *xmlstream.Element) *xmlstream.Element {
	t.Helper()
	r := h.IQ(s, typ, to, v)
	if r == nil {
		t.Fatal("no reply")
	}
	return r
}

func TestVCard(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	if err := New(1024).Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a, b := h.Connect("alice@example.org/a"), h.Connect("bob@example.org/b")
	if r := do(t, h, a, "get", "", xmlstream.New(NS, "vCard")); r.Attr("type") != "result" || r.Child(NS, "vCard") == nil || len(r.Child(NS, "vCard").Nodes) != 0 {
		t.Fatalf("empty vCard: %+v", r)
	}
	v := xmlstream.New(NS, "vCard").Append(xmlstream.New(NS, "FN").AppendText("Alice Liddell"))
	if r := do(t, h, a, "set", "", v); r.Attr("type") != "result" {
		t.Fatal("set")
	}
	if r := do(t, h, b, "get", "alice@example.org", xmlstream.New(NS, "vCard")); r.Child(NS, "vCard").ChildText(NS, "FN") != "Alice Liddell" || r.Attr("from") != "alice@example.org" {
		t.Fatalf("get other's: %+v", r)
	}
	if r := do(t, h, b, "set", "alice@example.org", v); r.Child("", "error").Child(module.NSStanzas, "forbidden") == nil {
		t.Fatal("setting another's vCard must be forbidden")
	}
	big := xmlstream.New(NS, "vCard").Append(xmlstream.New(NS, "PHOTO").AppendText(strings.Repeat("A", 2000)))
	if r := do(t, h, a, "set", "", big); r.Child("", "error").Child(module.NSStanzas, "not-acceptable") == nil {
		t.Fatal("oversize vCard accepted")
	}
	h.RemoveUser("alice")
	if r := do(t, h, b, "get", "alice@example.org", xmlstream.New(NS, "vCard")); len(r.Child(NS, "vCard").Nodes) != 0 {
		t.Fatal("vCard survived user removal")
	}
}

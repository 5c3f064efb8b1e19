package vcard

import (
	"context"
	"strings"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/xmlstream"
)

// Get and Put (xmppctl get_vcard/set_vcard) read and write the vCard a client
// gets and sets, by user key, within the size limit.
func TestAdminGetPut(t *testing.T) {
	ctx := context.Background()
	h := modtest.NewHost("example.org", "alice")
	m := New(256)
	if err := m.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := m.Get("alice@b.example"); ok || err != nil {
		t.Fatalf("no vCard yet: %v %v", ok, err)
	}
	v := xmlstream.New(NS, "vCard").Append(xmlstream.New(NS, "FN").AppendText("Alice of B"))
	if err := m.Put(ctx, "alice@b.example", v); err != nil {
		t.Fatal(err)
	}
	got, ok, err := m.Get("alice@b.example")
	if !ok || err != nil || got.ChildText(NS, "FN") != "Alice of B" {
		t.Fatalf("get: %v %v %v", got, ok, err)
	}
	if _, ok, _ := m.Get("alice"); ok {
		t.Fatal("alice of the default host has b.example's alice's vCard")
	}
	big := xmlstream.New(NS, "vCard").Append(xmlstream.New(NS, "DESC").AppendText(strings.Repeat("x", 300)))
	if err := m.Put(ctx, "alice", big); err == nil {
		t.Fatal("a vCard over the limit was stored")
	}
	// A client of the default host reads what Put wrote for her.
	if err := m.Put(ctx, "alice", v); err != nil {
		t.Fatal(err)
	}
	a := h.Connect("alice@example.org/a")
	if r := h.IQ(a, "get", "", xmlstream.New(NS, "vCard")); r == nil || r.Child(NS, "vCard").ChildText(NS, "FN") != "Alice of B" {
		t.Fatalf("client's get: %v", r)
	}
}

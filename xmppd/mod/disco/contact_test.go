package disco

import (
	"context"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/xmlstream"
)

func TestContactAddresses(t *testing.T) {
	ctx := context.Background()
	h := modtest.NewHost("example.org", "alice")
	m := New(nil)
	if err := m.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	a := h.Connect("alice@example.org/a")
	if ask(h, a, NSInfo, "example.org").Child(NSInfo, "query").Child(nsData, "x") != nil {
		t.Fatal("a contact form without configured addresses")
	}
	m.SetContactAddresses(map[string][]string{
		"admin-addresses":   {"mailto:admin@example.org", "xmpp:admin@example.org"},
		"abuse-addresses":   {"mailto:abuse@example.org"},
		"unknown-addresses": {"mailto:x@example.org"},
		"sales-addresses":   nil,
	})
	q := ask(h, a, NSInfo, "example.org").Child(NSInfo, "query")
	x := q.Child(nsData, "x")
	if x == nil || x.Attr("type") != "result" {
		t.Fatalf("no serverinfo form: %v", q)
	}
	var got [][]string
	for _, f := range x.Children() {
		row := []string{f.Attr("var")}
		for _, v := range f.Children() {
			row = append(row, v.Text())
		}
		got = append(got, row)
	}
	want := [][]string{{"FORM_TYPE", NSServerInfo}, {"abuse-addresses", "mailto:abuse@example.org"},
		{"admin-addresses", "mailto:admin@example.org", "xmpp:admin@example.org"}}
	if len(got) != len(want) {
		t.Fatalf("fields %v", got)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("field %d: %v, want %v", i, got[i], want[i])
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("field %d: %v, want %v", i, got[i], want[i])
			}
		}
	}
	// The account's own disco#info has no server form.
	if ask(h, a, NSInfo, "alice@example.org").Child(NSInfo, "query").Child(nsData, "x") != nil {
		t.Fatal("serverinfo form on an account")
	}
	// The form is the module's: answers do not share it.
	x.Append(xmlstream.New(nsData, "field", "var", "mutated"))
	if n := len(ask(h, a, NSInfo, "example.org").Child(NSInfo, "query").Child(nsData, "x").Children()); n != 3 {
		t.Fatalf("the stored form was changed through an answer: %d fields", n)
	}
	m.SetContactAddresses(nil)
	if ask(h, a, NSInfo, "example.org").Child(NSInfo, "query").Child(nsData, "x") != nil {
		t.Fatal("form kept after the addresses were removed")
	}
}

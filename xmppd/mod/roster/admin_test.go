package roster

import (
	"context"
	"strings"
	"testing"
)

// An administrator's roster writes (xmppctl add_rosteritem/delete_rosteritem):
// the item is stored as given, the version moves, the user's interested
// resources get a push, nothing goes to the contact; a bad subscription is
// refused; removing a missing item reports false.
func TestAdminSetRemoveItem(t *testing.T) {
	ctx := context.Background()
	h, m := setup(t, "alice")
	a := h.Connect("alice@example.org/r")
	a.SetInterested()
	v0 := m.Version("alice")
	it := Item{JID: "bob@b.example", Name: "Bob", Groups: []string{"ops", "b"}, Sub: SubBoth}
	if err := m.SetItem(ctx, "alice", it); err != nil {
		t.Fatal(err)
	}
	got, ok := m.Get("alice", "bob@b.example")
	if !ok || got.Name != "Bob" || got.Sub != SubBoth || strings.Join(got.Groups, ",") != "ops,b" || got.Ask {
		t.Fatalf("stored: %+v %v", got, ok)
	}
	if m.Version("alice") == v0 {
		t.Fatal("version unchanged")
	}
	push := a.Take()
	if len(push) != 1 || push[0].Attr("type") != "set" {
		t.Fatalf("push: %v", push)
	}
	if item := push[0].Child(NS, "query").Child(NS, "item"); item == nil || item.Attr("jid") != "bob@b.example" || item.Attr("subscription") != "both" || item.Attr("name") != "Bob" {
		t.Fatalf("pushed item: %v", push[0])
	}
	if err := m.SetItem(ctx, "alice", Item{JID: "carol@b.example", Sub: "maybe"}); err == nil {
		t.Fatal("subscription 'maybe' accepted")
	}
	if ok, err := m.RemoveItem(ctx, "alice", "bob@b.example"); !ok || err != nil {
		t.Fatalf("remove: %v %v", ok, err)
	}
	if _, ok := m.Get("alice", "bob@b.example"); ok {
		t.Fatal("item still there")
	}
	if push := a.Take(); len(push) != 1 || push[0].Child(NS, "query").Child(NS, "item").Attr("subscription") != "remove" {
		t.Fatalf("remove push: %v", push)
	}
	if ok, err := m.RemoveItem(ctx, "alice", "bob@b.example"); ok || err != nil {
		t.Fatalf("remove again: %v %v", ok, err)
	}
	if routed := h.Routed(); len(routed) != 0 {
		t.Fatalf("sent to contacts: %v", routed)
	}
}

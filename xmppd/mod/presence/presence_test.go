package presence

import (
	"context"
	"encoding/json"
	"testing"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/xmlstream"
)

func setup(t *testing.T, blocked func(string, jid.JID) bool) *modtest.Host {
	t.Helper()
	h := modtest.NewHost("example.org", "alice", "bob")
	checkContract(t, h)
	r := roster.New()
	ctx := context.Background()
	if err := r.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := New(r, Options{Blocked: blocked}).Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	// alice and bob are mutual contacts.
	both, _ := json.Marshal(roster.Item{Sub: roster.SubBoth})
	if err := h.Store().Apply(ctx,
		storage.Put(roster.TableItems, modutil.Key("alice", "bob@example.org"), both),
		storage.Put(roster.TableItems, modutil.Key("bob", "alice@example.org"), both)); err != nil {
		t.Fatal(err)
	}
	return h
}

// checkContract fails t if the module broke the RouteParsed contract (from and to
// exactly the stanza's attributes).
func checkContract(t *testing.T, h *modtest.Host) {
	t.Cleanup(func() {
		for _, v := range h.Violations() {
			t.Error(v)
		}
	})
}

func avail(show string) *xmlstream.Element {
	p := xmlstream.New(xmlstream.NSClient, "presence")
	if show != "" {
		p.Append(xmlstream.New(xmlstream.NSClient, "show").AppendText(show))
	}
	return p
}

func from(list []*xmlstream.Element, typ, f string) int {
	n := 0
	for _, st := range modtest.Find(list, "presence", typ) {
		if st.Attr("from") == f {
			n++
		}
	}
	return n
}

func TestBroadcastProbeUnavailableDirected(t *testing.T) {
	h := setup(t, nil)
	b := h.Connect("bob@example.org/b")
	h.Send(b, avail("away"))
	b.Take()

	// alice's initial presence: bob gets it, alice gets bob's presence from the probe.
	a := h.Connect("alice@example.org/a")
	h.Send(a, avail(""))
	if from(b.Take(), "", "alice@example.org/a") != 1 {
		t.Fatal("bob did not get alice's initial presence")
	}
	got := a.Take()
	if from(got, "", "bob@example.org/b") != 1 {
		t.Fatal("probe answer with bob's presence missing")
	}
	if from(got, "", "alice@example.org/a") != 1 {
		t.Fatal("initial presence not reflected to the user's own resource")
	}

	// A second alice resource sees the first, and bob sees the second.
	a2 := h.Connect("alice@example.org/a2")
	h.Send(a2, avail(""))
	if from(a2.Take(), "", "alice@example.org/a") != 1 || from(a.Take(), "", "alice@example.org/a2") != 1 {
		t.Fatal("own resources do not see each other")
	}
	b.Take()

	// Directed presence to a stranger is remembered.
	h.Send(a, xmlstream.New(xmlstream.NSClient, "presence", "to", "carol@elsewhere.example"))
	if len(h.Routed()) != 1 {
		t.Fatal("directed presence not routed")
	}

	// Update, then disconnect: bob, a2 and carol get unavailable.
	h.Send(a, avail("dnd"))
	if from(b.Take(), "", "alice@example.org/a") != 1 {
		t.Fatal("presence update not broadcast")
	}
	h.Disconnect(a)
	if from(b.Take(), "unavailable", "alice@example.org/a") != 1 || from(a2.Take(), "unavailable", "alice@example.org/a") < 1 {
		t.Fatal("unavailable on disconnect missing")
	}
	routed := h.Routed()
	if len(routed) != 1 || routed[0].Attr("to") != "carol@elsewhere.example" || routed[0].Attr("type") != "unavailable" {
		t.Fatalf("directed presence recipient did not get unavailable: %+v", routed)
	}
	// A session that never was available sends nothing when it closes.
	c := h.Connect("bob@example.org/quiet")
	h.Disconnect(c)
	if n := len(a2.Take()); n != 0 {
		t.Fatalf("unavailable for a never-available session: %d", n)
	}
}

func TestProbeFromStrangerRevealsNothing(t *testing.T) {
	h := setup(t, nil)
	b := h.Connect("bob@example.org/b")
	h.Send(b, avail(""))
	h.Route(context.Background(), xmlstream.New(xmlstream.NSClient, "presence", "type", "probe", "from", "eve@elsewhere.example", "to", "bob@example.org"))
	if r := h.Routed(); len(r) != 0 {
		t.Fatalf("probe from a stranger answered: %+v", r)
	}
}

func TestBlockedContactGetsNoPresence(t *testing.T) {
	h := setup(t, func(user string, j jid.JID) bool { return user == "alice" && j.Bare().String() == "bob@example.org" })
	b := h.Connect("bob@example.org/b")
	h.Send(b, avail(""))
	b.Take()
	a := h.Connect("alice@example.org/a")
	h.Send(a, avail(""))
	if from(b.Take(), "", "alice@example.org/a") != 0 {
		t.Fatal("blocked contact got presence")
	}
}

func TestProbeToFullJIDAnswersThatResourceOnly(t *testing.T) {
	h := setup(t, nil)
	b1, b2 := h.Connect("bob@example.org/one"), h.Connect("bob@example.org/two")
	h.Send(b1, avail(""))
	h.Send(b2, avail(""))
	a := h.Connect("alice@example.org/a")
	a.SetPresence(avail(""))
	a.Take()
	h.Route(context.Background(), xmlstream.New(xmlstream.NSClient, "presence", "type", "probe", "from", "alice@example.org/a", "to", "bob@example.org/two"))
	got := a.Take()
	if from(got, "", "bob@example.org/two") != 1 || from(got, "", "bob@example.org/one") != 0 {
		t.Fatalf("probe to a full JID: %d stanzas", len(got))
	}
}

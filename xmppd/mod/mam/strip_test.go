package mam

import (
	"context"
	"testing"

	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// TestStripSpellings: every stanza-id by the owner's bare JID, however spelled
// (case, a resource), is removed, others and the stanza's other nodes stay in
// their order.
func TestStripSpellings(t *testing.T) {
	st := xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat")
	st.Append(xmlstream.New(NSSID, "stanza-id", "by", "room@conference.example.org", "id", "room"))
	st.AppendText("t1")
	st.Append(xmlstream.New(NSSID, "stanza-id", "by", "BOB@Example.org/x", "id", "f1"))
	st.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("b"))
	st.Append(xmlstream.New(NSSID, "stanza-id", "by", "bob@example.org", "id", "f2"))
	st.Append(xmlstream.New(NSSID, "stanza-id", "by", "alice@example.org", "id", "other"))
	strip(st, jid.MustParse("bob@example.org/b"))
	var got []string
	for _, n := range st.Nodes {
		switch n := n.(type) {
		case *xmlstream.Element:
			got = append(got, n.Local+":"+n.Attr("id"))
		default:
			got = append(got, "text")
		}
	}
	want := []string{"stanza-id:room", "text", "body:", "stanza-id:other"}
	if len(got) != len(want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("nodes %v, want %v", got, want)
		}
	}
}

// TestGroupchatDeliveryNoAlloc: the deliver hook on a room's groupchat copy
// (not archived in the occupant's archive, carrying the room's stanza-id)
// allocates nothing: it ran once per occupant of a fan-out, and built the
// owner's JID string and parsed both JIDs of every stanza-id each time.
func TestGroupchatDeliveryNoAlloc(t *testing.T) {
	f := newFixture(t, Options{})
	st, ev := roomCopy(f)
	if n := testing.AllocsPerRun(100, func() { f.m.received(context.Background(), f.h, ev) }); n != 0 {
		t.Fatalf("%v allocations per delivery", n)
	}
	if len(st.Nodes) != 2 {
		t.Fatalf("the room's stanza-id was removed: %v", st)
	}
}

// BenchmarkDeliverGroupchat: the deliver hook on one occupant's copy of a
// room message.
func BenchmarkDeliverGroupchat(b *testing.B) {
	f := newFixture(b, Options{})
	_, ev := roomCopy(f)
	b.ReportAllocs()
	for b.Loop() {
		f.m.received(context.Background(), f.h, ev)
	}
}

// roomCopy is bob's copy of a room message, as the deliver hook gets it.
func roomCopy(f *fixture) (*xmlstream.Element, *module.EventData) {
	st := xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat", "from", "room@conference.example.org/n", "to", "bob@example.org/b")
	st.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("b"),
		xmlstream.New(NSSID, "stanza-id", "by", "room@conference.example.org", "id", "1"))
	return st, &module.EventData{Stanza: st, From: jid.MustParse("room@conference.example.org/n"), To: f.bob.JID()}
}

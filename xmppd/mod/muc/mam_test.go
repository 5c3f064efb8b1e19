package muc

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"xedge/xmppd/mod/mam"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// withMAM is twoNodes with mod/mam's room archive on both nodes (one store).
func withMAM(t *testing.T) (e, e2 *env, a *mam.Module) {
	e = newEnv(t, nil)
	a = mam.New(mam.Options{})
	ctx := context.Background()
	if err := a.Start(ctx, e.h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop(ctx) })
	e.m.WithArchive(a.Rooms())
	h2 := &host{Host: e.h.Host, handlers: map[string]module.DomainHandler{}}
	m2 := New().WithArchive(a.Rooms())
	if err := m2.Start(ctx, h2); err != nil {
		t.Fatal(err)
	}
	return e, &env{t: t, h: h2, m: m2, s: e.s}, a
}

func mamQuery(id string, rsm ...*xmlstream.Element) *xmlstream.Element {
	q := xmlstream.New(NSMAM, "query", "queryid", "q"+id)
	if len(rsm) > 0 {
		q.Append(xmlstream.New("http://jabber.org/protocol/rsm", "set").Append(func() []xmlstream.Node {
			var ns []xmlstream.Node
			for _, r := range rsm {
				ns = append(ns, r)
			}
			return ns
		}()...))
	}
	return xmlstream.New(NSClient, "iq", "type", "set", "id", id, "to", roomJ).Append(q)
}

func rsmEl(name, text string) *xmlstream.Element {
	return xmlstream.New("http://jabber.org/protocol/rsm", name).AppendText(text)
}

// results splits what a query returned into the archived bodies, their ids and
// the final IQ.
func results(t *testing.T, got []*xmlstream.Element) (bodies, ids []string, fin *xmlstream.Element) {
	t.Helper()
	for _, st := range got {
		if st.Local == "iq" {
			fin = st
			continue
		}
		r := st.Child(NSMAM, "result")
		if r == nil || st.Attr("from") != roomJ {
			t.Fatalf("not a room MAM result: %v", st)
		}
		fw := r.Child("urn:xmpp:forward:0", "forwarded")
		msg := fw.Child(NSClient, "message")
		if msg == nil || msg.Attr("from") == "" {
			t.Fatalf("forwarded: %v", st)
		}
		bodies = append(bodies, msg.ChildText(NSClient, "body"))
		ids = append(ids, r.Attr("id"))
	}
	if fin == nil || fin.Attr("type") != "result" {
		t.Fatalf("no result IQ: %v", got)
	}
	return bodies, ids, fin
}

func TestRoomArchive(t *testing.T) {
	e, e2, a := withMAM(t)
	ctx := context.Background()
	e.instant()
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	e.take("alice")
	e.take("bob")
	var sids []string
	for i := range 5 {
		e.send("alice", groupchat("m"+strconv.Itoa(i)))
		// Each copy carries the room's stanza-id, the same for every occupant.
		var id string
		for _, u := range []string{"alice", "bob"} {
			g := e.take(u)
			if len(g) != 1 {
				t.Fatalf("%s got %v", u, g)
			}
			sid := g[0].Child(NSSID, "stanza-id")
			if sid == nil || sid.Attr("by") != roomJ || (id != "" && sid.Attr("id") != id) {
				t.Fatalf("stanza-id on %v", g[0])
			}
			id = sid.Attr("id")
		}
		sids = append(sids, id)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// bob (through the other node) pages the room's archive two at a time.
	e2.send("bob", mamQuery("1", rsmEl("max", "2")))
	b, ids, fin := results(t, e.take("bob"))
	if len(b) != 2 || b[0] != "m0" || b[1] != "m1" || ids[0] != sids[0] {
		t.Fatalf("first page: %v %v", b, ids)
	}
	if c := fin.Child(NSMAM, "fin"); c == nil || c.Attr("complete") == "true" {
		t.Fatalf("fin of the first page: %v", fin)
	}
	e2.send("bob", mamQuery("2", rsmEl("max", "2"), rsmEl("after", ids[1])))
	if b, _, _ := results(t, e.take("bob")); len(b) != 2 || b[0] != "m2" || b[1] != "m3" {
		t.Fatalf("second page: %v", b)
	}
	e2.send("bob", mamQuery("3", rsmEl("max", "2"), rsmEl("before", "")))
	if b, _, fin := results(t, e.take("bob")); len(b) != 2 || b[0] != "m3" || b[1] != "m4" || !strings.Contains(fin.String(), "<count>5</count>") {
		t.Fatalf("last page: %v %v", b, fin)
	}
	// History on join comes from the archive, with the stanza-ids.
	e.send("carol", pres(roomJ+"/ca", mucX(xmlstream.New(NS, "history", "maxstanzas", "2"))))
	var hist []string
	for _, st := range e.take("carol") {
		if st.Child(NSDelay, "delay") != nil {
			hist = append(hist, st.ChildText(NSClient, "body")+"="+st.Child(NSSID, "stanza-id").Attr("id"))
		}
	}
	if len(hist) != 2 || hist[0] != "m3="+sids[3] || hist[1] != "m4="+sids[4] {
		t.Fatalf("history on join: %v", hist)
	}
	// A members-only room's archive is closed to non-members who are not in it.
	e.send("carol", xmlstream.New(NSClient, "presence", "type", "unavailable", "to", roomJ+"/ca"))
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "c", "to", roomJ).Append(xmlstream.New(NSOwner, "query").Append(
		xmlstream.New(NSData, "x", "type", "submit").Append(field("muc#roomconfig_membersonly", "", "1")))))
	e.take("alice")
	e.take("bob")
	e.take("carol")
	e.send("carol", mamQuery("4"))
	if g := e.take("carol"); len(g) != 1 || errCond(g[0]) != "forbidden" {
		t.Fatalf("outsider's query of a members-only room: %v", g)
	}
}

// A MAM query through a node that has not applied the room's creation yet is
// decided again after it caught up, not refused with item-not-found.
func TestRoomArchiveQueryOnLaggingNode(t *testing.T) {
	e, _, a := withMAM(t)
	e2, _ := lagNode(t, e, a.Rooms())
	e.instant()
	e2.send("bob", mamQuery("1"))
	if _, _, fin := results(t, e.take("bob")); !strings.Contains(fin.String(), "<count>0</count>") {
		t.Fatalf("fin: %v", fin)
	}
}

// A room whose owner turned archiving off (muc#roomconfig_enablearchiving,
// ejabberd's room option mam) archives nothing and stamps no stanza-id; its
// history on join is what the node relayed; turned on again, it archives.
func TestRoomArchivingOption(t *testing.T) {
	e, e2, a := withMAM(t)
	ctx := context.Background()
	feature := func() bool {
		t.Helper()
		e2.send("bob", xmlstream.New(NSClient, "iq", "type", "get", "id", "d", "to", roomJ).Append(xmlstream.New(NSInfo, "query")))
		g := e.take("bob")
		if len(g) != 1 || g[0].Attr("type") != "result" {
			t.Fatalf("disco#info: %v", g)
		}
		return strings.Contains(g[0].String(), NSMAM)
	}
	e.instant(field("muc#roomconfig_enablearchiving", "", "0"))
	e2.send("bob", pres(roomJ+"/bo", mucX()))
	e.take("alice")
	e.take("bob")
	if feature() {
		t.Fatal("disco#info offers MAM with archiving off")
	}
	e.send("alice", groupchat("off"))
	for _, u := range []string{"alice", "bob"} {
		if g := e.take(u); len(g) != 1 || g[0].Child(NSSID, "stanza-id") != nil {
			t.Fatalf("%s got %v, want one copy without a stanza-id", u, g)
		}
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e2.send("bob", mamQuery("1"))
	if b, _, _ := results(t, e.take("bob")); len(b) != 0 {
		t.Fatalf("archive with archiving off: %v", b)
	}
	e.send("carol", pres(roomJ+"/ca", mucX(xmlstream.New(NS, "history", "maxstanzas", "5"))))
	var hist []string
	for _, st := range e.take("carol") {
		if st.Child(NSDelay, "delay") != nil {
			hist = append(hist, st.ChildText(NSClient, "body"))
		}
	}
	if len(hist) != 1 || hist[0] != "off" {
		t.Fatalf("history on join with archiving off: %v", hist)
	}
	e.take("alice")
	e.take("bob")

	// The form shows the setting; the owner turns it on again.
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "get", "id", "f", "to", roomJ).Append(xmlstream.New(NSOwner, "query")))
	if g := e.take("alice"); len(g) != 1 || !strings.Contains(g[0].String(), "<field var='muc#roomconfig_enablearchiving' type='boolean'><value>0</value>") {
		t.Fatalf("config form: %v", g)
	}
	e.send("alice", xmlstream.New(NSClient, "iq", "type", "set", "id", "c", "to", roomJ).Append(xmlstream.New(NSOwner, "query").Append(
		xmlstream.New(NSData, "x", "type", "submit").Append(field("muc#roomconfig_enablearchiving", "", "1")))))
	e.take("alice")
	e.take("bob")
	e.take("carol")
	if !feature() {
		t.Fatal("disco#info does not offer MAM with archiving on")
	}
	e.send("alice", groupchat("on"))
	for _, u := range []string{"alice", "bob", "carol"} {
		if g := e.take(u); len(g) != 1 || g[0].Child(NSSID, "stanza-id") == nil {
			t.Fatalf("%s got %v, want one copy with the room's stanza-id", u, g)
		}
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e2.send("bob", mamQuery("2"))
	if b, _, _ := results(t, e.take("bob")); len(b) != 1 || b[0] != "on" {
		t.Fatalf("archive after archiving was turned on: %v", b)
	}
}

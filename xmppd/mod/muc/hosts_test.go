package muc

import (
	"context"
	"strings"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// vhost is the test host serving example.org (default) and b.example.
type vhost struct{ *host }

func (vhost) Hosts() []string                                    { return []string{"example.org", "b.example"} }
func (vhost) IsLocal(d string) bool                              { return d == "example.org" || d == "b.example" }
func (v vhost) Route(ctx context.Context, st *xmlstream.Element) { v.host.Host.Route(ctx, st) }

// Virtual hosts: conference.example.org and conference.b.example are two
// services; a room of the same name on each is two rooms (own occupants, own
// messages, own disco items), and the default service keeps its tables' keys.
func TestServicePerHost(t *testing.T) {
	h := &host{Host: modtest.NewHost("example.org", "alice", "bob", "carol"), handlers: map[string]module.DomainHandler{}}
	m := New()
	m.SetServices(map[string]string{"b.example": "muc.b.example"}) // a host_config muc_domain
	if err := m.Start(context.Background(), vhost{h}); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: h, m: m, s: map[string]*modtest.Session{}}
	for _, u := range []string{"alice", "bob"} {
		e.s[u] = h.Connect(u + "@example.org/r")
		e.s[u].SetPresence(xmlstream.New(NSClient, "presence"))
	}
	if got := strings.Join(m.Services(), ","); got != "conference.example.org,muc.b.example" || m.Domain() != "conference.example.org" {
		t.Fatalf("services %s, default %s", got, m.Domain())
	}
	const roomB = "room@muc.b.example"
	// alice creates room on the default service, bob a room of the same name
	// on b.example's; both take the nick "x": no conflict, other rooms.
	for _, c := range []struct{ u, room string }{{"alice", roomJ}, {"bob", roomB}} {
		e.send(c.u, pres(c.room+"/x", mucX()))
		got := e.take(c.u)
		if len(got) != 2 || !has(codes(got[0]), "201") || got[0].Attr("from") != c.room+"/x" {
			t.Fatalf("%s creating %s: %v", c.u, c.room, got)
		}
		e.send(c.u, xmlstream.New(NSClient, "iq", "type", "set", "id", "c1", "to", c.room).
			Append(xmlstream.New(NSOwner, "query").Append(xmlstream.New(NSData, "x", "type", "submit"))))
		if got := e.take(c.u); len(got) != 1 || got[0].Attr("type") != "result" {
			t.Fatalf("config of %s: %v", c.room, got)
		}
	}
	if got := strings.Join(m.Rooms(), ","); got != "room,room@muc.b.example" {
		t.Fatalf("room keys: %s", got)
	}
	if got := strings.Join(m.RoomJIDs("muc.b.example"), ","); got != roomB {
		t.Fatalf("rooms of muc.b.example: %s", got)
	}
	if o := m.Occupants("room@muc.b.example"); len(o) != 1 || o[0] != "x" {
		t.Fatalf("occupants of %s: %v", roomB, o)
	}
	// A message to b.example's room reaches bob only, from that room.
	e.send("bob", xmlstream.New(NSClient, "message", "type", "groupchat", "to", roomB).Append(xmlstream.New(NSClient, "body").AppendText("hi b")))
	got := e.take("bob")
	if len(got) != 1 || got[0].Attr("from") != roomB+"/x" {
		t.Fatalf("bob's copy: %v", got)
	}
	if a := e.take("alice"); len(a) != 0 {
		t.Fatalf("alice (in %s) got %v", roomJ, a)
	}
	// Each service lists its own rooms.
	for svc, want := range map[string]string{"conference.example.org": roomJ, "muc.b.example": roomB} {
		e.send("alice", xmlstream.New(NSClient, "iq", "type", "get", "id", "d", "to", svc).Append(xmlstream.New(NSItems, "query")))
		got := e.take("alice")
		if len(got) != 1 {
			t.Fatalf("disco#items of %s: %v", svc, got)
		}
		items := got[0].Child(NSItems, "query").Children()
		if len(items) != 1 || items[0].Attr("jid") != want {
			t.Fatalf("disco#items of %s: %s", svc, got[0])
		}
	}
	m.Stop(context.Background())
	if len(h.handlers) != 0 {
		t.Fatalf("handlers left after Stop: %v", h.ServedDomains())
	}
}

package muc

import (
	"context"
	"strings"
	"testing"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
)

// An administrator's room (xmppctl create_room NAME SERVICE HOST) is
// persistent, unlocked and owned by whom it names, on the service it names
// only; destroy_room tells its occupants and removes it; a domain that is no
// MUC service here is refused.
func TestAdminCreateDestroyRoom(t *testing.T) {
	ctx := context.Background()
	h := &host{Host: modtest.NewHost("example.org", "alice", "bob"), handlers: map[string]module.DomainHandler{}}
	m := New()
	if err := m.Start(ctx, vhost{h}); err != nil {
		t.Fatal(err)
	}
	defer m.Stop(ctx)
	e := &env{t: t, h: h, m: m, s: map[string]*modtest.Session{}}
	e.s["bob"] = h.Connect("bob@example.org/r")
	room := jid.MustParse("ops@conference.b.example")
	if ok, err := m.CreateRoom(ctx, room, []string{"alice@b.example"}); !ok || err != nil {
		t.Fatalf("create: %v %v", ok, err)
	}
	if ok, err := m.CreateRoom(ctx, room, nil); ok || err != nil {
		t.Fatalf("create again: %v %v (want false, nil)", ok, err)
	}
	if got := strings.Join(m.RoomJIDs("conference.b.example"), ","); got != room.String() {
		t.Fatalf("rooms of conference.b.example: %q", got)
	}
	if got := m.RoomJIDs("conference.example.org"); len(got) != 0 {
		t.Fatalf("rooms of conference.example.org: %v", got)
	}
	// bob joins the existing (unlocked) room: no 201, he is a participant.
	e.send("bob", pres(room.String()+"/bob", mucX()))
	got := e.take("bob")
	if len(got) != 2 || has(codes(got[0]), "201") || got[0].Attr("type") != "" {
		t.Fatalf("bob joining: %v", got)
	}
	c, err := m.view(m.roomKey(room))
	if err != nil || c.r == nil || !c.r.cfg.Persistent || c.r.locked || c.r.affs["alice@b.example"] != AffOwner {
		t.Fatalf("room as stored: %+v %v", c, err)
	}
	if ok, err := m.DestroyRoom(ctx, room); !ok || err != nil {
		t.Fatalf("destroy: %v %v", ok, err)
	}
	got = e.take("bob")
	if len(got) != 1 || got[0].Attr("type") != "unavailable" || got[0].Child(NSUser, "x").Child(NSUser, "destroy") == nil {
		t.Fatalf("bob told of the destruction: %v", got)
	}
	if got := m.RoomJIDs(""); len(got) != 0 {
		t.Fatalf("rooms left: %v", got)
	}
	if ok, err := m.DestroyRoom(ctx, room); ok || err != nil {
		t.Fatalf("destroy again: %v %v (want false, nil)", ok, err)
	}
	for _, bad := range []string{"ops@conference.c.example", "ops@b.example"} {
		if _, err := m.CreateRoom(ctx, jid.MustParse(bad), nil); err == nil || !strings.Contains(err.Error(), "not a MUC service") {
			t.Fatalf("create %s: %v", bad, err)
		}
	}
}

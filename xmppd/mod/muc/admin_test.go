package muc

import (
	"context"
	"strings"
	"testing"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// An administrator's room (xmppctl create_room NAME SERVICE HOST) is
// persistent, unlocked and owned by whom it names, on the service it names
// only; destroy_room tells its occupants and removes it; a domain that is no
// MUC service here is refused.
func TestAdminCreateDestroyRoom(t *testing.T) {
	ctx := context.Background()
	e, m := adminEnv(t)
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

// An administrator's option changes are stored (RoomOptions reads them
// back, with ejabberd's names); a room made temporary while nobody is in it
// is gone, one with an occupant stays until its last occupant leaves.
func TestAdminRoomOptions(t *testing.T) {
	ctx := context.Background()
	e, m := adminEnv(t)
	empty, busy := jid.MustParse("empty@conference.example.org"), jid.MustParse("busy@conference.example.org")
	for _, r := range []jid.JID{empty, busy} {
		if ok, err := m.CreateRoom(ctx, r, []string{"alice@example.org"}); !ok || err != nil {
			t.Fatalf("create %s: %v %v", r, ok, err)
		}
	}
	for _, c := range [][2]string{{"title", "Busy"}, {"anonymous", "false"}, {"password", "s3"}, {"history_size", "5"}, {"mam", "false"}} {
		if err := m.SetRoomOption(ctx, busy, c[0], c[1]); err != nil {
			t.Fatalf("%s %s: %v", c[0], c[1], err)
		}
	}
	if err := m.SetRoomOption(ctx, busy, "history_size", "5000"); err == nil {
		t.Fatal("history_size 5000 accepted")
	}
	opts, err := m.RoomOptions(ctx, busy)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range opts {
		got[o.Name] = o.Value
	}
	if got["title"] != "Busy" || got["anonymous"] != "false" || got["password_protected"] != "true" || got["password"] != "s3" || got["history_size"] != "5" || got["mam"] != "false" || len(opts) != len(RoomOptionNames()) {
		t.Fatalf("options: %v", opts)
	}
	e.send("bob", pres(busy.String()+"/bob", mucX(xmlstream.New(NS, "password").AppendText("s3"))))
	e.take("bob")
	for _, r := range []jid.JID{empty, busy} {
		if err := m.SetRoomOption(ctx, r, "persistent", "false"); err != nil {
			t.Fatalf("persistent false on %s: %v", r, err)
		}
	}
	if _, err := m.RoomOptions(ctx, empty); err != ErrNoRoom {
		t.Fatalf("the empty room made temporary: %v, want ErrNoRoom", err)
	}
	if occ, err := m.RoomOccupants(ctx, busy); err != nil || len(occ) != 1 || occ[0].Nick != "bob" {
		t.Fatalf("the busy room made temporary: %v %v", occ, err)
	}
	leave := pres(busy.String() + "/bob")
	leave.SetAttr("type", "unavailable")
	e.send("bob", leave)
	if _, err := m.RoomOptions(ctx, busy); err != ErrNoRoom {
		t.Fatalf("the temporary room after its last occupant left: %v", err)
	}
}

// adminEnv starts the module on example.org and b.example (vhost) with bob's
// session connected.
func adminEnv(t *testing.T) (*env, *Module) {
	t.Helper()
	ctx := context.Background()
	h := &host{Host: modtest.NewHost("example.org", "alice", "bob"), handlers: map[string]module.DomainHandler{}}
	m := New()
	if err := m.Start(ctx, vhost{h}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(ctx) })
	e := &env{t: t, h: h, m: m, s: map[string]*modtest.Session{}}
	e.s["bob"] = h.Connect("bob@example.org/r")
	return e, m
}

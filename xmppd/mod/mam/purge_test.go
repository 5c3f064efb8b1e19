package mam

import (
	"context"
	"testing"
	"time"

	"xedge/xmppd/xmlstream"
)

// DeleteOlder deletes what was archived before the cutoff: whole chunks and
// the old part of a chunk the cutoff falls into; chat touches the users'
// archives only, groupchat the rooms' only.
func TestDeleteOlder(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Options{})
	const room = "room@conference.example.org"
	groupchat := func(body string) *xmlstream.Element {
		return xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat", "from", room+"/al").
			Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
	}
	start := f.clock
	f.send(f.alice, "bob@example.org", "old", 2)
	f.m.Rooms().StoreRoom(room, "al", groupchat("old room"))
	if err := f.m.Sync(ctx); err != nil { // a chunk of old records only
		t.Fatal(err)
	}
	f.send(f.alice, "bob@example.org", "late", 1)
	f.clkMu.Lock()
	f.clock = f.clock.Add(10 * 24 * time.Hour)
	f.clkMu.Unlock()
	f.send(f.alice, "bob@example.org", "new", 2) // in the same chunk as "late", likely
	f.m.Rooms().StoreRoom(room, "al", groupchat("new room"))
	f.bob.Take()
	cutoff := start.Add(5 * 24 * time.Hour)

	if n, err := f.m.DeleteOlder(ctx, cutoff, "nonsense"); err == nil {
		t.Fatalf("type nonsense: %d deleted, no error", n)
	}
	if n, err := f.m.DeleteOlder(ctx, cutoff, PurgeGroupchat); err != nil || n != 1 {
		t.Fatalf("groupchat: %d %v, want 1", n, err)
	}
	if rs, _, _ := f.query(f.bob, nil); bodies(rs) != "old0 old1 late0 new0 new1 " {
		t.Fatalf("bob's archive after the groupchat purge: %q", bodies(rs))
	}
	var inRoom []string
	if err := f.m.Rooms().RecentRoom(ctx, room, 10, func(_ string, _ time.Time, m *xmlstream.Element) {
		inRoom = append(inRoom, m.ChildText("", "body"))
	}); err != nil || len(inRoom) != 1 || inRoom[0] != "new room" {
		t.Fatalf("room archive: %q %v", inRoom, err)
	}
	if n, err := f.m.DeleteOlder(ctx, cutoff, PurgeChat); err != nil || n != 6 {
		t.Fatalf("chat: %d %v, want 6 (3 in each archive)", n, err)
	}
	if rs, _, _ := f.query(f.bob, nil); bodies(rs) != "new0 new1 " {
		t.Fatalf("bob's archive: %q", bodies(rs))
	}
	if rs, _, _ := f.query(f.bob, map[string]string{"with": "alice@example.org"}); bodies(rs) != "new0 new1 " {
		t.Fatalf("bob's archive with alice (peer index): %q", bodies(rs))
	}
	if rs, _, _ := f.query(f.alice, nil); bodies(rs) != "new0 new1 " {
		t.Fatalf("alice's archive: %q", bodies(rs))
	}
	if n, err := f.m.DeleteOlder(ctx, time.Now().Add(24*time.Hour*365*10), PurgeAll); err != nil || n != 5 {
		t.Fatalf("all: %d %v, want 5", n, err)
	}
	if a, b := f.m.archiveLen("alice@example.org"), f.m.archiveLen(room); a != 0 || b != 0 {
		t.Fatalf("left: %d and %d", a, b)
	}
}

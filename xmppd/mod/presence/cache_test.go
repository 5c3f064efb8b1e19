package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/xmlstream"
)

// putItem writes a roster item with a new version in one batch, as another node's
// roster module does: this node's presence module hears nothing of it but the
// changed rows.
func putItem(t testing.TB, h *modtest.Host, user, contact, sub, ver string) {
	t.Helper()
	b, _ := json.Marshal(roster.Item{Sub: sub})
	if err := h.Store().Apply(context.Background(),
		storage.Put(roster.TableItems, modutil.Key(user, contact), b),
		storage.Put(roster.TableVersion, user, []byte(ver))); err != nil {
		t.Fatal(err)
	}
}

// online connects a session and sends its initial presence.
func online(h *modtest.Host, full string) *modtest.Session {
	s := h.Connect(full)
	h.Send(s, avail(""))
	return s
}

// TestSubscriptionsFollowForeignRosterChanges: the subscriber snapshot a session
// caches is reloaded when the roster version changes, whichever node changed it.
func TestSubscriptionsFollowForeignRosterChanges(t *testing.T) {
	h := setup(t, nil)
	putItem(t, h, "alice", "bob@example.org", roster.SubBoth, "1-aaaa")
	b, c := online(h, "bob@example.org/b"), online(h, "carol@example.org/c")
	a := online(h, "alice@example.org/a")
	if from(b.Take(), "", "alice@example.org/a") != 1 || from(c.Take(), "", "alice@example.org/a") != 0 {
		t.Fatal("initial broadcast")
	}
	// carol gains a 'from' subscription, bob loses his, on another node.
	putItem(t, h, "alice", "carol@example.org", roster.SubFrom, "2-bbbb")
	putItem(t, h, "alice", "bob@example.org", roster.SubTo, "3-cccc")
	h.Send(a, avail("away"))
	if from(b.Take(), "", "alice@example.org/a") != 0 || from(c.Take(), "", "alice@example.org/a") != 1 {
		t.Fatal("broadcast after a roster change on another node used a stale snapshot")
	}
	// Unchanged version: the snapshot is reused and still right.
	h.Send(a, avail("dnd"))
	if from(b.Take(), "", "alice@example.org/a") != 0 || from(c.Take(), "", "alice@example.org/a") != 1 {
		t.Fatal("second broadcast")
	}
	// The user removed on another node: items and version row gone (EmptyVersion).
	if err := h.Store().Apply(context.Background(),
		storage.DeletePrefix(roster.TableItems, modutil.UserPrefix("alice")),
		storage.Delete(roster.TableVersion, "alice")); err != nil {
		t.Fatal(err)
	}
	h.Send(a, avail("xa"))
	if from(b.Take(), "", "alice@example.org/a")+from(c.Take(), "", "alice@example.org/a") != 0 {
		t.Fatal("broadcast to contacts of a removed roster")
	}
}

// TestSubscriptionsThroughRosterModule: changes made through the roster module
// (subscription handshake, roster remove) reach the next broadcast.
func TestSubscriptionsThroughRosterModule(t *testing.T) {
	h := setup(t, nil)
	b, c := online(h, "bob@example.org/b"), online(h, "carol@example.org/c")
	a := online(h, "alice@example.org/a")
	b.Take()
	c.Take()
	// carol subscribes to alice and alice approves.
	h.Send(c, xmlstream.New(xmlstream.NSClient, "presence", "type", "subscribe", "to", "alice@example.org"))
	h.Send(a, xmlstream.New(xmlstream.NSClient, "presence", "type", "subscribed", "to", "carol@example.org"))
	c.Take()
	h.Send(a, avail("away"))
	if from(c.Take(), "", "alice@example.org/a") != 1 {
		t.Fatal("new subscriber missed the broadcast")
	}
	// alice removes bob.
	h.Send(a, xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "id", "r").Append(
		xmlstream.New(roster.NS, "query").Append(xmlstream.New(roster.NS, "item", "jid", "bob@example.org", "subscription", "remove"))))
	b.Take()
	h.Send(a, avail("dnd"))
	if from(b.Take(), "", "alice@example.org/a") != 0 {
		t.Fatal("removed contact still gets the broadcast")
	}
}

// BenchmarkBroadcast: one presence change of a user with 20 mutual contacts, all
// online (the fan-out benchmark's step).
func BenchmarkBroadcast(b *testing.B) {
	h := modtest.NewHost("example.org")
	r := roster.New()
	ctx := context.Background()
	if err := r.Start(ctx, h); err != nil {
		b.Fatal(err)
	}
	if err := New(r, Options{}).Start(ctx, h); err != nil {
		b.Fatal(err)
	}
	var contacts []*modtest.Session
	for i := range 20 {
		u := fmt.Sprintf("u%d", i)
		putItem(b, h, "alice", u+"@example.org", roster.SubBoth, "1-x")
		s := h.Connect(u + "@example.org/r")
		s.SetPresence(avail(""))
		contacts = append(contacts, s)
	}
	a := h.Connect("alice@example.org/a")
	h.Send(a, avail(""))
	p := avail("away")
	b.ReportAllocs()
	for b.Loop() {
		h.Send(a, p.Copy())
		for _, s := range contacts {
			s.Take()
		}
		a.Take()
	}
}

// TestHasBlockListSkipsBlocked: a user without a block list costs no Blocked call
// per contact; with one, blocked contacts still get nothing.
func TestHasBlockListSkipsBlocked(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	checkContract(t, h)
	r := roster.New()
	ctx := context.Background()
	if err := r.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	calls, has := 0, false
	o := Options{
		Blocked: func(user string, j jid.JID) bool {
			calls++
			return user == "alice" && j.Bare().String() == "bob@example.org"
		},
		HasBlockList: func(user string) bool { return has },
	}
	if err := New(r, o).Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	putItem(t, h, "alice", "bob@example.org", roster.SubBoth, "1-a")
	b := h.Connect("bob@example.org/b")
	b.SetPresence(avail(""))
	a := h.Connect("alice@example.org/a")
	h.Send(a, avail(""))
	if from(b.Take(), "", "alice@example.org/a") != 1 || calls != 0 {
		t.Fatalf("no block list: delivered? calls %d", calls)
	}
	has = true
	h.Send(a, avail("away"))
	if from(b.Take(), "", "alice@example.org/a") != 0 || calls == 0 {
		t.Fatal("block list ignored")
	}
}

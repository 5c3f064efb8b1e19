package pep

import (
	"context"
	"encoding/json"
	"testing"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/xmlstream"
)

const (
	nsAvatarMeta = "urn:xmpp:avatar:metadata"
	nsDevices    = "eu.siacs.conversations.axolotl.devicelist"
)

type fixture struct {
	t *testing.T
	h *modtest.Host
	m *Module
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	h := modtest.NewHost("example.org", "alice", "bob", "eve")
	r := roster.New()
	if err := r.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	m := New(r)
	if err := m.Start(ctx, h); err != nil {
		t.Fatal(err)
	}
	// bob and alice see each other's presence; eve is a stranger.
	both, _ := json.Marshal(roster.Item{Sub: roster.SubBoth})
	if err := h.Store().Apply(ctx,
		storage.Put(roster.TableItems, modutil.Key("alice", "bob@example.org"), both),
		storage.Put(roster.TableItems, modutil.Key("bob", "alice@example.org"), both)); err != nil {
		t.Fatal(err)
	}
	return &fixture{t, h, m}
}

func (f *fixture) iq(s *modtest.Session, typ, to string, payload *xmlstream.Element) *xmlstream.Element {
	f.t.Helper()
	r := f.h.IQ(s, typ, to, payload)
	if r == nil {
		f.t.Fatal("no reply")
	}
	return r
}

func publishEl(node, id string, payload *xmlstream.Element, opts map[string]string) *xmlstream.Element {
	ps := xmlstream.New(NS, "pubsub")
	it := xmlstream.New(NS, "item")
	if id != "" {
		it.SetAttr("id", id)
	}
	ps.Append(xmlstream.New(NS, "publish", "node", node).Append(it.Append(payload)))
	if opts != nil {
		x := xmlstream.New(NSData, "x", "type", "submit")
		x.Append(xmlstream.New(NSData, "field", "var", "FORM_TYPE", "type", "hidden").Append(xmlstream.New(NSData, "value").AppendText(NSPublishOp)))
		for k, v := range opts {
			x.Append(xmlstream.New(NSData, "field", "var", k).Append(xmlstream.New(NSData, "value").AppendText(v)))
		}
		ps.Append(xmlstream.New(NS, "publish-options").Append(x))
	}
	return ps
}

func itemsEl(node, maxItems string, ids ...string) *xmlstream.Element {
	it := xmlstream.New(NS, "items", "node", node)
	if maxItems != "" {
		it.SetAttr("max_items", maxItems)
	}
	for _, id := range ids {
		it.Append(xmlstream.New(NS, "item", "id", id))
	}
	return xmlstream.New(NS, "pubsub").Append(it)
}

func ids(r *xmlstream.Element) []string {
	var out []string
	ps := r.Child(NS, "pubsub")
	if ps == nil {
		return nil
	}
	for _, it := range ps.Child(NS, "items").Children() {
		out = append(out, it.Attr("id"))
	}
	return out
}

func pubsubCond(r *xmlstream.Element) string {
	e := r.Child("", "error")
	if e == nil {
		return ""
	}
	for _, c := range e.Children() {
		if c.Space == NSErrors {
			return c.Local
		}
	}
	return ""
}

func meta(id string) *xmlstream.Element {
	return xmlstream.New(nsAvatarMeta, "metadata").Append(xmlstream.New(nsAvatarMeta, "info", "id", id, "bytes", "10", "type", "image/png"))
}

func TestPublishRetrieveRetractDelete(t *testing.T) {
	f := setup(t)
	a, b, e := f.h.Connect("alice@example.org/a"), f.h.Connect("bob@example.org/b"), f.h.Connect("eve@example.org/e")

	// Auto-create with the default max_items 1: the second publish replaces the first.
	if r := f.iq(a, "set", "", publishEl(nsAvatarMeta, "one", meta("one"), nil)); r.Attr("type") != "result" ||
		r.Child(NS, "pubsub").Child(NS, "publish").Child(NS, "item").Attr("id") != "one" {
		t.Fatalf("publish: %+v", r)
	}
	if r := f.iq(a, "set", "", publishEl(nsAvatarMeta, "", meta("two"), nil)); r.Attr("type") != "result" {
		t.Fatal("publish without id")
	} else if id := r.Child(NS, "pubsub").Child(NS, "publish").Child(NS, "item").Attr("id"); id == "" {
		t.Fatal("no generated id")
	}
	if got := ids(f.iq(a, "get", "", itemsEl(nsAvatarMeta, ""))); len(got) != 1 || got[0] == "one" {
		t.Fatalf("max_items 1 kept %v", got)
	}
	// publish-options: a new node with max_items 'max', open access.
	opts := map[string]string{"pubsub#max_items": "max", "pubsub#access_model": "open"}
	for _, id := range []string{"x", "y", "z"} {
		if r := f.iq(a, "set", "", publishEl("n:multi", id, xmlstream.New("n:p", "p").AppendText(id), opts)); r.Attr("type") != "result" {
			t.Fatalf("publish %s: %s", id, modtest.Cond(r))
		}
	}
	if got := ids(f.iq(e, "get", "alice@example.org", itemsEl("n:multi", ""))); len(got) != 3 || got[0] != "x" || got[2] != "z" {
		t.Fatalf("all items (open node, stranger): %v", got)
	}
	if got := ids(f.iq(a, "get", "", itemsEl("n:multi", "2"))); len(got) != 2 || got[0] != "y" || got[1] != "z" {
		t.Fatalf("max_items=2: %v", got)
	}
	if got := ids(f.iq(a, "get", "", itemsEl("n:multi", "", "x", "nope"))); len(got) != 1 || got[0] != "x" {
		t.Fatalf("by id: %v", got)
	}
	// Options that disagree with the node: precondition-not-met, nothing stored.
	r := f.iq(a, "set", "", publishEl("n:multi", "w", xmlstream.New("n:p", "p"), map[string]string{"pubsub#access_model": "whitelist"}))
	if modtest.Cond(r) != "conflict" || pubsubCond(r) != "precondition-not-met" {
		t.Fatalf("mismatch: %s %s", modtest.Cond(r), pubsubCond(r))
	}
	if r := f.iq(a, "set", "", publishEl("n:bad", "w", xmlstream.New("n:p", "p"), map[string]string{"pubsub#access_model": "authorize"})); pubsubCond(r) != "precondition-not-met" {
		t.Fatal("unsupported access model accepted")
	}
	// Presence access: bob (subscribed) reads, eve does not; nobody but alice writes.
	if got := ids(f.iq(b, "get", "alice@example.org", itemsEl(nsAvatarMeta, ""))); len(got) != 1 {
		t.Fatalf("contact read: %v", got)
	}
	if r := f.iq(e, "get", "alice@example.org", itemsEl(nsAvatarMeta, "")); modtest.Cond(r) != "not-authorized" || pubsubCond(r) != "presence-subscription-required" {
		t.Fatalf("stranger read: %s", modtest.Cond(r))
	}
	if r := f.iq(b, "set", "alice@example.org", publishEl(nsAvatarMeta, "x", meta("x"), nil)); modtest.Cond(r) != "forbidden" {
		t.Fatalf("foreign publish: %s", modtest.Cond(r))
	}
	if r := f.iq(a, "get", "", itemsEl("n:none", "")); modtest.Cond(r) != "item-not-found" {
		t.Fatal("absent node")
	}
	// Whitelist node: the owner only.
	if r := f.iq(a, "set", "", publishEl("n:wl", "1", xmlstream.New("n:p", "p"), map[string]string{"pubsub#access_model": "whitelist"})); r.Attr("type") != "result" {
		t.Fatal("whitelist publish")
	}
	if r := f.iq(b, "get", "alice@example.org", itemsEl("n:wl", "")); pubsubCond(r) != "closed-node" {
		t.Fatalf("whitelist read by contact: %s", modtest.Cond(r))
	}
	// Retract.
	if r := f.iq(a, "set", "", xmlstream.New(NS, "pubsub").Append(xmlstream.New(NS, "retract", "node", "n:multi").Append(xmlstream.New(NS, "item", "id", "y")))); r.Attr("type") != "result" {
		t.Fatal("retract")
	}
	if got := ids(f.iq(a, "get", "", itemsEl("n:multi", ""))); len(got) != 2 {
		t.Fatalf("after retract: %v", got)
	}
	if r := f.iq(a, "set", "", xmlstream.New(NS, "pubsub").Append(xmlstream.New(NS, "retract", "node", "n:multi").Append(xmlstream.New(NS, "item", "id", "y")))); modtest.Cond(r) != "item-not-found" {
		t.Fatal("retract twice")
	}
	// Configure get and set (max_items 1 trims to the newest).
	r = f.iq(a, "get", "", xmlstream.New(NSOwner, "pubsub").Append(xmlstream.New(NSOwner, "configure", "node", "n:multi")))
	if v := formValues(r.Child(NSOwner, "pubsub").Child(NSOwner, "configure").Child(NSData, "x")); v["pubsub#access_model"] != "open" || v["pubsub#max_items"] != "1000" {
		t.Fatalf("configure get %v", v)
	}
	x := xmlstream.New(NSData, "x", "type", "submit").Append(
		xmlstream.New(NSData, "field", "var", "pubsub#max_items").Append(xmlstream.New(NSData, "value").AppendText("1")))
	if r := f.iq(a, "set", "", xmlstream.New(NSOwner, "pubsub").Append(xmlstream.New(NSOwner, "configure", "node", "n:multi").Append(x))); r.Attr("type") != "result" {
		t.Fatalf("configure set: %s", modtest.Cond(r))
	}
	if got := ids(f.iq(a, "get", "", itemsEl("n:multi", ""))); len(got) != 1 || got[0] != "z" {
		t.Fatalf("after configure: %v", got)
	}
	// Delete.
	if r := f.iq(a, "set", "", xmlstream.New(NSOwner, "pubsub").Append(xmlstream.New(NSOwner, "delete", "node", "n:multi"))); r.Attr("type") != "result" {
		t.Fatal("delete")
	}
	if r := f.iq(a, "get", "", itemsEl("n:multi", "")); modtest.Cond(r) != "item-not-found" {
		t.Fatal("deleted node readable")
	}
	if r := f.iq(b, "set", "alice@example.org", xmlstream.New(NSOwner, "pubsub").Append(xmlstream.New(NSOwner, "delete", "node", nsAvatarMeta))); modtest.Cond(r) != "forbidden" {
		t.Fatal("foreign delete")
	}
	// Storage failure: a wait error, nothing half-written.
	f.h.MemStore().SetFail(storage.ErrUnavailable)
	if r := f.iq(a, "set", "", publishEl("n:fail", "1", xmlstream.New("n:p", "p"), nil)); modtest.Cond(r) != "resource-constraint" {
		t.Fatalf("store down: %s", modtest.Cond(r))
	}
	f.h.MemStore().SetFail(nil)
	if r := f.iq(a, "get", "", itemsEl("n:fail", "")); modtest.Cond(r) != "item-not-found" {
		t.Fatal("failed publish left a node")
	}
	f.h.RemoveUser("alice")
	if k := f.h.MemStore().Keys(TableNodes); len(k) != 0 {
		t.Fatalf("left %q", k)
	}
	if k := f.h.MemStore().Keys(TableItems); len(k) != 0 {
		t.Fatalf("left %q", k)
	}
}

// available plays an available presence with caps ver from s and answers the
// module's disco#info query with features (unless the ver is cached); it returns
// the events the session was sent meanwhile.
func (f *fixture) available(s *modtest.Session, ver string, features ...string) []*xmlstream.Element {
	f.t.Helper()
	p := xmlstream.New(xmlstream.NSClient, "presence")
	p.Append(xmlstream.New(NSCaps, "c", "hash", "sha-1", "node", "https://example.net/client", "ver", ver))
	f.h.Send(s, p)
	s.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	var evs []*xmlstream.Element
	for _, st := range s.Take() {
		if st.Local != "iq" || st.Attr("type") != "get" {
			if ev := st.Child(NSEvent, "event"); ev != nil {
				evs = append(evs, ev)
			}
			continue
		}
		q := st.Child(NSDiscoInfo, "query")
		if q == nil || q.Attr("node") != "https://example.net/client#"+ver {
			f.t.Fatalf("caps query %+v", st)
		}
		res := xmlstream.New(NSDiscoInfo, "query", "node", q.Attr("node"))
		res.Append(xmlstream.New(NSDiscoInfo, "identity", "category", "client", "type", "pc"))
		for _, ft := range features {
			res.Append(xmlstream.New(NSDiscoInfo, "feature", "var", ft))
		}
		r := xmlstream.New(xmlstream.NSClient, "iq", "type", "result", "id", st.Attr("id"), "to", st.Attr("from")).Append(res)
		f.h.Send(s, r)
	}
	return append(evs, events(s)...)
}

func verOf(features ...string) string {
	q := xmlstream.New(NSDiscoInfo, "query")
	q.Append(xmlstream.New(NSDiscoInfo, "identity", "category", "client", "type", "pc"))
	for _, ft := range features {
		q.Append(xmlstream.New(NSDiscoInfo, "feature", "var", ft))
	}
	return capsVer(q)
}

// TestCapsVer checks the XEP-0115 §5.2 example.
func TestCapsVer(t *testing.T) {
	q := xmlstream.New(NSDiscoInfo, "query")
	q.Append(xmlstream.New(NSDiscoInfo, "identity", "category", "client", "type", "pc", "name", "Exodus 0.9.1"))
	for _, ft := range []string{"http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"} {
		q.Append(xmlstream.New(NSDiscoInfo, "feature", "var", ft))
	}
	if v := capsVer(q); v != "QgayPKawpkPSDYmwT/WM94uAlu0=" {
		t.Fatalf("ver %s", v)
	}
}

func events(s *modtest.Session) []*xmlstream.Element {
	var out []*xmlstream.Element
	for _, st := range s.Take() {
		if st.Local == "message" {
			if ev := st.Child(NSEvent, "event"); ev != nil {
				out = append(out, ev)
			}
		}
	}
	return out
}

func TestNotificationsByCaps(t *testing.T) {
	f := setup(t)
	a := f.h.Connect("alice@example.org/a")
	b := f.h.Connect("bob@example.org/b")
	b2 := f.h.Connect("bob@example.org/nonotify")
	e := f.h.Connect("eve@example.org/e")
	bFeatures := []string{nsDevices + "+notify", nsAvatarMeta + "+notify"}
	verB := verOf(bFeatures...)
	f.available(a, verOf(nsDevices+"+notify"), nsDevices+"+notify")
	f.available(b, verB, bFeatures...)
	f.available(b2, verOf("urn:xmpp:ping"), "urn:xmpp:ping")
	f.available(e, verB) // cached: eve gets B's interest without a query
	// A ver that does not hash to its answer is used for that session only.
	mallory := f.h.Connect("eve@example.org/m")
	f.available(mallory, "bogusver=", nsDevices+"+notify")
	if !f.m.interest(mallory.JID())[nsDevices] {
		t.Fatal("unverified caps not used for their session")
	}
	other := f.h.Connect("eve@example.org/o")
	f.available(other, "bogusver=", "urn:xmpp:ping")
	if f.m.interest(other.JID())[nsDevices] {
		t.Fatal("unverified caps answer poisoned the cache")
	}
	list := xmlstream.New(nsDevices, "list").Append(xmlstream.New(nsDevices, "device", "id", "42"))
	if r := f.iq(a, "set", "", publishEl(nsDevices, "current", list, map[string]string{"pubsub#access_model": "open"})); r.Attr("type") != "result" {
		t.Fatal("publish")
	}
	for name, s := range map[string]*modtest.Session{"alice": a, "bob": b} {
		evs := events(s)
		if len(evs) != 1 || evs[0].Child(NSEvent, "items").Attr("node") != nsDevices ||
			evs[0].Child(NSEvent, "items").Child(NSEvent, "item").Child(nsDevices, "list") == nil {
			t.Fatalf("%s got %v", name, evs)
		}
	}
	if evs := events(b2); len(evs) != 0 {
		t.Fatal("session without +notify notified")
	}
	if evs := events(e); len(evs) != 0 {
		t.Fatal("non-contact notified")
	}
	// Avatar: alice's resource did not ask for it, bob's did.
	f.iq(a, "set", "", publishEl(nsAvatarMeta, "h1", meta("h1"), nil))
	if len(events(a)) != 0 || len(events(b)) != 1 {
		t.Fatal("avatar notification targets")
	}
	// A new bob resource with cached caps gets the last items at its initial presence.
	b3 := f.h.Connect("bob@example.org/late")
	got := map[string]bool{}
	for _, ev := range f.available(b3, verB) {
		got[ev.Child(NSEvent, "items").Attr("node")] = true
	}
	if !got[nsDevices] || !got[nsAvatarMeta] {
		t.Fatalf("last items: %v", got)
	}
	// Retract with notify, delete: both reach bob.
	f.iq(a, "set", "", xmlstream.New(NS, "pubsub").Append(xmlstream.New(NS, "retract", "node", nsDevices, "notify", "true").Append(xmlstream.New(NS, "item", "id", "current"))))
	if evs := events(b); len(evs) != 1 || evs[0].Child(NSEvent, "items").Child(NSEvent, "retract").Attr("id") != "current" {
		t.Fatalf("retract event %v", evs)
	}
	f.iq(a, "set", "", xmlstream.New(NSOwner, "pubsub").Append(xmlstream.New(NSOwner, "delete", "node", nsAvatarMeta)))
	if evs := events(b); len(evs) != 1 || evs[0].Child(NSEvent, "delete") == nil {
		t.Fatalf("delete event %v", evs)
	}
	// Unavailable: no more notifications for that session.
	f.h.Disconnect(b)
	f.iq(a, "set", "", publishEl(nsDevices, "current", list, nil))
	if rows := f.m.caps.Get("bob@example.org/b"); len(rows) != 0 {
		t.Fatal("caps row left after close")
	}
}

func TestBookmarksConversion(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if err := modutil.Declare(ctx, f.h.Store(), privateTable); err != nil {
		t.Fatal(err)
	}
	st := xmlstream.New(nsLegacyBookmarks, "storage").Append(
		xmlstream.New(nsLegacyBookmarks, "conference", "jid", "room@conference.example.org", "name", "The Room", "autojoin", "true").Append(
			xmlstream.New(nsLegacyBookmarks, "nick").AppendText("al")))
	if err := f.h.Store().Apply(ctx, storage.Put(privateTable, modutil.Key("alice", nsLegacyBookmarks, "storage"), modutil.Encode(st))); err != nil {
		t.Fatal(err)
	}
	a := f.h.Connect("alice@example.org/a")
	r := f.iq(a, "get", "", itemsEl(NSBookmarks, ""))
	its := r.Child(NS, "pubsub").Child(NS, "items").Children()
	if len(its) != 1 || its[0].Attr("id") != "room@conference.example.org" {
		t.Fatalf("converted %+v", r)
	}
	c := its[0].Child(NSBookmarks, "conference")
	if c.Attr("autojoin") != "true" || c.Attr("name") != "The Room" || c.ChildText(NSBookmarks, "nick") != "al" {
		t.Fatalf("conference %+v", c)
	}
	if cfg, _ := f.m.config("alice", NSBookmarks); cfg.Access != AccessWhitelist {
		t.Fatalf("bookmarks node %+v", cfg)
	}
	b := f.h.Connect("bob@example.org/b")
	if r := f.iq(b, "get", "alice@example.org", itemsEl(NSBookmarks, "")); modtest.Cond(r) != "not-allowed" {
		t.Fatal("bookmarks readable by a contact")
	}
}

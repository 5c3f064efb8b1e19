package last

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// clock is a settable clock safe for the writer goroutine.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time                     { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration)                { c.ns.Add(int64(d)) }
func newClock(t time.Time) *clock                   { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func query(r *xmlstream.Element) *xmlstream.Element { return r.Child(NS, "query") }

type env struct {
	h   *modtest.Host
	m   *Module
	clk *clock
}

// newEnv starts the module on a host with alice, bob (alice's contact with
// subscription from: he sees her presence) and carol (subscription to only).
func newEnv(t *testing.T) *env {
	t.Helper()
	h := modtest.NewHost("example.org", "alice", "bob", "carol", "dave")
	clk := newClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	subs := map[string]string{"alice\x00bob@example.org": "from", "alice\x00carol@example.org": "to"}
	m := New(Options{
		Subscription: func(u, c string) string { return subs[u+"\x00"+c] },
		FlushEvery:   5 * time.Millisecond, Settle: 50 * time.Millisecond, Now: clk.now,
	})
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	return &env{h, m, clk}
}

// written waits (bounded) until nothing is queued.
func (e *env) written(t *testing.T) {
	t.Helper()
	for i := 0; e.m.Pending() > 0; i++ {
		if i > 400 {
			t.Fatalf("%d record(s) still queued after 2 s", e.m.Pending())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) ask(t *testing.T, s *modtest.Session, to string) *xmlstream.Element {
	t.Helper()
	r := e.h.IQ(s, "get", to, xmlstream.New(NS, "query"))
	if r == nil {
		t.Fatalf("no answer to %s's query of %s", s.JID(), to)
	}
	return r
}

func TestLogoutRecordedAndQueried(t *testing.T) {
	e := newEnv(t)
	bob, carol := e.h.Connect("bob@example.org/b"), e.h.Connect("carol@example.org/c")
	// Nothing recorded yet: ejabberd's answer.
	if r := e.ask(t, bob, "alice@example.org"); modtest.Cond(r) != "service-unavailable" {
		t.Fatalf("no record: %v", r)
	}
	a := e.h.Connect("alice@example.org/home")
	if r := e.ask(t, bob, "alice@example.org"); query(r) == nil || query(r).Attr("seconds") != "0" {
		t.Fatalf("online user: %v", r)
	}
	e.h.Send(a, xmlstream.New(xmlstream.NSClient, "presence", "type", "unavailable").
		Append(xmlstream.New(xmlstream.NSClient, "status").AppendText("Heading Home")))
	logout := e.clk.now()
	e.h.Disconnect(a)
	e.written(t)
	r, ok, err := e.m.Get("alice")
	if err != nil || !ok || r.At != logout.Unix() || r.Status != "Heading Home" || r.Noticed {
		t.Fatalf("record %+v %v %v", r, ok, err)
	}
	e.clk.add(903 * time.Second)
	got := e.ask(t, bob, "alice@example.org")
	if q := query(got); q == nil || q.Attr("seconds") != "903" || q.Text() != "Heading Home" {
		t.Fatalf("bob's query: %v", got)
	}
	// XEP-0012 §4: only who may see her presence.
	if r := e.ask(t, carol, "alice@example.org"); modtest.Cond(r) != "forbidden" {
		t.Fatalf("carol (subscription to): %v", r)
	}
	if r := e.ask(t, e.h.Connect("dave@example.org/d"), "alice@example.org"); modtest.Cond(r) != "forbidden" {
		t.Fatalf("dave (no subscription): %v", r)
	}
	if r := e.h.IQ(bob, "set", "alice@example.org", xmlstream.New(NS, "query")); modtest.Cond(r) != "not-allowed" {
		t.Fatalf("set: %v", r)
	}
	// A full JID: delivered to the client for bob, refused for carol (§3).
	if r := e.ask(t, carol, "alice@example.org/home"); modtest.Cond(r) != "forbidden" {
		t.Fatalf("carol's query of a full JID: %v", r)
	}
	a3 := e.h.Connect("alice@example.org/desk")
	e.h.Send(bob, xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "full1", "to", "alice@example.org/desk").Append(xmlstream.New(NS, "query")))
	if got := a3.Take(); len(got) != 1 || got[0].Attr("id") != "full1" {
		t.Fatalf("bob's query of a full JID not delivered to the client: %v", got)
	}
	e.h.Disconnect(a3)
	e.written(t)
	// The server's JID: uptime.
	if q := query(e.ask(t, bob, "example.org")); q == nil || q.Attr("seconds") != "903" {
		t.Fatalf("uptime: %v", q)
	}
	// A logout without an unavailable presence (a dropped stream) has no status.
	a2 := e.h.Connect("alice@example.org/phone")
	e.clk.add(10 * time.Second)
	e.h.Disconnect(a2)
	e.written(t)
	if r, _, _ := e.m.Get("alice"); r.At != e.clk.now().Unix() || r.Status != "" {
		t.Fatalf("second logout: %+v", r)
	}
}

func TestRecordWaitsForTheLastSession(t *testing.T) {
	e := newEnv(t)
	home, phone := e.h.Connect("alice@example.org/home"), e.h.Connect("alice@example.org/phone")
	e.h.Disconnect(home)
	// Still online (phone): nothing written, and the queued end is dropped
	// once Settle passed, the phone's end will write one.
	e.clk.add(time.Second)
	e.written(t)
	if _, ok, _ := e.m.Get("alice"); ok {
		t.Fatal("a record written while a session is still bound")
	}
	e.clk.add(time.Minute)
	e.h.Disconnect(phone)
	e.written(t)
	if r, ok, _ := e.m.Get("alice"); !ok || r.At != e.clk.now().Unix() {
		t.Fatalf("the last session's end: %+v %v", r, ok)
	}
}

func TestRemovedAccountLeavesNoRecord(t *testing.T) {
	e := newEnv(t)
	a := e.h.Connect("alice@example.org/home")
	e.h.Disconnect(a)
	e.written(t)
	if _, ok, _ := e.m.Get("alice"); !ok {
		t.Fatal("no record")
	}
	b := e.h.Connect("bob@example.org/b")
	// unregister: the account goes, then its sessions are kicked.
	for _, u := range []string{"bob", "alice"} {
		if err := e.h.Accounts().Delete(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		e.h.RemoveUser(u)
	}
	e.h.Disconnect(b)
	e.written(t)
	if k := e.h.MemStore().Keys(Table); len(k) != 0 {
		t.Fatalf("records left: %q", k)
	}
}

func TestJudge(t *testing.T) {
	cut := time.Unix(1000, 0)
	for _, c := range []struct {
		name          string
		r             Record
		found, online bool
		want          Verdict
	}{
		{"old logout", Record{At: 999}, true, false, Delete},
		{"recent logout", Record{At: 1000}, true, false, Keep},
		{"old but online", Record{At: 1}, true, true, Keep},
		{"no record", Record{}, false, false, Notice},
		{"no record, online", Record{}, false, true, Keep},
		{"noticed long ago", Record{At: 1, Noticed: true}, true, false, Delete},
		{"noticed recently", Record{At: 2000, Noticed: true}, true, false, Keep},
	} {
		if got := Judge(c.r, c.found, c.online, cut); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestOld(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := e.clk.now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.m.Set(ctx, "alice", Record{At: now.Add(-40 * 24 * time.Hour).Unix()}))
	must(e.m.Set(ctx, "bob", Record{At: now.Add(-40 * 24 * time.Hour).Unix()}))
	must(e.m.Set(ctx, "carol", Record{At: now.Add(-2 * 24 * time.Hour).Unix()}))
	e.h.Connect("bob@example.org/b") // online: never deleted
	cutoff := now.Add(-30 * 24 * time.Hour)
	old, noticed, err := e.m.Old(ctx, []string{"alice", "bob", "carol", "dave"}, cutoff)
	must(err)
	if !slices.Equal(old, []string{"alice"}) || noticed != 1 {
		t.Fatalf("old %q, noticed %d", old, noticed)
	}
	// dave had no record: noticed now, not answered as a logout, deleted
	// by a run more than DAYS later.
	if r, ok, _ := e.m.Get("dave"); !ok || !r.Noticed || r.At != now.Unix() {
		t.Fatalf("dave's record %+v %v", r, ok)
	}
	if r := e.ask(t, e.h.Connect("dave@example.org/d"), "dave@example.org"); query(r) == nil {
		t.Fatalf("own query while online: %v", r)
	}
	e.clk.add(31 * 24 * time.Hour)
	old, noticed, err = e.m.Old(ctx, []string{"dave"}, e.clk.now().Add(-30*24*time.Hour))
	must(err)
	if len(old) != 0 || noticed != 0 {
		t.Fatalf("dave online: old %q noticed %d", old, noticed)
	}
	for _, s := range e.h.Sessions(jid.MustParse("dave@example.org")) {
		e.h.Disconnect(s.(*modtest.Session))
	}
	e.written(t)
	// dave logged out just now: kept.
	old, _, err = e.m.Old(ctx, []string{"dave"}, e.clk.now().Add(-30*24*time.Hour))
	must(err)
	if len(old) != 0 {
		t.Fatalf("dave after a logout: %q", old)
	}
}

func TestNoticedIsNoLogout(t *testing.T) {
	e := newEnv(t)
	if err := e.m.Set(context.Background(), "alice", Record{At: e.clk.now().Unix(), Noticed: true}); err != nil {
		t.Fatal(err)
	}
	if r := e.ask(t, e.h.Connect("bob@example.org/b"), "alice@example.org"); modtest.Cond(r) != "service-unavailable" {
		t.Fatalf("a noticed record answered as a logout: %v", r)
	}
}

func TestQueryRounding(t *testing.T) {
	if q := Query(-time.Second, ""); q.Attr("seconds") != "0" || q.Text() != "" {
		t.Fatalf("%v", q)
	}
	if q := Query(1500*time.Millisecond, "x"); q.Attr("seconds") != "1" || q.Text() != "x" {
		t.Fatalf("%v", q)
	}
}

var _ module.Module = (*Module)(nil)

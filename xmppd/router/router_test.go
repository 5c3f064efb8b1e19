package router

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"xedge/storage"
	"xedge/xmppd/accounts"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

type fakeSess struct {
	id       string
	j        jid.JID
	mu       sync.Mutex
	got      []*xmlstream.Element
	pres     *xmlstream.Element
	prio     int
	closed   string
	interest bool
}

func (f *fakeSess) ID() string                       { return f.id }
func (f *fakeSess) JID() jid.JID                     { return f.j }
func (f *fakeSess) Send(st *xmlstream.Element)       { f.mu.Lock(); f.got = append(f.got, st); f.mu.Unlock() }
func (f *fakeSess) Presence() *xmlstream.Element     { return f.pres }
func (f *fakeSess) SetPresence(p *xmlstream.Element) { f.pres = p }
func (f *fakeSess) Priority() int                    { return f.prio }
func (f *fakeSess) Interested() bool                 { return f.interest }
func (f *fakeSess) SetInterested()                   { f.interest = true }
func (f *fakeSess) Value(any) any                    { return nil }
func (f *fakeSess) SetValue(any, any)                {}
func (f *fakeSess) Close(c, _ string)                { f.mu.Lock(); f.closed = c; f.mu.Unlock() }
func (f *fakeSess) n() int                           { f.mu.Lock(); defer f.mu.Unlock(); return len(f.got) }

var n int

func sess(full string, prio int, avail bool) *fakeSess {
	n++
	s := &fakeSess{id: strconv.Itoa(n), j: jid.MustParse(full), prio: prio}
	if avail {
		s.pres = xmlstream.New(xmlstream.NSClient, "presence")
	}
	return s
}

func setup(t *testing.T) (*Router, *memstore.Store) {
	ctx := context.Background()
	st := memstore.New("n1")
	r := New(Config{Domain: "localhost", Node: "n1", Store: st})
	a := accounts.New(st, "localhost", nil)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r.SetAccounts(a)
	for _, u := range []string{"alice", "bob"} {
		if err := a.Create(ctx, u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	return r, st
}

func msg(from, to, typ string) *xmlstream.Element {
	m := xmlstream.New(xmlstream.NSClient, "message", "from", from, "to", to)
	if typ != "" {
		m.SetAttr("type", typ)
	}
	return m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("hi"))
}

func lastErr(s *fakeSess) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) == 0 {
		return ""
	}
	e := s.got[len(s.got)-1].Child("", "error")
	if e == nil {
		return ""
	}
	return e.FirstChild().Local
}

func TestDeliveryByPriority(t *testing.T) {
	ctx := context.Background()
	r, _ := setup(t)
	hi := sess("bob@localhost/hi", 5, true)
	lo := sess("bob@localhost/lo", 1, true)
	neg := sess("bob@localhost/neg", -1, true)
	un := sess("bob@localhost/unavail", 10, false)
	a := sess("alice@localhost/a", 0, true)
	for _, s := range []*fakeSess{hi, lo, neg, un, a} {
		r.Bind(ctx, s)
	}
	r.Route(ctx, msg("alice@localhost/a", "bob@localhost", "chat"))
	if hi.n() != 1 || lo.n() != 0 || neg.n() != 0 || un.n() != 0 {
		t.Fatalf("bare chat: hi=%d lo=%d neg=%d un=%d", hi.n(), lo.n(), neg.n(), un.n())
	}
	r.Route(ctx, msg("alice@localhost/a", "bob@localhost/lo", "chat"))
	r.Route(ctx, msg("alice@localhost/a", "bob@localhost/neg", "chat"))
	if lo.n() != 1 || neg.n() != 1 {
		t.Fatal("full JID delivery")
	}
	r.Route(ctx, msg("alice@localhost/a", "bob@localhost", "headline"))
	if hi.n() != 2 || lo.n() != 2 || neg.n() != 1 {
		t.Fatal("headline to all non-negative")
	}
	// Equal highest priority: both get it.
	lo.prio = 5
	r.Route(ctx, msg("alice@localhost/a", "bob@localhost", ""))
	if hi.n() != 3 || lo.n() != 3 {
		t.Fatal("tie")
	}
	// Full JID of a gone resource falls back to the bare JID for chat.
	r.Route(ctx, msg("alice@localhost/a", "bob@localhost/gone", "chat"))
	if hi.n() != 4 {
		t.Fatal("fallback to bare")
	}
	// Only negative priority: no delivery, no offline module -> service-unavailable.
	r.Unbind(ctx, hi)
	r.Unbind(ctx, lo)
	r.Route(ctx, msg("alice@localhost/a", "bob@localhost", "chat"))
	if neg.n() != 1 || lastErr(a) != "service-unavailable" {
		t.Fatalf("negative priority got a bare message or no bounce: %d %q", neg.n(), lastErr(a))
	}
}

func TestUnknownUserAndServer(t *testing.T) {
	ctx := context.Background()
	r, st := setup(t)
	a := sess("alice@localhost/a", 0, true)
	r.Bind(ctx, a)
	r.Route(ctx, msg("alice@localhost/a", "nobody@localhost", "chat"))
	if lastErr(a) != "service-unavailable" {
		t.Fatal("message to unknown user")
	}
	before := a.n()
	r.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "from", "alice@localhost/a", "to", "nobody@localhost", "type", "subscribe"))
	if a.n() != before {
		t.Fatal("presence to unknown user must be ignored")
	}
	iq := xmlstream.New(xmlstream.NSClient, "iq", "from", "alice@localhost/a", "to", "localhost", "type", "get", "id", "1")
	iq.Append(xmlstream.New("urn:unknown", "q"))
	r.Route(ctx, iq)
	if lastErr(a) != "service-unavailable" {
		t.Fatal("unknown namespace")
	}
	r.HandleIQ("urn:known", func(ctx context.Context, h module.Host, iq *module.IQ) {
		if iq.Session != a {
			t.Error("IQ session not set")
		}
		h.Route(ctx, module.Result(iq.Stanza))
	})
	iq2 := iq.Copy()
	iq2.Nodes = nil
	iq2.Append(xmlstream.New("urn:known", "q"))
	r.Route(ctx, iq2)
	if got := a.got[len(a.got)-1]; got.Attr("type") != "result" {
		t.Fatal("handler result not routed")
	}
	before = a.n()
	res := xmlstream.New(xmlstream.NSClient, "iq", "from", "alice@localhost/a", "to", "localhost", "type", "result", "id", "1")
	r.Route(ctx, res)
	if a.n() != before {
		t.Fatal("result IQ to server must be dropped")
	}
	r.Route(ctx, msg("alice@localhost/a", "x@elsewhere.example", "chat"))
	if lastErr(a) != "remote-server-not-found" {
		t.Fatal("remote domain")
	}
	// Storage unavailable while checking an account -> a wait error, not a crash.
	st.SetFail(storage.ErrUnavailable)
	r.Route(ctx, msg("alice@localhost/a", "bob@localhost", "chat"))
}

func TestConflictReplacesOlder(t *testing.T) {
	ctx := context.Background()
	r, st := setup(t)
	old := sess("alice@localhost/r", 0, true)
	nw := sess("alice@localhost/r", 0, true)
	r.Bind(ctx, old)
	r.Bind(ctx, nw)
	if old.closed != "conflict" || r.Session(jid.MustParse("alice@localhost/r")) != nw {
		t.Fatal("conflict")
	}
	if r.Unbind(ctx, old) {
		t.Fatal("old session unbound the new one")
	}
	if rows := st.Ephemeral(SessionTable).Get("alice@localhost/r"); len(rows) != 1 {
		t.Fatal("ephemeral session row missing")
	}
	if !r.Unbind(ctx, nw) || r.Count() != 0 || len(st.Ephemeral(SessionTable).Get("alice@localhost/r")) != 0 {
		t.Fatal("unbind")
	}
}

func TestHooksOrderAndStop(t *testing.T) {
	r, _ := setup(t)
	var order []int
	r.Hook(module.EvOffline, 10, func(context.Context, module.Host, *module.EventData) bool { order = append(order, 10); return true })
	r.Hook(module.EvOffline, 1, func(context.Context, module.Host, *module.EventData) bool { order = append(order, 1); return false })
	r.Hook(module.EvOffline, 20, func(context.Context, module.Host, *module.EventData) bool { order = append(order, 20); return false })
	r.Route(context.Background(), msg("alice@localhost/a", "bob@localhost", "chat"))
	if len(order) != 2 || order[0] != 1 || order[1] != 10 {
		t.Fatal(order)
	}
}

// The prepared-JID cache answers exactly as jid.Parse, keeps no more than its bound
// and caches no error.
func TestJIDCache(t *testing.T) {
	var c jidCache
	for i := 0; i < 3*jidCacheSize; i++ {
		for _, s := range []string{"Alice@Example.COM/r" + strconv.Itoa(i%7), "bob@localhost", "@@bad", "localhost"} {
			got, gerr := c.parse(s)
			want, werr := jid.Parse(s)
			if got != want || (gerr == nil) != (werr == nil) {
				t.Fatalf("parse(%q) = %v, %v; jid.Parse: %v, %v", s, got, gerr, want, werr)
			}
		}
		c.parse("u" + strconv.Itoa(i) + "@localhost")
		if len(c.m) > jidCacheSize {
			t.Fatalf("cache holds %d entries", len(c.m))
		}
	}
	if _, ok := c.m["@@bad"]; ok {
		t.Fatal("an invalid JID was cached")
	}
}

func TestDomainRouting(t *testing.T) {
	ctx := context.Background()
	r, _ := setup(t)
	var _ module.DomainRouter = r
	a := sess("alice@localhost/a", 0, true)
	r.Bind(ctx, a)
	type got struct {
		st       *xmlstream.Element
		from, to jid.JID
	}
	var muc, s2s []got
	r.HandleDomain("conference.localhost", func(_ context.Context, st *xmlstream.Element, from, to jid.JID) {
		muc = append(muc, got{st, from, to})
	})
	sent := msg("alice@localhost/a", "room@conference.localhost", "groupchat")
	r.Route(ctx, sent)
	if len(muc) != 1 || muc[0].to.String() != "room@conference.localhost" || muc[0].from.String() != "alice@localhost/a" {
		t.Fatalf("stanza to the MUC domain: %+v", muc)
	}
	if muc[0].st == sent {
		t.Fatal("Route handed the caller's stanza to the handler (it must get a copy)")
	}
	// Other domains still bounce until a remote route is set.
	r.Route(ctx, msg("alice@localhost/a", "x@elsewhere.example", "chat"))
	if lastErr(a) != "remote-server-not-found" {
		t.Fatal("remote domain without a remote route")
	}
	r.SetRemoteRoute(func(_ context.Context, st *xmlstream.Element, from, to jid.JID) {
		s2s = append(s2s, got{st, from, to})
	})
	r.Route(ctx, msg("alice@localhost/a", "x@elsewhere.example", "chat"))
	r.Route(ctx, msg("alice@localhost/a", "conference.localhost", "chat"))
	if len(s2s) != 1 || s2s[0].to.Domain != "elsewhere.example" || len(muc) != 2 {
		t.Fatalf("remote route got %d, MUC domain %d (want 1, 2)", len(s2s), len(muc))
	}
	if d := r.ServedDomains(); len(d) != 1 || d[0] != "conference.localhost" {
		t.Fatalf("served domains %v", d)
	}
	r.HandleDomain("conference.localhost", nil)
	r.Route(ctx, msg("alice@localhost/a", "room@conference.localhost", "chat"))
	if len(muc) != 2 || len(s2s) != 2 {
		t.Fatal("a removed domain handler still receives stanzas (or they did not fall to the remote route)")
	}
}

// TestHookWhileRunning: a hook registered while another goroutine runs the
// event's hooks neither changes the list that run is reading (the race detector
// watches) nor is lost, and the order stays by priority.
func TestHookWhileRunning(t *testing.T) {
	r, _ := setup(t)
	ctx := context.Background()
	var order []int
	r.Hook(module.EvOffline, 50, func(context.Context, module.Host, *module.EventData) bool { return false })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2000 {
			r.Run(ctx, module.EvOffline, &module.EventData{})
		}
	}()
	for i := range 20 {
		r.Hook(module.EvOffline, 100-i, func(context.Context, module.Host, *module.EventData) bool { return false })
	}
	<-done
	for i := range 3 {
		r.Hook(module.EvC2SIn, 3-i, func(context.Context, module.Host, *module.EventData) bool {
			order = append(order, 3-i)
			return false
		})
	}
	r.Run(ctx, module.EvC2SIn, &module.EventData{})
	if !slices.Equal(order, []int{1, 2, 3}) {
		t.Fatalf("hooks ran in order %v, want by priority [1 2 3]", order)
	}
	calls := 0
	r.Hook(module.EvOffline, 1000, func(context.Context, module.Host, *module.EventData) bool {
		calls++
		return false
	})
	for i := range 21 {
		r.Hook(module.EvOffline, 999-i, func(context.Context, module.Host, *module.EventData) bool {
			calls++
			return false
		})
	}
	r.Run(ctx, module.EvOffline, &module.EventData{})
	if calls != 22 {
		t.Fatalf("%d of 22 EvOffline hooks ran", calls)
	}
}

// TestDeliveryEventsStartFresh: the EventData of one delivery (reused by the
// router) carries nothing of the previous one: EvDeliver sees no targets and
// its own To, EvDelivered the one session the stanza went to.
func TestDeliveryEventsStartFresh(t *testing.T) {
	ctx := context.Background()
	r, _ := setup(t)
	a, b := sess("alice@localhost/a", 0, true), sess("bob@localhost/b", 0, true)
	r.Bind(ctx, a)
	r.Bind(ctx, b)
	var seen []string
	r.Hook(module.EvDeliver, 0, func(_ context.Context, _ module.Host, ev *module.EventData) bool {
		seen = append(seen, fmt.Sprintf("deliver to=%s targets=%d session=%v", ev.To, len(ev.Targets), ev.Session != nil))
		return false
	})
	r.Hook(module.EvDelivered, 0, func(_ context.Context, _ module.Host, ev *module.EventData) bool {
		seen = append(seen, fmt.Sprintf("delivered to=%s targets=%s", ev.To, ev.Targets[0].JID()))
		return false
	})
	for range 2 {
		r.Route(ctx, msg("bob@localhost/b", "alice@localhost/a", "chat"))
		r.Route(ctx, msg("alice@localhost/a", "bob@localhost/b", "chat"))
	}
	want := []string{
		"deliver to=alice@localhost/a targets=0 session=false", "delivered to=alice@localhost/a targets=alice@localhost/a",
		"deliver to=bob@localhost/b targets=0 session=false", "delivered to=bob@localhost/b targets=bob@localhost/b",
	}
	want = append(want, want...)
	if !slices.Equal(seen, want) {
		t.Fatalf("hooks saw\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
	if a.n() != 2 || b.n() != 2 {
		t.Fatalf("alice got %d, bob %d messages; want 2 each", a.n(), b.n())
	}
}

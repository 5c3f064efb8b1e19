package carbons

import (
	"context"
	"testing"

	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

func setIQ(s *modtest.Session, h *modtest.Host, what string) {
	h.Send(s, xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "id", what).Append(xmlstream.New(NS, what)))
	s.Take()
}

// TestEnabledCount: the per-account count follows enable, disable (each counted
// once however often sent) and the session's end (a late enable of a closed session
// is not counted), and copies follow it.
func TestEnabledCount(t *testing.T) {
	h := modtest.NewHost("example.org", "alice", "bob")
	m := New()
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a1, a2, a3 := h.Connect("alice@example.org/1"), h.Connect("alice@example.org/2"), h.Connect("alice@example.org/3")
	b := h.Connect("bob@example.org/b")
	check := func(what string, alice int, total int64) {
		t.Helper()
		m.mu.RLock()
		n := m.on["alice"]
		m.mu.RUnlock()
		if n != alice || m.total.Load() != total || m.anyEnabled("alice") != (alice > 0) || m.anyEnabled("bob") {
			t.Fatalf("%s: alice %d (want %d), total %d (want %d)", what, n, alice, m.total.Load(), total)
		}
	}
	check("start", 0, 0)
	setIQ(a1, h, "enable")
	setIQ(a1, h, "enable")
	check("enable twice", 1, 1)
	setIQ(a2, h, "enable")
	check("second session", 2, 2)
	setIQ(a1, h, "disable")
	setIQ(a1, h, "disable")
	check("disable twice", 1, 1)
	// a2 (enabled) gets a copy of bob's message to a3.
	h.Send(b, chat("", "alice@example.org/3", "x"))
	if n := len(a3.Take()); n != 1 {
		t.Fatalf("a3 got %d", n)
	}
	if n := len(a2.Take()); n != 1 {
		t.Fatalf("a2 got %d copies", n)
	}
	h.Disconnect(a2)
	check("enabled session closed", 0, 0)
	h.Fire(context.Background(), module.EvSessionClosed, &module.EventData{From: a2.JID(), Session: a2})
	check("closed twice", 0, 0)
	setIQ(a2, h, "enable") // an IQ racing the end of its session
	check("enable after close", 0, 0)
	h.Disconnect(a1)
	check("disabled session closed", 0, 0)
	h.Send(b, chat("", "alice@example.org/3", "y"))
	if len(a1.Take())+len(a2.Take()) != 0 {
		t.Fatal("copy to a closed or disabled session")
	}
}

// TestNoCarbonsNoAlloc: for accounts without a carbons-enabled session, the hooks
// allocate nothing (another account's enabled session does not change that).
func TestNoCarbonsNoAlloc(t *testing.T) {
	h, m, a, b, msg, ev := noCarbonsSetup(t)
	c := h.Connect("carol@example.org/c")
	setIQ(c, h, "enable")
	if n := testing.AllocsPerRun(100, func() {
		m.sent(context.Background(), h, &module.EventData{Stanza: msg, From: a.JID(), To: b.JID(), Session: a})
		m.received(context.Background(), h, ev)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

func noCarbonsSetup(t testing.TB) (*modtest.Host, *Module, *modtest.Session, *modtest.Session, *xmlstream.Element, *module.EventData) {
	h := modtest.NewHost("example.org", "alice", "bob", "carol")
	m := New()
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a, b := h.Connect("alice@example.org/a"), h.Connect("bob@example.org/b")
	msg := chat("alice@example.org/a", "bob@example.org/b", "hello")
	ev := &module.EventData{Stanza: msg, From: a.JID(), To: b.JID(), Targets: []module.Session{b}}
	return h, m, a, b, msg, ev
}

// BenchmarkHooksNoCarbons: sent + received for one chat message between accounts
// that never enabled carbons (the chat benchmark's case).
func BenchmarkHooksNoCarbons(b *testing.B) {
	h, m, a, bs, msg, ev := noCarbonsSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		m.sent(context.Background(), h, &module.EventData{Stanza: msg, From: a.JID(), To: bs.JID(), Session: a})
		m.received(context.Background(), h, ev)
	}
}

// TestNoSentCopyToAddressee: a message from one resource to another of the same
// account gets no <sent/> copy at the addressee, however the client spelled its
// 'to' (the comparison used the raw attribute: "ALICE@Example.org/2" got both the
// message and a copy).
func TestNoSentCopyToAddressee(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	if err := New().Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	a1, a2 := h.Connect("alice@example.org/1"), h.Connect("alice@example.org/2")
	for _, s := range []*modtest.Session{a1, a2} {
		s.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
	}
	enable(t, h, a2)
	h.Send(a1, chat("", "ALICE@Example.org/2", "self"))
	got := a2.Take()
	if len(got) != 1 || got[0].Child(NS, "sent") != nil {
		t.Fatalf("addressee got %d stanzas (a carbon copy of its own message?)", len(got))
	}
}

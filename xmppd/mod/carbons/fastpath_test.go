package carbons

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"xedge/xmppd/jid"
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

// TestEnabledCountConcurrent: enables, disables and session ends racing each other
// leave the count equal to the open sessions that have carbons on.
func TestEnabledCountConcurrent(t *testing.T) {
	h := modtest.NewHost("example.org", "alice")
	m := New()
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	const n = 16
	var ss []*modtest.Session
	for i := range n {
		ss = append(ss, h.Connect(fmt.Sprintf("alice@example.org/%d", i)))
	}
	var wg sync.WaitGroup
	for i, s := range ss {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range 50 {
				on := (i+j)%3 != 0
				m.set(s, on)
			}
		}()
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				h.Disconnect(s)
			}
		}()
	}
	wg.Wait()
	want := 0
	for i, s := range ss {
		if i%2 != 0 && Enabled(s) {
			want++
		}
	}
	m.mu.RLock()
	got := m.on["alice"]
	m.mu.RUnlock()
	if got != want || m.total.Load() != int64(want) {
		t.Fatalf("count %d, total %d; want %d", got, m.total.Load(), want)
	}
}

// flagCounter is a core that mirrors sessions to other nodes (the flagger a
// cluster's router is) and counts how often the hooks ask it.
type flagCounter struct {
	*modtest.Host
	asked int
}

func (f *flagCounter) SetSessionFlag(module.Session, string, bool) {}

func (f *flagCounter) AnyRemoteFlag(jid.JID, string) bool { f.asked++; return false }

// TestGroupchatNotLookedUp: a message carbons never copy (a room's groupchat
// copy, a headline, an error) does not make the hooks look the account up in
// the cluster's session table: Eligible is asked first. A MUC fan-out calls the
// received hook once per occupant, and the look-up was ~5.5% of xmppd's CPU in
// the benchmark's 200-occupant room. A chat message still is looked up.
func TestGroupchatNotLookedUp(t *testing.T) {
	h, m, a, b, _, _ := noCarbonsSetup(t)
	f := &flagCounter{Host: h}
	for _, typ := range []string{"groupchat", "headline", "error"} {
		msg := xmlstream.New(xmlstream.NSClient, "message", "type", typ, "from", "room@conference.example.org/n", "to", b.JID().String())
		msg.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("x"))
		m.received(context.Background(), f, &module.EventData{Stanza: msg, To: b.JID(), Targets: []module.Session{b}})
		m.sent(context.Background(), f, &module.EventData{Stanza: msg, From: a.JID(), To: b.JID(), Session: a})
		if f.asked != 0 {
			t.Fatalf("%s: the cluster's session table asked %d times", typ, f.asked)
		}
	}
	msg := chat("alice@example.org/a", "bob@example.org/b", "hello")
	m.received(context.Background(), f, &module.EventData{Stanza: msg, To: b.JID(), Targets: []module.Session{b}})
	if f.asked != 1 {
		t.Fatalf("chat: the cluster's session table asked %d times, want 1", f.asked)
	}
}

// BenchmarkHooksGroupchat: sent + received for one groupchat copy (a MUC
// fan-out's per-occupant case), no carbons anywhere, on a clustered core.
func BenchmarkHooksGroupchat(b *testing.B) {
	h, m, a, bs, _, _ := noCarbonsSetup(b)
	f := &flagCounter{Host: h}
	msg := xmlstream.New(xmlstream.NSClient, "message", "type", "groupchat", "from", "room@conference.example.org/n", "to", bs.JID().String())
	msg.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText("x"))
	ev := &module.EventData{Stanza: msg, To: bs.JID(), Targets: []module.Session{bs}}
	sev := &module.EventData{Stanza: msg, From: a.JID(), To: bs.JID(), Session: a}
	b.ReportAllocs()
	for b.Loop() {
		m.sent(context.Background(), f, sev)
		m.received(context.Background(), f, ev)
	}
}

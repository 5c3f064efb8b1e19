package roster

import (
	"context"
	"sync"
	"testing"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// lagHost is a second node of the cluster: it shares node 1's sessions, routing
// and accounts, reads the store through a lagging view, and keeps its module's
// hooks and IQ handlers to itself (stanzas reach it through deliver and send).
type lagHost struct {
	*modtest.Host
	st    *modtest.LagStore
	mu    sync.Mutex
	hooks map[module.Event][]module.HookFunc
}

func (h *lagHost) Store() storage.Store              { return h.st }
func (h *lagHost) Clustered() bool                   { return true }
func (h *lagHost) HandleIQ(string, module.IQHandler) {}
func (h *lagHost) Hook(ev module.Event, _ int, fn module.HookFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hooks[ev] = append(h.hooks[ev], fn)
}

func (h *lagHost) fire(ev module.Event, d *module.EventData) {
	h.mu.Lock()
	hs := append([]module.HookFunc(nil), h.hooks[ev]...)
	h.mu.Unlock()
	for _, fn := range hs {
		if fn(context.Background(), h, d) {
			return
		}
	}
}

// deliver hands node 2 a stanza addressed to a local user (from s2s or another
// local user).
func (h *lagHost) deliver(st *xmlstream.Element) {
	from, _ := jid.Parse(st.Attr("from"))
	to, _ := jid.Parse(st.Attr("to"))
	h.fire(module.EvDeliver, &module.EventData{Stanza: st, From: from, To: to})
}

// send plays st as sent by session s connected to node 2.
func (h *lagHost) send(s *modtest.Session, st *xmlstream.Element) {
	st.SetAttr("from", s.JID().String())
	to, _ := jid.Parse(st.Attr("to"))
	h.fire(module.EvC2SIn, &module.EventData{Stanza: st, From: s.JID(), To: to, Session: s})
}

// lagNode starts node 2's roster module beside node 1's (h, m).
func lagNode(t *testing.T, h *modtest.Host) (*lagHost, *modtest.LagStore) {
	t.Helper()
	ls := &modtest.LagStore{Store: h.Store(), Lagging: []string{TableItems, TablePending, TableVersion}}
	h2 := &lagHost{Host: h, st: ls, hooks: map[module.Event][]module.HookFunc{}}
	if err := New().Start(context.Background(), h2); err != nil {
		t.Fatal(err)
	}
	ls.CatchUp()
	return h2, ls
}

func presFrom(typ, from, to string) *xmlstream.Element {
	return xmlstream.New(xmlstream.NSClient, "presence", "type", typ, "from", from, "to", to)
}

// A subscription stanza that reaches node 2 right after the write it answers
// was committed through node 1, before node 2 applied it, is decided again
// once node 2 caught up: it is not dropped for lack of the pending state (the
// s2s run with node 2 first in the SRV records lost an ejabberd peer's
// subscribed this way) and a pre-approval made through node 1 is honoured.
func TestSubscriptionOnLaggingNode(t *testing.T) {
	const bob = "bob@remote.example"
	for _, tc := range []struct {
		name string
		// first runs through node 1; then node 2 handles the second stanza.
		first  func(h *modtest.Host, a *modtest.Session)
		second func(h2 *lagHost, a *modtest.Session)
		// alice's item afterwards (sub, ask, approved), what she gets, what goes to bob.
		sub       string
		ask, appr bool
		toAlice   string
		toBob     string
	}{
		{
			name:    "subscribed answers alice's subscribe",
			first:   func(h *modtest.Host, a *modtest.Session) { h.Send(a, pres("subscribe", bob)) },
			second:  func(h2 *lagHost, _ *modtest.Session) { h2.deliver(presFrom("subscribed", bob, "alice@example.org")) },
			sub:     SubTo,
			toAlice: "subscribed",
		},
		{
			name:    "unsubscribed refuses alice's subscribe",
			first:   func(h *modtest.Host, a *modtest.Session) { h.Send(a, pres("subscribe", bob)) },
			second:  func(h2 *lagHost, _ *modtest.Session) { h2.deliver(presFrom("unsubscribed", bob, "alice@example.org")) },
			sub:     SubNone,
			toAlice: "unsubscribed",
		},
		{
			name: "unsubscribe withdraws bob's pending request",
			first: func(h *modtest.Host, _ *modtest.Session) {
				h.Route(context.Background(), presFrom("subscribe", bob, "alice@example.org"))
			},
			second:  func(h2 *lagHost, _ *modtest.Session) { h2.deliver(presFrom("unsubscribe", bob, "alice@example.org")) },
			toAlice: "unsubscribe", // bob's request was not in alice's roster
		},
		{
			name:   "subscribe after alice's pre-approval",
			first:  func(h *modtest.Host, a *modtest.Session) { h.Send(a, pres("subscribed", bob)) },
			second: func(h2 *lagHost, _ *modtest.Session) { h2.deliver(presFrom("subscribe", bob, "alice@example.org")) },
			sub:    SubFrom,
			toBob:  "subscribed",
		},
		{
			name: "alice approves bob's pending request",
			first: func(h *modtest.Host, _ *modtest.Session) {
				h.Route(context.Background(), presFrom("subscribe", bob, "alice@example.org"))
			},
			second: func(h2 *lagHost, a *modtest.Session) { h2.send(a, pres("subscribed", bob)) },
			sub:    SubFrom,
			toBob:  "subscribed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, m := setup(t, "alice")
			h2, _ := lagNode(t, h)
			a := h.Connect("alice@example.org/a")
			a.SetInterested()
			a.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
			tc.first(h, a)
			a.Take()
			h.Routed()
			tc.second(h2, a)

			it, ok := m.Get("alice", bob)
			if tc.sub == "" {
				if ok {
					t.Fatalf("alice's item: %+v, want none", it)
				}
			} else if !ok || it.Sub != tc.sub || it.Ask != tc.ask || it.Approved != tc.appr {
				t.Fatalf("alice's item: %+v (in roster %v), want sub %s ask %v approved %v", it, ok, tc.sub, tc.ask, tc.appr)
			}
			got := a.Take()
			if tc.toAlice != "" {
				if n := len(modtest.Find(got, "presence", tc.toAlice)); n != 1 {
					t.Fatalf("alice got %d %s presences, want 1", n, tc.toAlice)
				}
			} else if n := len(modtest.Find(got, "presence", "subscribe")); n != 0 {
				t.Fatal("alice was asked although she had approved")
			}
			var sent []string
			for _, st := range h.Routed() {
				if st.Local == "presence" && st.Attr("to") == bob {
					sent = append(sent, st.Attr("type"))
				}
			}
			if tc.toBob != "" && (len(sent) == 0 || sent[0] != tc.toBob) {
				t.Fatalf("to bob: %q, want %s first", sent, tc.toBob)
			}
		})
	}
}

// alice's request reaches bob's account through node 1 just as bob's session
// on node 2 sends its initial presence: node 1 found no session of bob taking
// requests (his presence was not there yet), and node 2's redelivery scanned
// before it applied the stored request. Node 2 looks again a moment later and
// bob gets the request once — the look catches up first, so node 2 need not
// have applied the write by then; a request node 1 delivered to him itself is
// not sent again. Before, it reached bob at his next login.
func TestRequestStoredWhileSessionComesUpOnAnotherNode(t *testing.T) {
	defer func(d time.Duration) { lateRedeliverDelay = d }(lateRedeliverDelay)
	lateRedeliverDelay = 20 * time.Millisecond
	for _, seenByNode1 := range []bool{false, true} {
		h, _ := setup(t, "alice", "bob")
		h2, _ := lagNode(t, h) // node 2 applies the stored request only when its late look catches up
		b := h.Connect("bob@example.org/r")
		if seenByNode1 {
			h2.send(b, xmlstream.New(xmlstream.NSClient, "presence"))
			b.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
		}
		h.Route(context.Background(), presFrom("subscribe", "alice@example.org", "bob@example.org"))
		if !seenByNode1 {
			h2.send(b, xmlstream.New(xmlstream.NSClient, "presence"))
			b.SetPresence(xmlstream.New(xmlstream.NSClient, "presence"))
		}
		var got []*xmlstream.Element
		deadline := time.Now().Add(5 * time.Second)
		for len(got) == 0 && time.Now().Before(deadline) {
			got = append(got, modtest.Find(b.Take(), "presence", "subscribe")...)
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(10 * lateRedeliverDelay) // nothing more comes
		got = append(got, modtest.Find(b.Take(), "presence", "subscribe")...)
		if len(got) != 1 || got[0].Attr("from") != "alice@example.org" {
			t.Fatalf("seen by node 1 %v: bob got %d requests, want alice's once: %v", seenByNode1, len(got), got)
		}
	}
}

package storm

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modtest"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// sess records Close.
type sess struct {
	*modtest.Session
	mu     sync.Mutex
	closed []string
}

func (s *sess) Close(cond, _ string) { s.mu.Lock(); s.closed = append(s.closed, cond); s.mu.Unlock() }
func (s *sess) closes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.closed...)
}

type host struct {
	*modtest.Host
	ss []*sess
}

func (h *host) Sessions(bare jid.JID) []module.Session {
	var out []module.Session
	for _, s := range h.ss {
		if s.JID().Bare() == bare {
			out = append(out, s)
		}
	}
	return out
}

func setup(t *testing.T, c Config) (*Module, *host, *time.Time) {
	h := &host{Host: modtest.NewHost("example.com", "alice", "bob")}
	m := New()
	m.Configure(c)
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	if err := m.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	return m, h, &now
}

func (h *host) connect(full string) *sess {
	s := &sess{Session: h.Host.Connect(full)}
	h.ss = append(h.ss, s)
	return s
}

func presence(show string) *xmlstream.Element {
	p := xmlstream.New(xmlstream.NSClient, "presence")
	p.Append(xmlstream.New(xmlstream.NSClient, "show").AppendText(show))
	return p
}

func TestPresenceStorm(t *testing.T) {
	m, h, now := setup(t, Config{PresenceMax: 10, PresenceWindow: time.Minute})
	a, b := h.connect("alice@example.com/a"), h.connect("bob@example.com/b")
	in := func(s *sess, p *xmlstream.Element, id int) bool {
		p.SetAttr("id", fmt.Sprint(id))
		return m.onIn(context.Background(), h, &module.EventData{Stanza: p, From: s.JID(), Session: s})
	}
	// Ten identical presences (ids differ) pass; different ones in between reset the run.
	for i := 0; i < 10; i++ {
		if in(a, presence("away"), i) {
			t.Fatalf("presence %d consumed", i)
		}
		in(b, presence(fmt.Sprint(i)), i) // bob changes his every time
	}
	// Bob: many identical ones spread over more than the window are fine.
	for i := 0; i < 30; i++ {
		*now = now.Add(7 * time.Second)
		in(b, presence("chat"), i)
	}
	if len(b.closes()) != 0 {
		t.Fatalf("bob closed: %v", b.closes())
	}
	// The eleventh identical presence within the window: closed with
	// policy-violation, once, and nothing more passes.
	a2 := h.connect("alice@example.com/c")
	for i := 0; i < 10; i++ {
		if in(a2, presence("dnd"), i) {
			t.Fatalf("presence %d consumed", i)
		}
	}
	if !in(a2, presence("dnd"), 11) {
		t.Fatal("the 11th identical presence passed")
	}
	in(a2, presence("dnd"), 12)
	if got := a2.closes(); len(got) != 1 || got[0] != "policy-violation" {
		t.Fatalf("closes %v", got)
	}
	// A different presence breaks a run.
	a3 := h.connect("alice@example.com/d")
	for i := 0; i < 30; i++ {
		in(a3, presence("xa"), i)
		in(a3, presence("away"), i)
	}
	if len(a3.closes()) != 0 {
		t.Fatal("alternating presences killed")
	}
}

func TestMaxUserSessions(t *testing.T) {
	m, h, now := setup(t, Config{MaxUserSessions: 2})
	bind := func(s *sess) {
		*now = now.Add(time.Second)
		m.onBound(context.Background(), h, &module.EventData{Session: s, From: s.JID()})
	}
	s1 := h.connect("alice@example.com/1")
	bind(s1)
	s2 := h.connect("alice@example.com/2")
	bind(s2)
	bob := h.connect("bob@example.com/1")
	bind(bob)
	if len(s1.closes())+len(s2.closes())+len(bob.closes()) != 0 {
		t.Fatal("closed within the cap")
	}
	s3 := h.connect("alice@example.com/3")
	bind(s3)
	if got := s1.closes(); len(got) != 1 || got[0] != "conflict" {
		t.Fatalf("oldest: %v", got)
	}
	if len(s2.closes())+len(s3.closes())+len(bob.closes()) != 0 {
		t.Fatal("a session other than the oldest closed")
	}
}

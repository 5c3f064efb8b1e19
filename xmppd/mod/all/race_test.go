package all_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/all"
	"xedge/xmppd/mod/offline"
	"xedge/xmppd/module"
	"xedge/xmppd/router"
	"xedge/xmppd/xmlstream"
)

// accounts is a fixed set of users.
type accounts map[string]bool

func (a accounts) Exists(_ context.Context, u string) (bool, error) { return a[u], nil }
func (accounts) Create(context.Context, string, string) error       { return nil }
func (accounts) SetPassword(context.Context, string, string) error  { return nil }
func (accounts) Delete(context.Context, string) error               { return nil }
func (a accounts) List(context.Context) ([]string, error)           { return nil, nil }

// session is a minimal c2s session: presence and priority as c2s keeps them.
type session struct {
	id   string
	j    jid.JID
	mu   sync.Mutex
	got  []*xmlstream.Element
	pres *xmlstream.Element
	prio int
	intr bool
	vals map[any]any
}

func (s *session) ID() string   { return s.id }
func (s *session) JID() jid.JID { return s.j }
func (s *session) Send(st *xmlstream.Element) {
	s.mu.Lock()
	s.got = append(s.got, st)
	s.mu.Unlock()
}
func (s *session) Presence() *xmlstream.Element { s.mu.Lock(); defer s.mu.Unlock(); return s.pres }
func (s *session) SetPresence(p *xmlstream.Element) {
	prio := 0
	if p != nil {
		if v, err := strconv.Atoi(p.ChildText("", "priority")); err == nil {
			prio = v
		}
		p = p.Copy()
	}
	s.mu.Lock()
	s.pres, s.prio = p, prio
	s.mu.Unlock()
}
func (s *session) Priority() int    { s.mu.Lock(); defer s.mu.Unlock(); return s.prio }
func (s *session) Interested() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.intr }
func (s *session) SetInterested()   { s.mu.Lock(); s.intr = true; s.mu.Unlock() }
func (s *session) Value(k any) any  { s.mu.Lock(); defer s.mu.Unlock(); return s.vals[k] }
func (s *session) SetValue(k, v any) {
	s.mu.Lock()
	if s.vals == nil {
		s.vals = map[any]any{}
	}
	s.vals[k] = v
	s.mu.Unlock()
}
func (s *session) Close(string, string) {}

// bodies returns the bodies of the chat messages s received.
func (s *session) bodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.got {
		if e.Local == "message" {
			out = append(out, e.ChildText("", "body"))
		}
	}
	return out
}

// chat is a chat message with body to bob's bare JID.
func chat(body string) *xmlstream.Element {
	m := xmlstream.New(xmlstream.NSClient, "message", "to", "bob@example.org", "type", "chat", "id", body)
	return m.Append(xmlstream.New(xmlstream.NSClient, "body").AppendText(body))
}

// send plays st as sent by s, the way c2s does: EvC2SIn, then routing.
func send(ctx context.Context, r *router.Router, s *session, st *xmlstream.Element) {
	st.SetAttr("from", s.j.String())
	to, _ := jid.Parse(st.Attr("to"))
	if r.Run(ctx, module.EvC2SIn, &module.EventData{Stanza: st, From: s.j, To: to, Session: s}) {
		return
	}
	if st.Local == "presence" && st.Attr("to") == "" {
		return
	}
	r.RouteParsed(ctx, st, s.j, to)
}

// A message to a bare JID sent while the recipient's only session sends its initial
// presence reaches that session exactly once, live or from offline storage, and is
// never left in storage while the session is available, after the message that
// was already stored (the VM-suite report:
// offline flush ran before the session became available, and a message stored in
// between stayed in storage until the next login).
func TestBareMessageRacingInitialPresence(t *testing.T) {
	ctx := context.Background()
	st := memstore.New("test")
	r := router.New(router.Config{Domain: "example.org", Node: "test", Store: st,
		Accounts: accounts{"alice": true, "bob": true}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var off *offline.Module
	for _, m := range all.Modules(all.Options{}) {
		if err := m.Start(ctx, r); err != nil {
			t.Fatal(err)
		}
		if o, ok := m.(*offline.Module); ok {
			off = o
		}
	}
	a := &session{id: "a", j: jid.MustParse("alice@example.org/a")}
	r.Bind(ctx, a)
	send(ctx, r, a, xmlstream.New(xmlstream.NSClient, "presence"))

	const rounds = 2000
	lost := 0
	for i := 0; i < rounds; i++ {
		b := &session{id: fmt.Sprint("b", i), j: jid.MustParse(fmt.Sprintf("bob@example.org/b%d", i))}
		r.Bind(ctx, b)
		body, older := fmt.Sprint("m", i), fmt.Sprint("old", i)
		// An older message waits in storage: it must come first.
		send(ctx, r, a, chat(older))
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			send(ctx, r, b, xmlstream.New(xmlstream.NSClient, "presence"))
		}()
		go func() {
			defer wg.Done()
			<-start
			send(ctx, r, a, chat(body))
		}()
		close(start)
		wg.Wait()
		got := b.bodies()
		// The delivered messages' delete runs outside the user's lock: wait
		// for it before counting what is left.
		settle, cancel := context.WithTimeout(ctx, 10*time.Second)
		off.Settle(settle)
		cancel()
		if len(got) != 2 || got[0] != older || got[1] != body || off.Count("bob") != 0 {
			lost++
			if lost <= 3 {
				t.Errorf("round %d: bob's available session got %q (want [%s %s]), %d left in offline storage", i, got, older, body, off.Count("bob"))
			}
		}
		// Empty the storage for the next round and log the session out.
		r.Unbind(ctx, b)
		off.Deliver(ctx, b)
	}
	if lost > 0 {
		t.Fatalf("%d of %d rounds lost, duplicated or reordered the messages", lost, rounds)
	}
}

// Package modtest is a small in-process module.Host, module.Session and
// storage.Store for the feature modules' unit tests: the host records routed
// stanzas, delivers stanzas routed to local users through the EvDeliver hooks to fake
// sessions, and dispatches IQs to registered handlers. It is test support only; the
// integration tests run the real xmppd.
//
// It must not import the xmppd core packages.
package modtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"sync"

	"xedge/storage"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Store is the core's in-memory store with assertion helpers.
type Store struct{ *memstore.Store }

// Keys returns the keys of a table (for assertions).
func (s *Store) Keys(table string) []string {
	t, err := s.Durable(table)
	if err != nil {
		return nil
	}
	var out []string
	_ = t.Scan("", func(k string, _ []byte) bool { out = append(out, k); return true })
	return out
}

// SetFail makes every later Apply fail with err (nil heals).
func (s *Store) SetFail(err error) { s.Store.SetFail(err) }

// Session is a fake bound session that records what it is sent.
type Session struct {
	id   string
	jid  jid.JID
	mu   sync.Mutex
	got  []*xmlstream.Element
	pres *xmlstream.Element
	prio int
	intr bool
	vals map[any]any
}

func (s *Session) ID() string   { return s.id }
func (s *Session) JID() jid.JID { return s.jid }
func (s *Session) Send(st *xmlstream.Element) {
	s.mu.Lock()
	s.got = append(s.got, st.Copy())
	s.mu.Unlock()
}
func (s *Session) Presence() *xmlstream.Element {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pres
}
func (s *Session) SetPresence(p *xmlstream.Element) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pres = p
	s.prio = 0
	if p != nil {
		s.prio = parsePrio(p.ChildText("", "priority"))
	}
}
func (s *Session) Priority() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prio
}
func (s *Session) Interested() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.intr }
func (s *Session) SetInterested()   { s.mu.Lock(); s.intr = true; s.mu.Unlock() }
func (s *Session) Value(k any) any  { s.mu.Lock(); defer s.mu.Unlock(); return s.vals[k] }
func (s *Session) SetValue(k, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vals == nil {
		s.vals = map[any]any{}
	}
	s.vals[k] = v
}
func (s *Session) Close(string, string) {}

// Take returns and forgets what the session was sent.
func (s *Session) Take() []*xmlstream.Element {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}

func parsePrio(s string) int {
	n, neg := 0, false
	for i, c := range s {
		if i == 0 && c == '-' {
			neg = true
			continue
		}
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		return -n
	}
	return n
}

type hook struct {
	prio int
	fn   module.HookFunc
}

// Host is a fake module.Host for one domain. Stanzas routed to remote domains (or
// to local users without a session that takes them) are recorded in Routed.
type Host struct {
	domain   string
	store    *Store
	accounts *Accounts
	mu       sync.Mutex
	iqs      map[string]module.IQHandler
	hooks    map[module.Event][]hook
	features []string
	sessions map[string][]*Session
	routed   []*xmlstream.Element
	offline  []*xmlstream.Element
	// violations records RouteParsed calls whose from/to disagree with the stanza.
	violations []string
	nextID     int
}

// NewHost returns a host for domain with the given existing accounts.
func NewHost(domain string, users ...string) *Host {
	a := &Accounts{users: map[string]bool{}}
	for _, u := range users {
		a.users[u] = true
	}
	return &Host{domain: domain, store: &Store{memstore.New("test")}, accounts: a, iqs: map[string]module.IQHandler{},
		hooks: map[module.Event][]hook{}, sessions: map[string][]*Session{}}
}

func (h *Host) Domain() string            { return h.domain }
func (h *Host) Store() storage.Store      { return h.store }
func (h *Host) MemStore() *Store          { return h.store }
func (h *Host) Accounts() module.Accounts { return h.accounts }
func (h *Host) Logger() *slog.Logger      { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func (h *Host) HandleIQ(ns string, fn module.IQHandler) {
	h.mu.Lock()
	h.iqs[ns] = fn
	h.mu.Unlock()
}
func (h *Host) Hook(ev module.Event, prio int, fn module.HookFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hs := append(h.hooks[ev], hook{prio, fn})
	sort.SliceStable(hs, func(i, j int) bool { return hs[i].prio < hs[j].prio })
	h.hooks[ev] = hs
}
func (h *Host) StreamFeature(module.FeatureFunc) {}
func (h *Host) DiscoFeature(ns string) {
	h.mu.Lock()
	h.features = append(h.features, ns)
	h.mu.Unlock()
}
func (h *Host) DiscoFeatures() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.features...)
}

func (h *Host) Sessions(bare jid.JID) []module.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []module.Session
	for _, s := range h.sessions[bare.Bare().String()] {
		out = append(out, s)
	}
	return out
}

func (h *Host) Session(full jid.JID) module.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.sessions[full.Bare().String()] {
		if s.jid == full {
			return s
		}
	}
	return nil
}

// Connect binds a session for full JID s (no presence yet) and fires EvSessionBound.
func (h *Host) Connect(full string) *Session {
	j := jid.MustParse(full)
	h.mu.Lock()
	h.nextID++
	s := &Session{id: full, jid: j}
	h.sessions[j.Bare().String()] = append(h.sessions[j.Bare().String()], s)
	h.mu.Unlock()
	h.Fire(context.Background(), module.EvSessionBound, &module.EventData{From: j, Session: s})
	return s
}

// Disconnect unbinds s and fires EvSessionClosed.
func (h *Host) Disconnect(s *Session) {
	h.mu.Lock()
	b := s.jid.Bare().String()
	ss := h.sessions[b]
	for i, x := range ss {
		if x == s {
			h.sessions[b] = append(ss[:i:i], ss[i+1:]...)
			break
		}
	}
	h.mu.Unlock()
	h.Fire(context.Background(), module.EvSessionClosed, &module.EventData{From: s.jid, Session: s})
}

// Fire runs the hooks of ev in priority order and reports whether one stopped it.
func (h *Host) Fire(ctx context.Context, ev module.Event, d *module.EventData) bool {
	h.mu.Lock()
	hs := append([]hook(nil), h.hooks[ev]...)
	h.mu.Unlock()
	for _, x := range hs {
		if x.fn(ctx, h, d) {
			return true
		}
	}
	return false
}

// Send plays stanza st (XML-less: an Element) as sent by session s: EvC2SIn, then
// Route if no hook consumed it. IQs without 'to' or to the own bare JID or the domain
// go to the IQ handlers.
func (h *Host) Send(s *Session, st *xmlstream.Element) {
	st.SetAttr("from", s.jid.String())
	to, _ := jid.Parse(st.Attr("to"))
	if h.Fire(context.Background(), module.EvC2SIn, &module.EventData{Stanza: st, From: s.jid, To: to, Session: s}) {
		return
	}
	if st.Local == "iq" && (to.IsZero() || to.IsBare()) && (st.Attr("type") == "get" || st.Attr("type") == "set") {
		h.dispatchIQ(context.Background(), st, s)
		return
	}
	h.Route(context.Background(), st)
}

func (h *Host) dispatchIQ(ctx context.Context, st *xmlstream.Element, s *Session) {
	from, _ := jid.Parse(st.Attr("from"))
	to, _ := jid.Parse(st.Attr("to"))
	iq := &module.IQ{Stanza: st, From: from, To: to}
	if s != nil {
		iq.Session = s
	}
	p := st.FirstChild()
	h.mu.Lock()
	var fn module.IQHandler
	if p != nil {
		fn = h.iqs[p.Space]
	}
	h.mu.Unlock()
	if fn == nil {
		h.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", ""))
		return
	}
	fn(ctx, h, iq)
}

// Route delivers to local sessions (EvDeliver, then the RFC 6121 §8 rules in their
// simplest form) or records the stanza in Routed.
func (h *Host) Route(ctx context.Context, st *xmlstream.Element) {
	to, err := jid.Parse(st.Attr("to"))
	from, _ := jid.Parse(st.Attr("from"))
	if err != nil || to.Domain != h.domain || to.Local == "" {
		h.mu.Lock()
		h.routed = append(h.routed, st.Copy())
		h.mu.Unlock()
		return
	}
	if st.Local == "iq" && to.IsBare() && (st.Attr("type") == "get" || st.Attr("type") == "set") {
		if h.Fire(ctx, module.EvDeliver, &module.EventData{Stanza: st, From: from, To: to}) {
			return
		}
		h.dispatchIQ(ctx, st, nil)
		return
	}
	if h.Fire(ctx, module.EvDeliver, &module.EventData{Stanza: st, From: from, To: to}) {
		return
	}
	ss := h.localSessions(to)
	var targets []module.Session
	for _, s := range ss {
		if !to.IsBare() && s.jid != to {
			continue
		}
		if st.Local != "iq" && to.IsBare() && s.Presence() == nil {
			continue
		}
		if st.Local == "message" && to.IsBare() && s.Priority() < 0 {
			continue
		}
		s.Send(st)
		targets = append(targets, s)
	}
	if len(targets) == 0 {
		if st.Local == "message" && !h.Fire(ctx, module.EvOffline, &module.EventData{Stanza: st, From: from, To: to}) {
			h.mu.Lock()
			h.offline = append(h.offline, st.Copy())
			h.mu.Unlock()
		}
		return
	}
	if st.Local == "message" {
		h.Fire(ctx, module.EvDelivered, &module.EventData{Stanza: st, From: from, To: to, Targets: targets})
	}
}

// RouteParsed implements module.ParsedRouter: it records a call whose from or to
// is not what the stanza's attributes say (see Violations) and routes st.
func (h *Host) RouteParsed(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	if st.Attr("from") != from.String() || st.Attr("to") != to.String() {
		h.mu.Lock()
		h.violations = append(h.violations, fmt.Sprintf("RouteParsed(from %q, to %q) of %s from=%q to=%q",
			from, to, st.Local, st.Attr("from"), st.Attr("to")))
		h.mu.Unlock()
	}
	h.Route(ctx, st)
}

// Violations returns the RouteParsed contract violations seen so far.
func (h *Host) Violations() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.violations...)
}

func (h *Host) localSessions(to jid.JID) []*Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Session(nil), h.sessions[to.Bare().String()]...)
}

// Routed returns and forgets stanzas routed off this host (remote domains).
func (h *Host) Routed() []*xmlstream.Element {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.routed
	h.routed = nil
	return out
}

// Bounced returns messages nobody took (not even EvOffline).
func (h *Host) Bounced() []*xmlstream.Element {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.offline
	h.offline = nil
	return out
}

// RemoveUser fires EvUserRemoved.
func (h *Host) RemoveUser(u string) {
	h.Fire(context.Background(), module.EvUserRemoved, &module.EventData{User: u})
}

// Accounts is a fake account list.
type Accounts struct {
	mu    sync.Mutex
	users map[string]bool
}

func (a *Accounts) Exists(_ context.Context, u string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.users[u], nil
}
func (a *Accounts) Create(_ context.Context, u, _ string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.users[u] {
		return storage.ErrConflict
	}
	a.users[u] = true
	return nil
}
func (a *Accounts) SetPassword(context.Context, string, string) error { return nil }
func (a *Accounts) Delete(_ context.Context, u string) error {
	a.mu.Lock()
	delete(a.users, u)
	a.mu.Unlock()
	return nil
}
func (a *Accounts) List(context.Context) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for u := range a.users {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, nil
}

// El builds an element: El(space, local, "attr", "v", ...) with children appended by
// the caller. It is New with a shorter name for tests.
func El(space, local string, attrs ...string) *xmlstream.Element {
	return xmlstream.New(space, local, attrs...)
}

// Find returns the stanzas in list whose name is local and whose type is typ ("" any).
func Find(list []*xmlstream.Element, local, typ string) []*xmlstream.Element {
	var out []*xmlstream.Element
	for _, st := range list {
		if st.Local == local && (typ == "" || st.Attr("type") == typ) {
			out = append(out, st)
		}
	}
	return out
}

// IQ sends an IQ with payload from s (to may be "") and returns the reply, leaving
// every other stanza s received in place; nil if there was no reply.
func (h *Host) IQ(s *Session, typ, to string, payload *xmlstream.Element) *xmlstream.Element {
	h.mu.Lock()
	h.nextID++
	id := "iq" + strconv.Itoa(h.nextID)
	h.mu.Unlock()
	iq := xmlstream.New(xmlstream.NSClient, "iq", "type", typ, "id", id, "to", to)
	if payload != nil {
		iq.Append(payload)
	}
	h.Send(s, iq)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, st := range s.got {
		if st.Local == "iq" && st.Attr("id") == id {
			s.got = append(s.got[:i:i], s.got[i+1:]...)
			return st
		}
	}
	return nil
}

// Namespaces lists the namespaces with an IQ handler.
func (h *Host) Namespaces() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for ns := range h.iqs {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}

// Cond returns the defined condition of an error stanza, or "".
func Cond(st *xmlstream.Element) string {
	if st == nil {
		return ""
	}
	if e := st.Child("", "error"); e != nil {
		for _, c := range e.Children() {
			if c.Space == module.NSStanzas {
				return c.Local
			}
		}
	}
	return ""
}

// Package presence implements RFC 6121 §4 availability presence for local sessions:
// initial presence (broadcast to contacts with a 'from' subscription, probes to
// contacts with a 'to' subscription, the user's other resources), presence updates,
// unavailable presence on explicit logout and on disconnect, directed presence and
// the unavailable presence owed to its recipients, and answers to inbound probes from
// the sessions' current presence. Subscriptions are the roster module's; this package
// reads rosters through it. Delivery of inbound presence (bare and full JIDs,
// priorities) is the core's.
//
// It keeps no tables: presence lives in the sessions (Session.SetPresence), the
// directed-presence set in a per-session value, and so does a snapshot of the
// user's subscriptions (who gets the broadcast, whom to probe) taken from the roster
// and tagged with the roster version read before it. The roster module writes a
// new, unique version in the same batch as every change of a user's items, on
// whichever node makes it, so a snapshot whose version is still the current one
// is exact; it is reloaded otherwise. A roster at the empty version is never cached.
//
// It must not import the xmppd core; of the modules it imports only roster.
package presence

import (
	"context"
	"sync"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Options configure the module.
type Options struct {
	// Blocked, when set, reports whether user (a localpart) blocks j; blocked JIDs
	// get no presence from the user (XEP-0191).
	Blocked func(user string, j jid.JID) bool
	// HasBlockList, when set, reports whether user has a block list at all; a
	// broadcast of a user without one asks Blocked nothing.
	HasBlockList func(user string) bool
	// SetPresence, when set, records a session's presence (nil: unavailable)
	// instead of Session.SetPresence; it must call Session.SetPresence. The offline
	// module's PresenceSetter flushes stored messages there, ordered with its store.
	SetPresence func(ctx context.Context, s module.Session, p *xmlstream.Element)
}

// Module is the presence module.
type Module struct {
	h  module.Host
	pr module.ParsedRouter // h, if it offers RouteParsed
	r  *roster.Module
	o  Options
}

// New returns the presence module reading rosters from r.
func New(r *roster.Module, o Options) *Module { return &Module{r: r, o: o} }

// Name implements module.Module.
func (*Module) Name() string { return "presence" }

// Start registers the hooks.
func (m *Module) Start(_ context.Context, h module.Host) error {
	m.h = h
	m.pr, _ = h.(module.ParsedRouter)
	h.Hook(module.EvC2SIn, 50, m.outbound)
	h.Hook(module.EvDeliver, 50, m.inbound)
	h.Hook(module.EvSessionClosed, 50, m.closed)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

type directedKey struct{}

// directed is the set of JIDs that received directed available presence from a
// session and are not covered by its broadcast (RFC 6121 §4.6).
type directed struct {
	mu  sync.Mutex
	set map[string]bool
}

func directedOf(s module.Session) *directed {
	if d, ok := s.Value(directedKey{}).(*directed); ok {
		return d
	}
	d := &directed{set: map[string]bool{}}
	s.SetValue(directedKey{}, d)
	return d
}

func (d *directed) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for k := range d.set {
		out = append(out, k)
	}
	d.set = map[string]bool{}
	return out
}

type rosterKey struct{}

// subscriptions is a session's snapshot of its user's roster as presence uses it.
// It is immutable once built.
type subscriptions struct {
	ver  string
	from []string // 'from' or 'both': they get the user's broadcast
	to   []string // 'to' or 'both': probed at initial presence
}

// subscriptions returns the snapshot for s's user: the cached one if the roster
// version did not change since it was taken, a fresh one otherwise. On a read
// error it logs and returns an empty, uncached snapshot.
func (m *Module) subscriptions(s module.Session) *subscriptions {
	full := s.JID()
	user := module.UserKey(m.h, full)
	if c, ok := s.Value(rosterKey{}).(*subscriptions); ok && m.r.VersionIs(user, c.ver) {
		return c
	}
	ver := m.r.Version(user) // before the items: see the package doc
	items, err := m.r.Items(user)
	if err != nil {
		m.h.Logger().Error("presence: roster read", "user", user, "err", err)
		return &subscriptions{}
	}
	c := &subscriptions{ver: ver}
	for _, it := range items {
		cj, err := jid.Parse(it.JID)
		if err != nil || cj.Bare() == full.Bare() {
			continue
		}
		if roster.HasFrom(it.Sub) {
			c.from = append(c.from, it.JID)
		}
		if roster.HasTo(it.Sub) {
			c.to = append(c.to, it.JID)
		}
	}
	if ver != roster.EmptyVersion {
		s.SetValue(rosterKey{}, c)
	}
	return c
}

func (m *Module) blocked(user string, j jid.JID) bool {
	return m.o.Blocked != nil && m.o.Blocked(user, j)
}

// mayBlock reports whether user may block anyone (false: skip blocked).
func (m *Module) mayBlock(user string) bool {
	return m.o.Blocked != nil && (m.o.HasBlockList == nil || m.o.HasBlockList(user))
}

// route hands st, a stanza nobody else holds whose from and to attributes are
// from and to, to the core: through RouteParsed when the host offers it (no
// preparation of both JIDs again, no copy for a single recipient).
func (m *Module) route(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	if m.pr != nil {
		m.pr.RouteParsed(ctx, st, from, to)
		return
	}
	m.h.Route(ctx, st)
}

func addressed(p *xmlstream.Element, from, to string) *xmlstream.Element {
	c := p.Copy()
	c.SetAttr("from", from)
	c.SetAttr("to", to)
	return c
}

// broadcast sends p (from the session's full JID) to every contact with a 'from'
// subscription and to every available resource of the user (RFC 6121 §4.2.2, §4.4.2).
func (m *Module) broadcast(ctx context.Context, s module.Session, p *xmlstream.Element, extra []string) {
	full := s.JID()
	user := module.UserKey(m.h, full)
	from := full.String()
	subs := m.subscriptions(s)
	var sent map[string]bool
	if len(extra) > 0 {
		sent = map[string]bool{}
	}
	check := m.mayBlock(user)
	for _, c := range subs.from {
		cj, err := jid.Parse(c) // a prepared string: the ASCII fast path, no allocation
		if err != nil || (check && m.blocked(user, cj)) {
			continue
		}
		if sent != nil {
			sent[c] = true
		}
		m.route(ctx, addressed(p, from, c), full, cj)
	}
	for _, e := range extra {
		if sent[e] {
			continue
		}
		if ej, err := jid.Parse(e); err == nil && !m.blocked(user, ej) {
			m.route(ctx, addressed(p, from, ej.String()), full, ej)
		}
	}
	for _, o := range m.h.Sessions(full.Bare()) {
		if o.ID() == s.ID() || o.Presence() != nil {
			o.Send(addressed(p, full.String(), o.JID().String()))
		}
	}
}

func (m *Module) setPresence(ctx context.Context, s module.Session, p *xmlstream.Element) {
	if m.o.SetPresence != nil {
		m.o.SetPresence(ctx, s, p)
	} else {
		s.SetPresence(p)
	}
	// Other nodes route by the session's published availability, priority and
	// presence (probes): republish it (a cluster's router offers this).
	if c, ok := m.h.(sessionChanger); ok {
		c.SessionChanged(s)
	}
}

// sessionChanger is implemented by a core that mirrors sessions to other nodes.
type sessionChanger interface{ SessionChanged(module.Session) }

func (m *Module) outbound(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st, s := ev.Stanza, ev.Session
	if st == nil || st.Local != "presence" || s == nil {
		return false
	}
	typ := st.Attr("type")
	if roster.IsSubscription(typ) {
		return false // the roster module's
	}
	if to := st.Attr("to"); to != "" {
		m.directedOut(s, st, typ)
		return false // the core routes directed presence
	}
	switch typ {
	case "":
		p := st.Copy()
		p.SetAttr("to", "")
		p.SetAttr("from", "")
		initial := s.Presence() == nil
		m.setPresence(ctx, s, p)
		m.broadcast(ctx, s, p, nil)
		if initial {
			m.initial(ctx, s)
		}
	case "unavailable":
		m.unavailable(ctx, s, st)
	}
	return true // probes and errors without 'to' go nowhere
}

// initial probes the contacts the user is subscribed to and shows the new resource
// the user's other available resources (RFC 6121 §4.2.2, §4.3.1).
func (m *Module) initial(ctx context.Context, s module.Session) {
	full := s.JID()
	from := full.String()
	for _, to := range m.subscriptions(s).to {
		if tj, err := jid.Parse(to); err == nil {
			m.route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "type", "probe", "from", from, "to", to), full, tj)
		}
	}
	for _, o := range m.h.Sessions(full.Bare()) {
		if o.ID() == s.ID() {
			continue
		}
		if p := o.Presence(); p != nil {
			s.Send(addressed(p, o.JID().String(), full.String()))
		}
	}
}

func (m *Module) unavailable(ctx context.Context, s module.Session, st *xmlstream.Element) {
	if s.Presence() == nil {
		return
	}
	p := xmlstream.New(xmlstream.NSClient, "presence", "type", "unavailable")
	if st != nil {
		for _, c := range st.Children() {
			if c.Local == "status" {
				p.Append(c.Copy())
			}
		}
	}
	m.setPresence(ctx, s, nil)
	m.broadcast(ctx, s, p, directedOf(s).take())
}

func (m *Module) directedOut(s module.Session, st *xmlstream.Element, typ string) {
	to, err := jid.Parse(st.Attr("to"))
	if err != nil || to.Bare() == s.JID().Bare() {
		return
	}
	d := directedOf(s)
	key := to.String()
	switch typ {
	case "":
		if s.Presence() == nil {
			return
		}
		if it, ok := m.r.Get(module.UserKey(m.h, s.JID()), to.Bare().String()); ok && roster.HasFrom(it.Sub) {
			return // covered by the broadcast (to the bare JID: every resource)
		}
		d.mu.Lock()
		d.set[key] = true
		d.mu.Unlock()
	case "unavailable":
		d.mu.Lock()
		delete(d.set, key)
		d.mu.Unlock()
	}
}

// inbound answers probes addressed to a local user (RFC 6121 §4.3.2): a contact with a
// 'from' subscription gets the current presence of each available resource.
func (m *Module) inbound(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || st.Local != "presence" || st.Attr("type") != "probe" {
		return false
	}
	if ev.To.Local == "" || ev.From.IsZero() {
		return true
	}
	user := module.UserKey(h, ev.To)
	if ev.From.Bare() != ev.To.Bare() {
		it, ok := m.r.Get(user, ev.From.Bare().String())
		if !ok || !roster.HasFrom(it.Sub) || m.blocked(user, ev.From) {
			return true // RFC 6121 §4.3.2: reveal nothing
		}
	}
	for _, s := range h.Sessions(ev.To.Bare()) {
		if !ev.To.IsBare() && s.JID() != ev.To {
			continue
		}
		if p := s.Presence(); p != nil {
			m.route(ctx, addressed(p, s.JID().String(), ev.From.String()), s.JID(), ev.From)
		}
	}
	return true
}

func (m *Module) closed(ctx context.Context, _ module.Host, ev *module.EventData) bool {
	if ev.Session != nil {
		m.unavailable(ctx, ev.Session, nil)
	}
	return false
}

// Package router is xmppd's session manager and stanza router, and the module.Host
// the feature modules run against: the table of bound local sessions (mirrored into
// the storage ephemeral table "session" so other nodes see them), resource conflicts
// (a new binding of a full JID replaces the older session), the delivery rules of
// RFC 6121 §8 for messages, presences and IQs to bare and full JIDs with priorities,
// IQ dispatch to module handlers, hooks, and the errors for unknown users, other
// domains and unknown namespaces.
//
// It owns routing decisions only; it must not import c2s, server, admin or any
// module. Streams reach it through module.Session.
package router

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xedge/storage"
	"xedge/xmppd/cluster"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// SessionTable is the ephemeral storage table listing bound sessions by full JID.
const SessionTable = "session"

// SessionInfo describes a session for the admin interface.
type SessionInfo struct {
	JID      string    `json:"jid"`
	ID       string    `json:"id"`
	Node     string    `json:"node,omitempty"`
	Addr     string    `json:"addr,omitempty"`
	Since    time.Time `json:"since"`
	TLS      bool      `json:"tls"`
	Mech     string    `json:"mechanism,omitempty"`
	Priority int       `json:"priority"`
	SM       bool      `json:"sm"`
	Detached bool      `json:"detached,omitempty"`
	CSI      string    `json:"csi,omitempty"`
}

// Describer is implemented by sessions that can describe themselves.
type Describer interface{ Info() SessionInfo }

// Config is what a Router needs.
type Config struct {
	Domain   string   // the default host
	Hosts    []string // every served domain (virtual hosts); empty: Domain alone
	Node     string
	Store    storage.Store
	Accounts module.Accounts
	Logger   *slog.Logger
}

type hook struct {
	prio int
	seq  int
	fn   module.HookFunc
}

// bareKey indexes the session table by bare JID without building its string.
type bareKey struct{ local, domain string }

func keyOf(j jid.JID) bareKey { return bareKey{j.Local, j.Domain} }

// Router implements module.Host.
type Router struct {
	cfg Config
	log *slog.Logger

	mu       sync.RWMutex
	sessions map[bareKey]map[string]module.Session // bare JID -> resource -> session
	iq       map[string]module.IQHandler
	hooks    atomic.Pointer[hookTable] // replaced whole under mu, read without it
	hookSeq  int
	features []module.FeatureFunc
	disco    []string

	jids jidCache

	meta map[module.Session]*localMeta // bound local sessions' bind order and flags

	domains map[string]module.DomainHandler // other domains served by modules (MUC, components)
	remote  module.DomainHandler            // domains nobody here serves (s2s); nil bounces
	cl      cl
	rows    rowCache

	hosts   []string        // served domains, the default one among them
	hostSet map[string]bool // the same as a set
}

// jidCacheSize bounds the prepared-JID cache (it is emptied when full).
const jidCacheSize = 1024

// jidCache remembers recently prepared JIDs: modules route many stanzas with the
// same from and to strings (a presence broadcast: one from, every contact's to),
// and preparing a JID (PRECIS, IDNA) costs far more than a map lookup.
type jidCache struct {
	mu sync.Mutex
	m  map[string]jid.JID
}

// parse is jid.Parse, cached for valid JIDs.
func (c *jidCache) parse(s string) (jid.JID, error) {
	if s == "" {
		return jid.JID{}, nil
	}
	c.mu.Lock()
	j, ok := c.m[s]
	c.mu.Unlock()
	if ok {
		return j, nil
	}
	// s is usually a substring of a whole stanza: keep only a copy of it (and JID
	// parts that point into the copy), not the stanza.
	s = strings.Clone(s)
	j, err := jid.Parse(s)
	if err != nil {
		return j, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= jidCacheSize {
		c.m = make(map[string]jid.JID, 64)
	}
	c.m[s] = j
	c.mu.Unlock()
	return j, nil
}

// New returns a router.
func New(cfg Config) *Router {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Router{
		cfg: cfg, log: cfg.Logger.With("component", "router"),
		sessions: map[bareKey]map[string]module.Session{},
		iq:       map[string]module.IQHandler{},
		meta:     map[module.Session]*localMeta{},
	}
	r.hooks.Store(&hookTable{})
	r.cl.clock = cluster.NewClock(cfg.Node, nil)
	r.hosts = []string{cfg.Domain}
	r.hostSet = map[string]bool{cfg.Domain: true}
	for _, h := range cfg.Hosts {
		if !r.hostSet[h] {
			r.hosts = append(r.hosts, h)
			r.hostSet[h] = true
		}
	}
	return r
}

// Hosts implements module.VirtualHosts: the served domains, the default host
// first.
func (r *Router) Hosts() []string { return append([]string(nil), r.hosts...) }

// IsLocal implements module.VirtualHosts: users at domain are local accounts.
func (r *Router) IsLocal(domain string) bool { return r.hostSet[domain] }

// SetAccounts sets the accounts after construction (they need the router for hooks).
func (r *Router) SetAccounts(a module.Accounts) { r.cfg.Accounts = a }

// Domain implements module.Host: the default host.
func (r *Router) Domain() string { return r.cfg.Domain }

// Store implements module.Host.
func (r *Router) Store() storage.Store { return r.cfg.Store }

// Accounts implements module.Host.
func (r *Router) Accounts() module.Accounts { return r.cfg.Accounts }

// Logger implements module.Host.
func (r *Router) Logger() *slog.Logger { return r.cfg.Logger }

// HandleIQ implements module.Host.
func (r *Router) HandleIQ(ns string, h module.IQHandler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.iq[ns]; dup {
		r.log.Warn("IQ handler registered twice; the later one wins", "ns", ns)
	}
	r.iq[ns] = h
}

// hookTable is the hooks of each event in priority order. A table is never
// changed once stored: Hook stores a new one, so Run (twice per stanza
// delivered, a room's every copy included) reads the hooks without a lock.
type hookTable map[module.Event][]hook

// Hook implements module.Host.
func (r *Router) Hook(ev module.Event, prio int, fn module.HookFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hookSeq++
	t := maps.Clone(*r.hooks.Load())
	hs := append(slices.Clone(t[ev]), hook{prio, r.hookSeq, fn})
	sort.SliceStable(hs, func(i, j int) bool { return hs[i].prio < hs[j].prio })
	t[ev] = hs
	r.hooks.Store(&t)
}

// StreamFeature implements module.Host.
func (r *Router) StreamFeature(f module.FeatureFunc) {
	r.mu.Lock()
	r.features = append(r.features, f)
	r.mu.Unlock()
}

// Features returns the module stream features for a stream state.
func (r *Router) Features(s module.StreamState) []*xmlstream.Element {
	r.mu.RLock()
	fs := append([]module.FeatureFunc(nil), r.features...)
	r.mu.RUnlock()
	var out []*xmlstream.Element
	for _, f := range fs {
		if e := f(s); e != nil {
			out = append(out, e)
		}
	}
	return out
}

// DiscoFeature implements module.Host.
func (r *Router) DiscoFeature(ns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.disco {
		if f == ns {
			return
		}
	}
	r.disco = append(r.disco, ns)
}

// DiscoFeatures implements module.Host (sorted, deduplicated).
// DiscoCount returns how many disco features are registered. The list only grows
// (DiscoFeature adds each namespace once), so an unchanged count means an unchanged
// list: callers cache what they derive from it (c2s: the caps hash).
func (r *Router) DiscoCount() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.disco)
}

func (r *Router) DiscoFeatures() []string {
	r.mu.RLock()
	out := append([]string(nil), r.disco...)
	r.mu.RUnlock()
	sort.Strings(out)
	return out
}

// Run fires the hooks of ev in priority order; true if one consumed the event.
func (r *Router) Run(ctx context.Context, ev module.Event, d *module.EventData) bool {
	for _, h := range (*r.hooks.Load())[ev] {
		if h.fn(ctx, r, d) {
			return true
		}
	}
	return false
}

// Sessions implements module.Host: the sessions of bare on every node (those
// of other nodes as RemoteSession proxies), sorted by resource.
func (r *Router) Sessions(bare jid.JID) []module.Session {
	return r.sessionsEx(bare, "")
}

// sessionsEx is Sessions without the sessions of node exclude ("*": local only).
func (r *Router) sessionsEx(bare jid.JID, exclude string) []module.Session {
	r.mu.RLock()
	m := r.sessions[keyOf(bare)]
	out := make([]module.Session, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	r.mu.RUnlock()
	if exclude != "*" {
		local := len(out)
		for _, rs := range r.remoteSessions(bare.String()+"/", exclude) {
			// A JID bound here and elsewhere (a conflict being settled): the
			// local session stands for it.
			if !hasResource(out[:local], rs.JID().Resource) {
				out = append(out, rs)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID().Resource < out[j].JID().Resource })
	return out
}

func hasResource(ss []module.Session, res string) bool {
	for _, s := range ss {
		if s.JID().Resource == res {
			return true
		}
	}
	return false
}

// Session implements module.Host: the session bound to full on any node.
func (r *Router) Session(full jid.JID) module.Session {
	return r.sessionEx(full, "")
}

func (r *Router) sessionEx(full jid.JID, exclude string) module.Session {
	if s := r.localSession(full); s != nil || exclude == "*" {
		return s
	}
	return r.remoteSession(full, exclude)
}

// localSession returns the session bound to full on this node, or nil.
func (r *Router) localSession(full jid.JID) module.Session {
	r.mu.RLock()
	s := r.sessions[keyOf(full)][full.Resource]
	r.mu.RUnlock()
	return s
}

// All returns every local session.
func (r *Router) All() []module.Session {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []module.Session
	for _, m := range r.sessions {
		for _, s := range m {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID().String() < out[j].JID().String() })
	return out
}

// Count returns the number of bound local sessions.
func (r *Router) Count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, m := range r.sessions {
		n += len(m)
	}
	return n
}

// Bind registers s under its full JID. An older session with the same full JID is
// replaced and closed with a <conflict/> stream error (RFC 6120 §7.7.2.2).
func (r *Router) Bind(ctx context.Context, s module.Session) {
	j := s.JID()
	bare := keyOf(j)
	// The bind order is after every bind of j this node has seen (other
	// nodes' rows), so of two binds the later one wins cluster-wide.
	r.observeRows(j)
	order := r.cl.clock.Now()
	r.mu.Lock()
	m := r.sessions[bare]
	if m == nil {
		m = map[string]module.Session{}
		r.sessions[bare] = m
	}
	old := m[j.Resource]
	m[j.Resource] = s
	r.meta[s] = &localMeta{order: order, since: time.Now().UTC()}
	if old != nil && old != s {
		delete(r.meta, old)
	}
	r.mu.Unlock()
	if old != nil && old != s {
		r.log.Info("resource conflict: replacing the older session", "jid", j.String(), "old", old.ID(), "new", s.ID())
		old.Close("conflict", "Replaced by new connection")
		r.Run(ctx, module.EvSessionClosed, &module.EventData{From: j, Session: old})
	}
	r.announceBind(j, order)
	r.eph().Put(j.String(), r.rowOf(s))
	r.Run(ctx, module.EvSessionBound, &module.EventData{From: j, Session: s})
	// A session resumed from a lost node's copy: what its node never took
	// waited for it here.
	r.cl.mu.RLock()
	_, waiting := r.cl.awaiting[j.String()]
	r.cl.mu.RUnlock()
	if waiting {
		r.routeAwaiting(ctx, j.String())
	}
}

// Unbind removes s (if it is still the session bound to its JID) and fires
// EvSessionClosed. It reports whether s was bound.
func (r *Router) Unbind(ctx context.Context, s module.Session) bool {
	j := s.JID()
	bare := keyOf(j)
	r.mu.Lock()
	m := r.sessions[bare]
	cur := m[j.Resource]
	if cur != s {
		r.mu.Unlock()
		return false
	}
	delete(m, j.Resource)
	if len(m) == 0 {
		delete(r.sessions, bare)
	}
	delete(r.meta, s)
	r.mu.Unlock()
	r.eph().Delete(j.String())
	r.Run(ctx, module.EvSessionClosed, &module.EventData{From: j, Session: s})
	return true
}

// eph returns the ephemeral session table; it is looked up on use because the store
// may only be started after the router is built.
func (r *Router) eph() storage.Ephemeral { return r.cfg.Store.Ephemeral(SessionTable) }

// isLocal reports whether j is served by this router.
func (r *Router) isLocal(j jid.JID) bool { return r.hostSet[j.Domain] }

// bounce routes the error reply for st, unless st is itself an error (never answer
// an error with an error, RFC 6120 §8.3.1).
func (r *Router) bounce(ctx context.Context, st *xmlstream.Element, typ, cond, text string) {
	if st.Attr("type") == "error" || st.Attr("from") == "" {
		return
	}
	r.Route(ctx, module.Error(st, typ, cond, text))
}

// Route implements module.Host: st has from and to set (an empty to means the
// sender's own bare JID, RFC 6120 §10.3.3, and is handled as such).
func (r *Router) Route(ctx context.Context, st *xmlstream.Element) {
	from, _ := r.jids.parse(st.Attr("from"))
	var to jid.JID
	if toS := st.Attr("to"); toS != "" {
		var err error
		if to, err = r.jids.parse(toS); err != nil {
			r.bounce(ctx, st, module.ErrModify, "jid-malformed", "")
			return
		}
	}
	r.route(ctx, st, from, to, false)
}

// RouteParsed is Route for a caller that has already parsed (prepared) st's from
// and to attributes: from and to must be exactly what they say, to the zero JID if
// st has no to. It saves preparing both JIDs again on every stanza. st is handed
// over: the caller must neither use nor change it afterwards, so one recipient can
// be given st itself instead of a copy.
func (r *Router) RouteParsed(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	r.route(ctx, st, from, to, true)
}

// route routes st; owned means nobody else holds st (see RouteParsed).
func (r *Router) route(ctx context.Context, st *xmlstream.Element, from, to jid.JID, owned bool) {
	if to.IsZero() {
		to = from.Bare()
	}
	if to.IsZero() {
		return
	}
	if !r.isLocal(to) {
		r.toDomain(ctx, st, from, to, owned)
		return
	}
	if to.Local == "" {
		r.toServer(ctx, st, from, to)
		return
	}
	r.toUser(ctx, st, from, to, owned)
}

// toDomain hands st to the handler of to's domain (a MUC service, a component),
// else to the remote route (s2s), else bounces it: nothing serves that domain.
func (r *Router) toDomain(ctx context.Context, st *xmlstream.Element, from, to jid.JID, owned bool) {
	r.mu.RLock()
	h := r.domains[to.Domain]
	if h == nil {
		h = r.remote
	}
	r.mu.RUnlock()
	if h == nil {
		r.bounce(ctx, st, module.ErrCancel, "remote-server-not-found", "")
		return
	}
	if !owned {
		st = st.Copy()
	}
	h(ctx, st, from, to)
}

// HandleDomain implements module.DomainRouter.
func (r *Router) HandleDomain(domain string, h module.DomainHandler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h == nil {
		delete(r.domains, domain)
		return
	}
	if r.domains == nil {
		r.domains = map[string]module.DomainHandler{}
	}
	r.domains[domain] = h
}

// SetRemoteRoute implements module.DomainRouter.
func (r *Router) SetRemoteRoute(h module.DomainHandler) {
	r.mu.Lock()
	r.remote = h
	r.mu.Unlock()
}

// ServedDomains implements module.DomainRouter.
func (r *Router) ServedDomains() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.domains))
}

func (r *Router) toServer(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	switch st.Local {
	case "iq":
		r.dispatchIQ(ctx, st, from, to)
	case "message":
		if t := st.Attr("type"); t != "error" && t != "headline" && t != "groupchat" {
			r.bounce(ctx, st, module.ErrCancel, "service-unavailable", "")
		}
	}
	// Presence to the server is the presence module's (EvC2SIn); nothing to do here.
}

// dispatchIQ runs the module handler for an IQ get/set to the server or to a bare JID.
func (r *Router) dispatchIQ(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	t := st.Attr("type")
	if t != "get" && t != "set" {
		return // result and error IQs to the server are dropped
	}
	kids := st.Children()
	if len(kids) != 1 {
		r.bounce(ctx, st, module.ErrModify, "bad-request", "an IQ get or set carries exactly one payload")
		return
	}
	r.mu.RLock()
	h := r.iq[kids[0].Space]
	r.mu.RUnlock()
	if h == nil {
		r.bounce(ctx, st, module.ErrCancel, "service-unavailable", "")
		return
	}
	var sess module.Session
	if r.hostSet[from.Domain] && from.Resource != "" {
		r.mu.RLock()
		sess = r.sessions[keyOf(from)][from.Resource] // only a local session sent it
		r.mu.RUnlock()
	}
	interested := sess != nil && sess.Interested()
	h(ctx, r, &module.IQ{Stanza: st, From: from, To: to, Session: sess})
	if sess != nil && !interested && sess.Interested() {
		r.publish(sess) // other nodes' roster pushes reach it now
	}
}

// exists reports whether the local account to (bare) exists; Accounts is
// asked by user key (module.UserKey).
func (r *Router) exists(ctx context.Context, st *xmlstream.Element, to jid.JID) bool {
	if r.cfg.Accounts == nil {
		return false
	}
	r.mu.RLock()
	online := len(r.sessions[keyOf(to)]) > 0
	r.mu.RUnlock()
	if online || r.onlineElsewhere(to.Local+"@"+to.Domain) {
		return true // a bound session proves the account (removal kicks sessions)
	}
	user := module.UserKey(r, to)
	ok, err := r.cfg.Accounts.Exists(ctx, user)
	if err != nil {
		r.log.Warn("account lookup failed", "user", user, "err", err)
		if st.Attr("type") != "error" && st.Local != "presence" {
			r.Route(ctx, module.StoreError(st, err))
		}
		return false
	}
	return ok
}

func (r *Router) toUser(ctx context.Context, st *xmlstream.Element, from, to jid.JID, owned bool) {
	typ := st.Attr("type")
	// A session bound here to a full JID proves the account (exists would look
	// it up again): a room's fan-out routes a copy per occupant.
	var local module.Session
	if to.Resource != "" && r.cfg.Accounts != nil {
		local = r.localSession(to)
	}
	if local == nil && !r.exists(ctx, st, to) {
		// RFC 6121 §8.5.1 / §8.1: no such account.
		if st.Local != "presence" {
			r.bounce(ctx, st, module.ErrCancel, "service-unavailable", "")
		}
		return
	}
	d := deliveries.Get().(*delivery)
	defer d.release()
	d.ev = module.EventData{Stanza: st, From: from, To: to}
	if r.Run(ctx, module.EvDeliver, &d.ev) {
		return
	}
	if to.Resource != "" {
		s := local
		if s == nil {
			s = r.sessionEx(to, excluded(ctx))
		}
		if s != nil {
			d.one[0] = s
			r.deliver(ctx, st, from, to, d.one[:], owned, &d.ev)
			return
		}
		// §8.5.3.2: no such resource.
		switch st.Local {
		case "iq":
			r.bounce(ctx, st, module.ErrCancel, "service-unavailable", "")
			return
		case "message":
			if typ == "groupchat" {
				r.bounce(ctx, st, module.ErrCancel, "service-unavailable", "")
				return
			}
			if typ == "error" {
				return
			}
		case "presence":
			switch typ {
			case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
			default:
				return
			}
		}
		to = to.Bare()
	}
	r.toBare(ctx, st, from, to, owned, &d.ev)
}

// delivery is what toUser hands the hooks for one stanza: the event (EvDeliver's,
// then EvDelivered's) and room for the one target of a full JID. A room's
// fan-out routes a stanza per occupant, and these were a third of what it
// allocated (~180 bytes a copy): they are reused (hooks keep nothing of an
// EventData past the call, module.HookFunc).
type delivery struct {
	ev  module.EventData
	one [1]module.Session
}

var deliveries = sync.Pool{New: func() any { return new(delivery) }}

func (d *delivery) release() {
	*d = delivery{}
	deliveries.Put(d)
}

func available(s module.Session) bool { return s.Presence() != nil }

// toBare applies RFC 6121 §8.5.2 for a stanza to an existing local account's bare JID.
func (r *Router) toBare(ctx context.Context, st *xmlstream.Element, from, to jid.JID, owned bool, ev *module.EventData) {
	typ := st.Attr("type")
	sessions := r.sessionsEx(to, excluded(ctx))
	switch st.Local {
	case "iq":
		r.dispatchIQ(ctx, st, from, to)
	case "presence":
		var targets []module.Session
		for _, s := range sessions {
			switch typ {
			case "subscribe", "subscribed", "unsubscribe", "unsubscribed":
				if s.Interested() {
					targets = append(targets, s)
				}
			default:
				if available(s) {
					targets = append(targets, s)
				}
			}
		}
		r.deliver(ctx, st, from, to, targets, owned, ev)
	case "message":
		var targets []module.Session
		switch typ {
		case "groupchat":
			r.bounce(ctx, st, module.ErrCancel, "service-unavailable", "")
			return
		case "headline":
			for _, s := range sessions {
				if available(s) && s.Priority() >= 0 {
					targets = append(targets, s)
				}
			}
		default: // normal, chat, error: the highest non-negative priority
			targets = HighestPriority(sessions)
		}
		if len(targets) > 0 {
			r.deliver(ctx, st, from, to, targets, owned, ev)
			return
		}
		if typ == "headline" || typ == "error" {
			return
		}
		if r.Run(ctx, module.EvOffline, &module.EventData{Stanza: st, From: from, To: to}) {
			return
		}
		r.bounce(ctx, st, module.ErrCancel, "service-unavailable", "")
	}
}

// HighestPriority returns the available sessions sharing the highest non-negative
// priority (RFC 6121 §8.5.2.1.1: a negative priority never receives bare-JID messages).
func HighestPriority(sessions []module.Session) []module.Session {
	best := -1
	var out []module.Session
	for _, s := range sessions {
		if !available(s) {
			continue
		}
		p := s.Priority()
		switch {
		case p < 0 || p < best:
		case p > best:
			best, out = p, []module.Session{s}
		default:
			out = append(out, s)
		}
	}
	return out
}

// deliver gives each target its own copy of st, except that an owned st goes to the
// last target as it is (sessions and the EvDelivered hooks only read it). ev is
// the EventData the EvDeliver hooks had, reused for EvDelivered.
func (r *Router) deliver(ctx context.Context, st *xmlstream.Element, from, to jid.JID, targets []module.Session, owned bool, ev *module.EventData) {
	for i, s := range targets {
		if owned && i == len(targets)-1 {
			s.Send(st)
		} else {
			s.Send(st.Copy())
		}
	}
	if st.Local == "message" && len(targets) > 0 {
		*ev = module.EventData{Stanza: st, From: from, To: to, Targets: targets}
		r.Run(ctx, module.EvDelivered, ev)
	}
}

// ErrNoSession is returned by Kick for an unknown JID.
var ErrNoSession = errors.New("router: no such session")

// Kick closes the session(s) of a full or bare JID with a policy-violation stream
// error and returns how many were closed.
func (r *Router) Kick(j jid.JID, text string) (int, error) {
	var ss []module.Session
	if j.Resource != "" {
		if s := r.Session(j); s != nil {
			ss = append(ss, s)
		}
	} else {
		ss = r.Sessions(j)
	}
	if len(ss) == 0 {
		return 0, ErrNoSession
	}
	for _, s := range ss {
		s.Close("policy-violation", text)
	}
	return len(ss), nil
}

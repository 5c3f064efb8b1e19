// Package roster implements RFC 6121 rosters and presence subscriptions: roster
// get/set/remove with pushes to every interested resource, roster versioning
// (XEP-0237, with a distinct version for the never-changed empty roster), the full
// subscription state machine of RFC 6121 Appendix A including pending states, and the
// redelivery of pending inbound subscription requests at the next initial presence.
// Availability presence (broadcast, probes, directed presence) is the presence
// module's; it reads rosters through this package.
//
// Tables: roster ("user\x00contact" -> item JSON), roster_pending ("user\x00contact"
// -> pending inbound request JSON), roster_version ("user" -> version string).
//
// In a cluster a node's reads may lag a write another node just committed (a raft
// follower applies commits a little after the leader). A subscription stanza that
// the state read would drop, or a request it would put to the user although a
// pre-approval may be newer, is decided again once the node caught up (one empty
// write through the log, see catchUp): an answer that reaches another node than the
// request it answers is not lost. A request another node stored just as a
// session of the user came up here (that node did not see the session yet, this
// node applied the write after the session's redelivery) is sent to the session
// by a second look a moment later (lateRedeliver), once.
//
// It must not import the xmppd core or other modules.
package roster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS       = "jabber:iq:roster"
	NSVerFea = "urn:xmpp:features:rosterver"
	NSPreFea = "urn:xmpp:features:pre-approval"
)

// Table names.
const (
	TableItems   = "roster"
	TablePending = "roster_pending"
	TableVersion = "roster_version"
)

// Limits.
const (
	MaxItems   = 2000
	maxNameLen = 1023
	maxGroups  = 64
	// EmptyVersion is the version of a roster that was never changed (or whose user
	// was removed). Every change yields "<n>-<16 random hex digits>", so it never
	// equals EmptyVersion.
	EmptyVersion = "0"
)

// Item is one roster item as stored.
type Item struct {
	JID    string   `json:"-"`
	Name   string   `json:"name,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Sub    string   `json:"sub"`
	Ask    bool     `json:"ask,omitempty"`
	// Approved is a pre-approval (RFC 6121 §3.4).
	Approved bool `json:"approved,omitempty"`
}

type pending struct {
	Status string `json:"status,omitempty"`
	Stamp  string `json:"stamp,omitempty"`
	// Sessions are the IDs of the sessions the node that stored the request
	// delivered it to (available, or past their pending redelivery, when it
	// looked): another node's late redelivery skips them.
	Sessions []string `json:"sessions,omitempty"`
}

// Module is the roster module.
type Module struct {
	h     module.Host
	items storage.Table
	pend  storage.Table
	vers  storage.Table
	locks modutil.Locks
	// syncFailed is when a catch-up last failed (UnixNano, 0: none); decisions
	// then skip catching up for syncPause instead of each waiting for a store
	// without quorum.
	syncFailed atomic.Int64
}

// syncPause is how long decisions stop catching up after a catch-up failed.
const syncPause = 5 * time.Second

// New returns the roster module.
func New() *Module { return &Module{} }

// Name implements module.Module.
func (*Module) Name() string { return "roster" }

// Start declares the tables and registers handlers and hooks.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	m.h = h
	st := h.Store()
	if err := modutil.Declare(ctx, st, TableItems, TablePending, TableVersion); err != nil {
		return fmt.Errorf("roster: %w", err)
	}
	var err error
	if m.items, err = st.Durable(TableItems); err != nil {
		return fmt.Errorf("roster: %w", err)
	}
	if m.pend, err = st.Durable(TablePending); err != nil {
		return fmt.Errorf("roster: %w", err)
	}
	if m.vers, err = st.Durable(TableVersion); err != nil {
		return fmt.Errorf("roster: %w", err)
	}
	h.HandleIQ(NS, m.handleIQ)
	h.StreamFeature(func(s module.StreamState) *xmlstream.Element {
		if !s.Authenticated {
			return nil
		}
		return xmlstream.New(NSVerFea, "ver")
	})
	h.StreamFeature(func(s module.StreamState) *xmlstream.Element {
		if !s.Authenticated {
			return nil
		}
		return xmlstream.New(NSPreFea, "sub")
	})
	h.Hook(module.EvC2SIn, 40, m.outbound)
	h.Hook(module.EvDeliver, 40, m.inbound)
	h.Hook(module.EvUserRemoved, 40, m.userRemoved)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

// Get returns the user's roster item for contact (a bare JID string).
func (m *Module) Get(user, contact string) (Item, bool) {
	b, ok, err := m.items.Get(modutil.Key(user, contact))
	if err != nil || !ok {
		return Item{}, false
	}
	var it Item
	if json.Unmarshal(b, &it) != nil {
		return Item{}, false
	}
	it.JID = contact
	if it.Sub == "" {
		it.Sub = SubNone
	}
	return it, true
}

// Items returns the user's roster in key order.
func (m *Module) Items(user string) ([]Item, error) {
	var out []Item
	p := modutil.UserPrefix(user)
	err := m.items.Scan(p, func(k string, v []byte) bool {
		var it Item
		if json.Unmarshal(v, &it) == nil {
			it.JID = strings.TrimPrefix(k, p)
			if it.Sub == "" {
				it.Sub = SubNone
			}
			out = append(out, it)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("roster: scan %s: %w", user, err)
	}
	return out, nil
}

// Version returns the user's current roster version.
func (m *Module) Version(user string) string {
	b, ok, err := m.vers.Get(user)
	if err != nil || !ok || len(b) == 0 {
		return EmptyVersion
	}
	return string(b)
}

// nextVersion returns the version a change of the roster at version cur writes:
// "<n>-<r>", n counting the changes and r 64 random bits. The random part makes
// every version unique (two nodes changing the same roster concurrently read the
// same cur, and must still write different versions), so that the version row,
// written in the same batch as every change of the user's items, identifies the
// items: a reader that reads the version before the items and later finds the same
// version knows the items did not change (the presence module's subscriber cache
// relies on it). Versions of the older "<epoch>-<n>" form are followed on.
func nextVersion(cur string) string {
	var n uint64
	if i := strings.IndexByte(cur, '-'); i > 0 {
		n, _ = strconv.ParseUint(cur[:i], 10, 64)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatUint(n+1, 10) + "-" + hex.EncodeToString(b[:])
}

// NextVersion is the version a change of a roster at version cur writes, for
// writers of the roster tables outside this module (xmppd/mod/migrate's bulk
// import), which write it in the same batch as the items.
func NextVersion(cur string) string { return nextVersion(cur) }

// VersionIs reports whether the user's roster is at version v, as Version(user) ==
// v would.
func (m *Module) VersionIs(user, v string) bool {
	b, ok, err := m.vers.Get(user)
	if err != nil || !ok || len(b) == 0 {
		return v == EmptyVersion
	}
	return string(b) == v
}

func (m *Module) state(user, contact string) (State, Item) {
	it, ok := m.Get(user, contact)
	s := State{Sub: SubNone, InRoster: ok}
	if ok {
		s.Sub, s.Ask, s.Approved = it.Sub, it.Ask, it.Approved
	} else {
		it = Item{JID: contact, Sub: SubNone}
	}
	if _, ok, _ := m.pend.Get(modutil.Key(user, contact)); ok {
		s.PendIn = true
	}
	return s, it
}

// commit writes the item (or deletes it when remove) and the pending row per s, and
// bumps the version if the roster itself changed. The caller holds the user's lock.
func (m *Module) commit(ctx context.Context, user string, old State, it Item, s State, remove bool, pend *pending) (ver string, changed bool, err error) {
	return m.commitItem(ctx, user, old, it, s, remove, false, pend)
}

// commitItem is commit; force rewrites the item even if its subscription state did
// not change (a roster set changing name or groups).
func (m *Module) commitItem(ctx context.Context, user string, old State, it Item, s State, remove, force bool, pend *pending) (ver string, changed bool, err error) {
	key := modutil.Key(user, it.JID)
	var ops []storage.Op
	if remove {
		if old.InRoster {
			ops = append(ops, storage.Delete(TableItems, key))
			changed = true
		}
	} else if s.InRoster && (force || !old.InRoster || s.Sub != old.Sub || s.Ask != old.Ask || s.Approved != old.Approved) {
		it.Sub, it.Ask, it.Approved = s.Sub, s.Ask, s.Approved
		b, _ := json.Marshal(it)
		ops = append(ops, storage.Put(TableItems, key, b))
		changed = true
	}
	if s.PendIn && !old.PendIn {
		if pend == nil {
			pend = &pending{}
		}
		b, _ := json.Marshal(pend)
		ops = append(ops, storage.Put(TablePending, key, b))
	} else if !s.PendIn && old.PendIn {
		ops = append(ops, storage.Delete(TablePending, key))
	}
	ver = m.Version(user)
	if changed {
		ver = nextVersion(ver)
		ops = append(ops, storage.Put(TableVersion, user, []byte(ver)))
	}
	if len(ops) == 0 {
		return ver, false, nil
	}
	if err := m.h.Store().Apply(ctx, ops...); err != nil {
		return "", false, fmt.Errorf("roster: write %s: %w", key, err)
	}
	return ver, changed, nil
}

func itemElement(it Item, remove bool) *xmlstream.Element {
	e := xmlstream.New(NS, "item", "jid", it.JID)
	if remove {
		e.SetAttr("subscription", "remove")
		return e
	}
	e.SetAttr("name", it.Name)
	e.SetAttr("subscription", it.Sub)
	if it.Ask {
		e.SetAttr("ask", "subscribe")
	}
	if it.Approved {
		e.SetAttr("approved", "true")
	}
	for _, g := range it.Groups {
		e.Append(xmlstream.New(NS, "group").AppendText(g))
	}
	return e
}

var pushSeq atomic.Uint64

// push sends a roster push to every interested resource of user (RFC 6121 §2.1.6).
func (m *Module) push(user, ver string, it Item, remove bool) {
	bare := module.UserJID(m.h, user)
	for _, s := range m.h.Sessions(bare) {
		if !s.Interested() {
			continue
		}
		iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "from", bare.String(), "to", s.JID().String(),
			"id", "push"+strconv.FormatInt(time.Now().UnixNano(), 36)+strconv.FormatUint(pushSeq.Add(1), 36))
		iq.Append(xmlstream.New(NS, "query", "ver", ver).Append(itemElement(it, remove)))
		s.Send(iq)
	}
}

func (m *Module) handleIQ(ctx context.Context, h module.Host, iq *module.IQ) {
	if !modutil.IsOwn(iq) || !modutil.IsLocalUser(h, iq.From) {
		modutil.ReplyError(ctx, h, iq, module.ErrAuth, "forbidden", "a roster belongs to its owner")
		return
	}
	user := module.UserKey(h, iq.From)
	q := iq.Payload()
	if q.Local != "query" {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "expected <query xmlns='jabber:iq:roster'/>")
		return
	}
	switch iq.Stanza.Attr("type") {
	case "get":
		if iq.Session != nil {
			iq.Session.SetInterested()
		}
		if len(q.Children()) > 0 {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "roster get carries no items")
			return
		}
		cur := m.Version(user)
		if v := q.Attr("ver"); v != "" && v == cur {
			modutil.ReplyResult(ctx, h, iq) // XEP-0237 / RFC 6121 §2.6.3: unchanged
			return
		}
		items, err := m.Items(user)
		if err != nil {
			h.Logger().Error("roster read", "user", user, "err", err)
			modutil.ReplyError(ctx, h, iq, module.ErrWait, "internal-server-error", "")
			return
		}
		res := xmlstream.New(NS, "query", "ver", cur)
		for _, it := range items {
			res.Append(itemElement(it, false))
		}
		modutil.ReplyResult(ctx, h, iq, res)
	case "set":
		m.set(ctx, h, iq, user, q)
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
	}
}

func (m *Module) set(ctx context.Context, h module.Host, iq *module.IQ, user string, q *xmlstream.Element) {
	kids := q.Children()
	if len(kids) != 1 || kids[0].Local != "item" {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "a roster set carries exactly one item")
		return
	}
	x := kids[0]
	cj, err := jid.Parse(x.Attr("jid"))
	if err != nil {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "jid-malformed", "bad item jid")
		return
	}
	contact := cj.String()
	if x.Attr("subscription") == "remove" {
		m.remove(ctx, h, iq, user, contact)
		return
	}
	name := x.Attr("name")
	if len(name) > maxNameLen {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "not-acceptable", "name too long")
		return
	}
	var groups []string
	seen := map[string]bool{}
	for _, g := range x.Children() {
		if g.Local != "group" {
			continue
		}
		t := g.Text()
		if t == "" || len(t) > maxNameLen {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "not-acceptable", "group names must be 1-1023 bytes")
			return
		}
		if seen[t] {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "duplicate group")
			return
		}
		seen[t] = true
		groups = append(groups, t)
	}
	if len(groups) > maxGroups {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "not-acceptable", "too many groups")
		return
	}
	unlock := m.locks.Lock(user)
	old, it := m.state(user, contact)
	if !old.InRoster {
		if n, _ := m.items.Count(modutil.UserPrefix(user)); n >= MaxItems {
			unlock()
			modutil.ReplyError(ctx, h, iq, module.ErrCancel, "not-allowed", "roster is full")
			return
		}
	}
	it.Name, it.Groups = name, groups
	s := old
	s.InRoster = true
	ver, _, err := m.commitItem(ctx, user, old, it, s, false, true, nil)
	unlock()
	if err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "roster set", err)
		return
	}
	it.Sub, it.Ask, it.Approved = s.Sub, s.Ask, s.Approved
	modutil.ReplyResult(ctx, h, iq)
	m.push(user, ver, it, false)
}

func (m *Module) remove(ctx context.Context, h module.Host, iq *module.IQ, user, contact string) {
	unlock := m.locks.Lock(user)
	old, it := m.state(user, contact)
	if !old.InRoster {
		unlock()
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "item-not-found", "no such roster item")
		return
	}
	s := State{Sub: SubNone}
	ver, _, err := m.commit(ctx, user, old, it, s, true, nil)
	unlock()
	if err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "roster remove", err)
		return
	}
	modutil.ReplyResult(ctx, h, iq)
	m.push(user, ver, it, true)
	m.cancelBoth(ctx, user, contact, old)
}

// cancelBoth tells the contact the subscriptions are gone (RFC 6121 §2.5.2).
func (m *Module) cancelBoth(ctx context.Context, user, contact string, old State) {
	bare := module.UserJID(m.h, user)
	if HasTo(old.Sub) || old.Ask {
		m.h.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "type", "unsubscribe", "from", bare.String(), "to", contact))
	}
	if HasFrom(old.Sub) || old.PendIn {
		m.h.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "type", "unsubscribed", "from", bare.String(), "to", contact))
	}
	if HasFrom(old.Sub) {
		m.sendUnavailable(ctx, bare, contact)
	}
}

// sendUnavailable sends unavailable presence from each available resource of bare to
// contact (RFC 6121 §3.2.2, §3.3.3).
func (m *Module) sendUnavailable(ctx context.Context, bare jid.JID, contact string) {
	for _, s := range m.h.Sessions(bare) {
		if s.Presence() != nil {
			m.h.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "type", "unavailable", "from", s.JID().String(), "to", contact))
		}
	}
}

// sendCurrent sends the current presence of each available resource of bare to
// contact (RFC 6121 §3.1.5).
func (m *Module) sendCurrent(ctx context.Context, bare jid.JID, contact string) {
	for _, s := range m.h.Sessions(bare) {
		if p := s.Presence(); p != nil {
			c := p.Copy()
			c.SetAttr("from", s.JID().String())
			c.SetAttr("to", contact)
			m.h.Route(ctx, c)
		}
	}
}

// outbound handles subscription presence from a local session (RFC 6121 §3) and the
// redelivery of pending requests at initial presence.
func (m *Module) outbound(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || st.Local != "presence" {
		return false
	}
	typ := st.Attr("type")
	if !IsSubscription(typ) {
		if ev.Session != nil && st.Attr("to") == "" && typ == "" && ev.Session.Presence() == nil {
			m.redeliverPending(ev.Session)
		}
		return false
	}
	if !modutil.IsLocalUser(h, ev.From) {
		return true
	}
	to, err := jid.Parse(st.Attr("to"))
	if err != nil || to.IsZero() {
		if ev.Session != nil {
			ev.Session.Send(module.Error(st, module.ErrModify, "jid-malformed", "subscription presence needs a valid 'to'"))
		}
		return true
	}
	user := module.UserKey(h, ev.From)
	contact := to.Bare().String()
	unlock := m.locks.Lock(user)
	old, it := m.state(user, contact)
	s, route := Outbound(typ, old)
	if typ == "subscribed" && !route {
		// A pre-approval, unless the request it answers was committed through
		// another node and not yet applied here: decide again after catching up.
		unlock()
		m.catchUp(ctx)
		unlock = m.locks.Lock(user)
		old, it = m.state(user, contact)
		s, route = Outbound(typ, old)
	}
	ver, changed, err := m.commit(ctx, user, old, it, s, false, nil)
	unlock()
	if err != nil {
		h.Logger().Warn("roster: outbound subscription not stored", "user", user, "contact", contact, "type", typ, "err", err)
		if ev.Session != nil {
			ev.Session.Send(module.StoreError(st, err))
		}
		return true
	}
	if changed {
		it.Sub, it.Ask, it.Approved = s.Sub, s.Ask, s.Approved
		m.push(user, ver, it, false)
	}
	if route {
		out := xmlstream.New(xmlstream.NSClient, "presence", "type", typ, "from", ev.From.Bare().String(), "to", contact)
		out.SetAttr("id", st.Attr("id"))
		for _, c := range st.Children() {
			out.Append(c.Copy())
		}
		h.Route(ctx, out)
		if typ == "subscribe" && module.IsLocal(h, to.Domain) && to.Local != "" {
			// RFC 6121 §8.5.1: a subscription request to a non-existent local account is
			// answered with unsubscribed (the router drops presence to unknown users).
			if ok, err := h.Accounts().Exists(ctx, module.UserKey(h, to)); err == nil && !ok {
				h.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "type", "unsubscribed", "from", contact, "to", ev.From.Bare().String()))
			}
		}
	}
	switch {
	case typ == "subscribed" && route:
		m.sendCurrent(ctx, ev.From.Bare(), contact)
	case typ == "unsubscribed" && HasFrom(old.Sub):
		m.sendUnavailable(ctx, ev.From.Bare(), contact)
	}
	return true
}

// pendingSeen marks a session whose initial presence has redelivered the pending
// requests (module.Session.Value key): from then on a new request goes to it
// directly even before the presence module has made it available. Its value is
// the sentPending of the requests redelivered to it.
type pendingSeen struct{}

// sentPending is the set of pending requests (keys) a session got from its
// node's scans. Only read and written under its user's lock.
type sentPending map[string]bool

// requestTargets returns to's sessions that take a subscription request now:
// available, or past their initial presence's redelivery (pendingSeen).
func requestTargets(h module.Host, to jid.JID) []module.Session {
	var out []module.Session
	for _, sess := range h.Sessions(to) {
		if sess.Presence() != nil || sess.Value(pendingSeen{}) != nil {
			out = append(out, sess)
		}
	}
	return out
}

// redeliverPending sends the stored inbound requests to s at its initial presence.
// It runs under the user's lock and marks s first, so a request that inbound
// stores at the same moment is either found here or delivered by inbound to the
// marked session: never neither (it was, when the request raced the presence).
// In a cluster it looks once more a moment later (lateRedeliver).
func (m *Module) redeliverPending(s module.Session) {
	user := module.UserKey(m.h, s.JID())
	unlock := m.locks.Lock(user)
	defer unlock()
	sent := sentPending{}
	s.SetValue(pendingSeen{}, sent)
	m.sendPendingLocked(s, user, sent, false)
	modutil.LateLook(m.h, lateRedeliverDelay, "roster", func() { m.lateRedeliver(s, sent) })
}

// sendPendingLocked sends s the pending requests of user not in sent — nor,
// when late, delivered to s by the node that stored them — and adds them to
// sent. (An initial presence gets every pending request, as before.)
func (m *Module) sendPendingLocked(s module.Session, user string, sent sentPending, late bool) {
	p := modutil.UserPrefix(user)
	_ = m.pend.Scan(p, func(k string, v []byte) bool {
		if sent[k] {
			return true
		}
		var pd pending
		_ = json.Unmarshal(v, &pd)
		sent[k] = true
		if late && slices.Contains(pd.Sessions, s.ID()) {
			return true
		}
		pr := xmlstream.New(xmlstream.NSClient, "presence", "type", "subscribe", "from", strings.TrimPrefix(k, p), "to", s.JID().Bare().String())
		if pd.Status != "" {
			pr.Append(xmlstream.New(xmlstream.NSClient, "status").AppendText(pd.Status))
		}
		if pd.Stamp != "" {
			pr.Append(xmlstream.New("urn:xmpp:delay", "delay", "from", s.JID().Domain, "stamp", pd.Stamp))
		}
		s.Send(pr)
		return true
	})
}

// lateRedeliverDelay is how long after a session's initial presence its
// user's pending requests are looked for once more in a cluster.
var lateRedeliverDelay = time.Second

// lateRedeliver sends s, still available a moment after its initial presence,
// the requests stored since its redelivery that nobody delivered to it:
// another node stored a request for its user after it looked for sessions
// (it did not see s yet) and this node applied the write after s's
// redelivery scanned (a raft follower applies a little after the leader).
// It runs caught up with the cluster (modutil.LateLook), so a write
// committed before the look is seen however late this node applies it; by
// then every node sees s, and delivers what it stores later itself. Before,
// such a request reached the user only at the next login.
func (m *Module) lateRedeliver(s module.Session, sent sentPending) {
	if s.Presence() == nil {
		return
	}
	user := module.UserKey(m.h, s.JID())
	unlock := m.locks.Lock(user)
	defer unlock()
	m.sendPendingLocked(s, user, sent, true)
}

// inbound handles subscription presence addressed to a local user (RFC 6121 §3).
func (m *Module) inbound(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || st.Local != "presence" || !IsSubscription(st.Attr("type")) {
		return false
	}
	typ := st.Attr("type")
	to, from := ev.To.Bare(), ev.From.Bare()
	if to.Local == "" || from.IsZero() {
		return true
	}
	user, contact := module.UserKey(h, to), from.String()
	if ok, err := h.Accounts().Exists(ctx, user); err == nil && !ok {
		// RFC 6121 §8.5.1: answer subscribe to a non-existent user with unsubscribed.
		if typ == "subscribe" {
			h.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "type", "unsubscribed", "from", to.String(), "to", contact))
		}
		return true
	}
	unlock := m.locks.Lock(user)
	old, it := m.state(user, contact)
	s, deliver, auto := Inbound(typ, old)
	if inboundMayLag(typ, deliver) {
		unlock()
		m.catchUp(ctx)
		unlock = m.locks.Lock(user)
		old, it = m.state(user, contact)
		s, deliver, auto = Inbound(typ, old)
	}
	var pd *pending
	var targets []module.Session
	if typ == "subscribe" {
		pd = &pending{Status: st.ChildText("", "status"), Stamp: time.Now().UTC().Format("2006-01-02T15:04:05Z")}
		if deliver {
			// Chosen before the commit, and named in the stored request: a
			// session that is not among them gets it from its own node's
			// scans (redeliverPending, lateRedeliver), once.
			targets = requestTargets(h, to)
			for _, sess := range targets {
				pd.Sessions = append(pd.Sessions, sess.ID())
			}
		}
	}
	ver, changed, err := m.commit(ctx, user, old, it, s, false, pd)
	unlock()
	if err != nil {
		h.Logger().Warn("roster: inbound subscription not stored", "user", user, "contact", contact, "type", typ, "err", err)
		return true
	}
	if changed {
		it.Sub, it.Ask, it.Approved = s.Sub, s.Ask, s.Approved
		m.push(user, ver, it, false)
	}
	if auto != "" {
		h.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "type", auto, "from", to.String(), "to", contact))
		if old.Approved && !s.Approved {
			m.sendCurrent(ctx, to, contact) // a pre-approved request was just granted
		}
	}
	if deliver {
		out := st.Copy()
		out.SetAttr("from", contact)
		out.SetAttr("to", to.String())
		if typ != "subscribe" {
			targets = requestTargets(h, to)
		}
		for _, sess := range targets {
			sess.Send(out.Copy())
		}
	}
	if typ == "unsubscribe" && HasFrom(old.Sub) {
		m.sendUnavailable(ctx, to, contact)
	}
	return true
}

// inboundMayLag reports whether an inbound decision may rest on a read that lags
// the user's own latest change, made through another node: a subscribed,
// unsubscribed or unsubscribe dropped for lack of the pending state it answers
// (the user's subscribe, the contact's request), or a subscribe put to the user
// although a pre-approval (or a subscription) may just have been committed.
func inboundMayLag(typ string, deliver bool) bool {
	if typ == "subscribe" {
		return deliver
	}
	return !deliver
}

// catchUp returns once this node has applied every write committed in the
// cluster before it was called: an empty batch (the delete of a key no user can
// have) goes through the replicated log, and Apply returns after this node applied
// it. On a single node it costs one local write. After a failure (no quorum) it
// returns at once for syncPause; the caller then decides on what it read.
func (m *Module) catchUp(ctx context.Context) {
	if t := m.syncFailed.Load(); t != 0 && time.Since(time.Unix(0, t)) < syncPause {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := m.h.Store().Apply(ctx, storage.Delete(TablePending, "\x00sync")); err != nil {
		m.syncFailed.Store(time.Now().UnixNano())
		m.h.Logger().Debug("roster: catching up with the cluster", "err", err)
		return
	}
	m.syncFailed.Store(0)
}

func (m *Module) userRemoved(ctx context.Context, h module.Host, ev *module.EventData) bool {
	user := modutil.RemovedUser(h, ev.User)
	if user == "" {
		return false
	}
	items, _ := m.Items(user)
	err := h.Store().Apply(ctx,
		storage.DeletePrefix(TableItems, modutil.UserPrefix(user)),
		storage.DeletePrefix(TablePending, modutil.UserPrefix(user)),
		storage.Delete(TableVersion, user))
	if err != nil {
		h.Logger().Error("roster: purging removed user", "user", user, "err", err)
		return false
	}
	for _, it := range items {
		m.cancelBoth(ctx, user, it.JID, State{Sub: it.Sub, Ask: it.Ask})
	}
	return false
}

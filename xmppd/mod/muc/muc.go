// Package muc implements Multi-User Chat (XEP-0045) on conference.DOMAIN: room
// creation (locked until configured, status 201, or instant rooms), join with
// self-presence (status 110) and occupant list, nick conflicts, groupchat
// broadcast, leave, private messages, subject, history on join (maxstanzas,
// seconds), disco#info/#items of the service and rooms, roles and affiliations
// (owner, admin, member, outcast; kick and ban through muc#admin), members-only
// and password-protected rooms, mediated invitations (XEP-0249 direct invitations
// travel user to user and need nothing here), self-ping (XEP-0410), persistent
// rooms kept in a durable table and temporary rooms destroyed when the last
// occupant leaves.
//
// Table: muc_rooms (room localpart -> JSON of the room's configuration,
// affiliations and subject), durable disc copy: only persistent rooms are stored,
// so their configuration and affiliations survive a full restart. Occupants,
// history and locked new rooms are live state in this module's memory.
//
// Cluster: the room state lives on the node whose module received the stanza. The
// router hands this module the stanzas of this node's own sessions only, so today a
// room is correct when all its occupants are on one node (or the cluster has one
// node). The planned design (docs/muc.md) owns each room on one node chosen by
// rendezvous hashing over the live membership and forwards room stanzas to it over
// the cluster bus; that is not built yet.
//
// It must not import the xmppd core or other modules.
package muc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS        = "http://jabber.org/protocol/muc"
	NSUser    = NS + "#user"
	NSAdmin   = NS + "#admin"
	NSOwner   = NS + "#owner"
	NSConfig  = NS + "#roomconfig"
	NSInfo    = "http://jabber.org/protocol/disco#info"
	NSItems   = "http://jabber.org/protocol/disco#items"
	NSPing    = "urn:xmpp:ping"
	NSDelay   = "urn:xmpp:delay"
	NSData    = "jabber:x:data"
	NSClient  = "jabber:client"
	NSConfInv = "jabber:x:conference"
)

// Table is the durable table of persistent rooms.
const Table = "muc_rooms"

// Limits.
const (
	DefaultHistory = 20
	MaxHistory     = 200
	MaxNickLen     = 64
	MaxRooms       = 10000
)

// Affiliations and roles.
const (
	AffOwner   = "owner"
	AffAdmin   = "admin"
	AffMember  = "member"
	AffNone    = "none"
	AffOutcast = "outcast"

	RoleModerator   = "moderator"
	RoleParticipant = "participant"
	RoleVisitor     = "visitor"
	RoleNone        = "none"
)

var affRank = map[string]int{AffOutcast: -1, AffNone: 0, AffMember: 1, AffAdmin: 2, AffOwner: 3}

// Config is a room's configuration (muc#roomconfig).
type Config struct {
	Name          string `json:"name,omitempty"`
	Desc          string `json:"desc,omitempty"`
	Persistent    bool   `json:"persistent,omitempty"`
	Public        bool   `json:"public,omitempty"`
	MembersOnly   bool   `json:"members_only,omitempty"`
	Password      string `json:"password,omitempty"`
	Moderated     bool   `json:"moderated,omitempty"`
	NonAnonymous  bool   `json:"non_anonymous,omitempty"`
	ChangeSubject bool   `json:"change_subject,omitempty"`
	AllowInvites  bool   `json:"allow_invites,omitempty"`
	History       int    `json:"history"`
}

func defaultConfig() Config {
	return Config{Public: true, History: DefaultHistory}
}

// stored is a persistent room's row.
type stored struct {
	Config  Config            `json:"config"`
	Affs    map[string]string `json:"affs"`
	Subject string            `json:"subject,omitempty"`
	SubjBy  string            `json:"subject_by,omitempty"`
}

type occupant struct {
	nick string
	jid  jid.JID
	role string
	pres *xmlstream.Element // last presence as received (children kept)
}

type histEntry struct {
	at  time.Time
	msg *xmlstream.Element // from = room/nick, no to
}

type room struct {
	name    string
	cfg     Config
	affs    map[string]string // bare JID -> affiliation (none omitted)
	occ     map[string]*occupant
	byJID   map[string]string // full JID -> nick
	hist    []histEntry
	subject string
	subjBy  string
	locked  bool
}

func (r *room) aff(j jid.JID) string {
	if a, ok := r.affs[j.Bare().String()]; ok {
		return a
	}
	return AffNone
}

func (r *room) defaultRole(aff string) string {
	switch aff {
	case AffOwner, AffAdmin:
		return RoleModerator
	case AffMember:
		return RoleParticipant
	}
	if r.cfg.Moderated {
		return RoleVisitor
	}
	return RoleParticipant
}

// Module is the MUC service.
type Module struct {
	mu     sync.Mutex
	h      module.Host
	log    *slog.Logger
	domain string
	tab    storage.Table
	rooms  map[string]*room
	now    func() time.Time
}

// New returns the module.
func New() *Module { return &Module{rooms: map[string]*room{}, now: time.Now} }

// Name implements module.Module.
func (*Module) Name() string { return "muc" }

// Domain is the service's domain (set by Start).
func (m *Module) Domain() string { return m.domain }

// Start loads the persistent rooms and registers conference.DOMAIN with the host's
// domain router. A host without one gets no MUC service.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	m.h, m.log = h, h.Logger()
	dr, ok := h.(module.DomainRouter)
	if !ok {
		m.log.Warn("muc: host routes no other domains; MUC service off")
		return nil
	}
	if err := modutil.Declare(ctx, h.Store(), Table); err != nil {
		return fmt.Errorf("muc: %w", err)
	}
	var err error
	if m.tab, err = h.Store().Durable(Table); err != nil {
		return fmt.Errorf("muc: %w", err)
	}
	m.domain = "conference." + h.Domain()
	if err := m.tab.Scan("", func(k string, v []byte) bool {
		var s stored
		if err := json.Unmarshal(v, &s); err != nil {
			m.log.Error("muc: undecodable room", "room", k, "err", err)
			return true
		}
		r := newRoom(k, s.Config)
		if s.Affs != nil {
			r.affs = s.Affs
		}
		r.subject, r.subjBy = s.Subject, s.SubjBy
		m.rooms[k] = r
		return true
	}); err != nil {
		return fmt.Errorf("muc: load rooms: %w", err)
	}
	h.Hook(module.EvSessionClosed, 50, m.sessionClosed)
	dr.HandleDomain(m.domain, m.Handle)
	return nil
}

// Stop implements module.Module.
func (m *Module) Stop(context.Context) error {
	if dr, ok := m.h.(module.DomainRouter); ok && m.domain != "" {
		dr.HandleDomain(m.domain, nil)
	}
	return nil
}

func newRoom(name string, cfg Config) *room {
	return &room{name: name, cfg: cfg, affs: map[string]string{}, occ: map[string]*occupant{}, byJID: map[string]string{}}
}

// out collects stanzas to route once the module lock is released (a routed
// stanza may come back to Handle, e.g. an error bounce).
type out []*xmlstream.Element

func (o *out) add(st *xmlstream.Element) { *o = append(*o, st) }

func (m *Module) flush(ctx context.Context, o out) {
	for _, st := range o {
		m.h.Route(ctx, st)
	}
}

// Handle is the module.DomainHandler for conference.DOMAIN.
func (m *Module) Handle(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	var o out
	m.mu.Lock()
	m.handle(ctx, &o, st, from, to)
	m.mu.Unlock()
	m.flush(ctx, o)
}

func (m *Module) sessionClosed(ctx context.Context, _ module.Host, ev *module.EventData) bool {
	full := ev.From
	if ev.Session != nil {
		full = ev.Session.JID()
	}
	var o out
	m.mu.Lock()
	for _, r := range m.rooms {
		if nick, ok := r.byJID[full.String()]; ok {
			m.leave(ctx, &o, r, r.occ[nick], nil, "")
		}
	}
	m.mu.Unlock()
	m.flush(ctx, o)
	return false
}

func stanzaErr(o *out, st *xmlstream.Element, typ, cond, text string) {
	if st.Attr("type") == "error" {
		return
	}
	o.add(module.Error(st, typ, cond, text))
}

func (m *Module) roomJID(r *room, nick string) string {
	if nick == "" {
		return r.name + "@" + m.domain
	}
	return r.name + "@" + m.domain + "/" + nick
}

func (m *Module) handle(ctx context.Context, o *out, st *xmlstream.Element, from, to jid.JID) {
	if from.IsZero() || from.Domain == m.domain {
		return
	}
	if st.Space == "" {
		st.Space = NSClient
	}
	if to.Local == "" {
		m.service(o, st, from, to)
		return
	}
	r := m.rooms[to.Local]
	if st.Local != "message" {
		// Joins and IQs see what another node stored (configuration, affiliations
		// of persistent rooms live in the replicated table; reads are local).
		r = m.refresh(to.Local, r)
	}
	switch st.Local {
	case "presence":
		m.presence(ctx, o, r, st, from, to)
	case "message":
		if r == nil {
			stanzaErr(o, st, module.ErrCancel, "item-not-found", "")
			return
		}
		m.message(ctx, o, r, st, from, to)
	case "iq":
		if r == nil || (r.locked && r.aff(from) != AffOwner) {
			stanzaErr(o, st, module.ErrCancel, "item-not-found", "")
			return
		}
		m.iq(ctx, o, r, st, from, to)
	}
}

// service answers stanzas to the service itself.
func (m *Module) service(o *out, st *xmlstream.Element, from, to jid.JID) {
	if st.Local != "iq" {
		stanzaErr(o, st, module.ErrCancel, "service-unavailable", "")
		return
	}
	q := st.FirstChild()
	typ := st.Attr("type")
	if typ == "result" || typ == "error" {
		return
	}
	switch {
	case q != nil && q.Space == NSInfo && typ == "get" && q.Attr("node") == "":
		res := xmlstream.New(NSInfo, "query")
		res.Append(xmlstream.New(NSInfo, "identity", "category", "conference", "type", "text", "name", "Chatrooms"))
		for _, f := range []string{NS, NSInfo, NSItems, NSPing, "muc_persistent", "muc_temporary", "muc_membersonly", "muc_passwordprotected", "muc_moderated"} {
			res.Append(xmlstream.New(NSInfo, "feature", "var", f))
		}
		o.add(module.Result(st, res))
	case q != nil && q.Space == NSItems && typ == "get" && q.Attr("node") == "":
		res := xmlstream.New(NSItems, "query")
		names := make([]string, 0, len(m.rooms))
		for n, r := range m.rooms {
			if r.cfg.Public && !r.locked {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			it := xmlstream.New(NSItems, "item", "jid", m.roomJID(m.rooms[n], ""))
			if nm := m.rooms[n].cfg.Name; nm != "" {
				it.SetAttr("name", nm)
			} else {
				it.SetAttr("name", n)
			}
			res.Append(it)
		}
		o.add(module.Result(st, res))
	case q != nil && q.Space == NSPing && q.Local == "ping" && typ == "get":
		o.add(module.Result(st))
	default:
		stanzaErr(o, st, module.ErrCancel, "service-unavailable", "")
	}
}

// --- presence: join, update, leave ---

func (m *Module) presence(ctx context.Context, o *out, r *room, st *xmlstream.Element, from, to jid.JID) {
	typ := st.Attr("type")
	var occ *occupant
	if r != nil {
		if n, ok := r.byJID[from.String()]; ok {
			occ = r.occ[n]
		}
	}
	switch typ {
	case "error":
		// An occupant's client bounced what the room sent: it is gone (no ghost).
		if occ != nil {
			m.leave(ctx, o, r, occ, nil, "")
		}
		return
	case "unavailable":
		if occ != nil {
			m.leave(ctx, o, r, occ, nil, st.ChildText(NSClient, "status"))
		}
		return
	case "":
	default:
		return // subscriptions and probes: not for rooms
	}
	if to.Resource == "" {
		stanzaErr(o, st, module.ErrModify, "jid-malformed", "a nickname is required")
		return
	}
	if occ != nil {
		if occ.nick != to.Resource {
			// Nick change is not supported: refuse rather than half-do it.
			stanzaErr(o, st, module.ErrCancel, "not-acceptable", "nickname changes are not supported")
			return
		}
		occ.pres = st
		m.broadcastPresence(o, r, occ, nil)
		return
	}
	m.join(ctx, o, r, st, from, to)
}

func (m *Module) join(ctx context.Context, o *out, r *room, st *xmlstream.Element, from, to jid.JID) {
	nick := to.Resource
	if len(nick) > MaxNickLen {
		stanzaErr(o, st, module.ErrModify, "not-acceptable", "nickname too long")
		return
	}
	x := st.Child(NS, "x")
	created := false
	if r == nil {
		if len(m.rooms) >= MaxRooms {
			stanzaErr(o, st, module.ErrWait, "resource-constraint", "too many rooms")
			return
		}
		r = newRoom(to.Local, defaultConfig())
		r.affs[from.Bare().String()] = AffOwner
		// A MUC-aware client gets a locked room to configure (status 201); a
		// presence without <x/> creates an instant room (XEP-0045 §10.1.1).
		r.locked = x != nil
		m.rooms[r.name] = r
		created = true
	} else if r.locked && r.aff(from) != AffOwner {
		stanzaErr(o, st, module.ErrCancel, "item-not-found", "the room is locked until its owner configures it")
		return
	}
	aff := r.aff(from)
	switch {
	case aff == AffOutcast:
		stanzaErr(o, st, module.ErrAuth, "forbidden", "you are banned from this room")
		return
	case r.cfg.MembersOnly && affRank[aff] < affRank[AffMember]:
		stanzaErr(o, st, module.ErrAuth, "registration-required", "members only")
		return
	case r.cfg.Password != "" && affRank[aff] < affRank[AffOwner] && (x == nil || x.ChildText(NS, "password") != r.cfg.Password):
		stanzaErr(o, st, module.ErrAuth, "not-authorized", "password required")
		return
	}
	if _, taken := r.occ[nick]; taken {
		stanzaErr(o, st, module.ErrCancel, "conflict", "nickname in use")
		return
	}
	occ := &occupant{nick: nick, jid: from, role: r.defaultRole(aff), pres: st}
	// Existing occupants to the newcomer.
	nicks := r.sortedNicks()
	for _, n := range nicks {
		o.add(m.presenceOf(r, r.occ[n], occ, nil, ""))
	}
	r.occ[nick] = occ
	r.byJID[from.String()] = nick
	var codes []string
	if created {
		codes = append(codes, "201")
	}
	m.broadcastPresence(o, r, occ, codes)
	// History, then the subject (XEP-0045 §7.2.15-16); the creator of a locked room
	// gets them too, as ejabberd and Prosody send them (clients wait for the subject
	// to finish a join).
	m.sendHistory(o, r, from, x)
	subj := xmlstream.New(NSClient, "message", "type", "groupchat", "from", m.roomJID(r, r.subjBy), "to", from.String())
	if r.subjBy == "" {
		subj.SetAttr("from", m.roomJID(r, ""))
	}
	subj.Append(xmlstream.New(NSClient, "subject").AppendText(r.subject))
	o.add(subj)
}

func (r *room) sortedNicks() []string {
	ns := make([]string, 0, len(r.occ))
	for n := range r.occ {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// presenceOf builds occ's presence for recipient rcpt; typ "" is available.
func (m *Module) presenceOf(r *room, occ, rcpt *occupant, codes []string, typ string) *xmlstream.Element {
	p := xmlstream.New(NSClient, "presence", "from", m.roomJID(r, occ.nick), "to", rcpt.jid.String())
	if typ != "" {
		p.SetAttr("type", typ)
	} else if occ.pres != nil {
		for _, c := range occ.pres.Children() {
			if c.Space == NS || c.Space == NSUser {
				continue
			}
			p.Append(c.Copy())
		}
	}
	x := xmlstream.New(NSUser, "x")
	item := xmlstream.New(NSUser, "item", "affiliation", r.aff(occ.jid), "role", occ.role)
	if typ == "unavailable" {
		item.SetAttr("role", RoleNone)
	}
	if r.cfg.NonAnonymous || rcpt.role == RoleModerator || rcpt == occ {
		item.SetAttr("jid", occ.jid.String())
	}
	x.Append(item)
	self := rcpt == occ
	if self {
		x.Append(xmlstream.New(NSUser, "status", "code", "110"))
		if r.cfg.NonAnonymous {
			x.Append(xmlstream.New(NSUser, "status", "code", "100"))
		}
	}
	for _, c := range codes {
		if c == "201" && !self {
			continue
		}
		x.Append(xmlstream.New(NSUser, "status", "code", c))
	}
	p.Append(x)
	return p
}

// broadcastPresence sends occ's presence to every occupant (occ last, with 110).
func (m *Module) broadcastPresence(o *out, r *room, occ *occupant, codes []string) {
	for _, n := range r.sortedNicks() {
		if rc := r.occ[n]; rc != occ {
			o.add(m.presenceOf(r, occ, rc, codes, ""))
		}
	}
	o.add(m.presenceOf(r, occ, occ, codes, ""))
}

// leave removes occ and tells everyone, occ included, with the given extra status
// codes; a temporary room that becomes empty is destroyed.
func (m *Module) leave(ctx context.Context, o *out, r *room, occ *occupant, codes []string, status string) {
	for _, n := range r.sortedNicks() {
		p := m.presenceOf(r, occ, r.occ[n], codes, "unavailable")
		if status != "" {
			p.Append(xmlstream.New(NSClient, "status").AppendText(status))
		}
		o.add(p)
	}
	delete(r.occ, occ.nick)
	delete(r.byJID, occ.jid.String())
	if len(r.occ) == 0 && !r.cfg.Persistent {
		delete(m.rooms, r.name)
	}
}

func (m *Module) sendHistory(o *out, r *room, to jid.JID, x *xmlstream.Element) {
	max := len(r.hist)
	var since time.Time
	if x != nil {
		if h := x.Child(NS, "history"); h != nil {
			if v := h.Attr("maxstanzas"); v != "" {
				if n, err := strconv.Atoi(v); err == nil && n >= 0 && n < max {
					max = n
				}
			}
			if v := h.Attr("seconds"); v != "" {
				if n, err := strconv.Atoi(v); err == nil && n >= 0 {
					since = m.now().Add(-time.Duration(n) * time.Second)
				}
			}
			if v := h.Attr("since"); v != "" {
				if t, err := time.Parse(time.RFC3339, v); err == nil && t.After(since) {
					since = t
				}
			}
		}
	}
	var sel []histEntry
	for _, e := range r.hist {
		if !e.at.Before(since) {
			sel = append(sel, e)
		}
	}
	if len(sel) > max {
		sel = sel[len(sel)-max:]
	}
	for _, e := range sel {
		msg := e.msg.Copy()
		msg.SetAttr("to", to.String())
		msg.Append(xmlstream.New(NSDelay, "delay", "from", m.roomJID(r, ""), "stamp", e.at.UTC().Format("2006-01-02T15:04:05.000Z")))
		o.add(msg)
	}
}

// --- messages ---

func (m *Module) message(ctx context.Context, o *out, r *room, st *xmlstream.Element, from, to jid.JID) {
	typ := st.Attr("type")
	nick, joined := r.byJID[from.String()]
	var occ *occupant
	if joined {
		occ = r.occ[nick]
	}
	if typ == "error" {
		if occ != nil {
			m.leave(ctx, o, r, occ, nil, "")
		}
		return
	}
	if to.Resource != "" {
		m.private(o, r, occ, st, to)
		return
	}
	if x := st.Child(NSUser, "x"); x != nil && typ != "groupchat" {
		m.invitation(ctx, o, r, occ, st, from, x)
		return
	}
	if typ != "groupchat" {
		stanzaErr(o, st, module.ErrModify, "bad-request", "use type groupchat for the room")
		return
	}
	if occ == nil {
		stanzaErr(o, st, module.ErrModify, "not-acceptable", "join the room first")
		return
	}
	if occ.role == RoleVisitor {
		stanzaErr(o, st, module.ErrAuth, "forbidden", "visitors have no voice")
		return
	}
	subj := st.Child(NSClient, "subject")
	body := st.Child(NSClient, "body")
	if subj != nil && body == nil {
		if !r.cfg.ChangeSubject && occ.role != RoleModerator {
			stanzaErr(o, st, module.ErrAuth, "forbidden", "only moderators may change the subject")
			return
		}
		oldSubj, oldBy := r.subject, r.subjBy
		r.subject, r.subjBy = subj.Text(), occ.nick
		if r.cfg.Persistent {
			if err := m.save(ctx, r); err != nil {
				r.subject, r.subjBy = oldSubj, oldBy
				m.log.Error("muc: store room", "room", r.name, "err", err)
				o.add(module.StoreError(st, err))
				return
			}
		}
	}
	msg := xmlstream.New(NSClient, "message", "type", "groupchat", "from", m.roomJID(r, occ.nick))
	if id := st.Attr("id"); id != "" {
		msg.SetAttr("id", id)
	}
	for _, c := range st.Children() {
		msg.Append(c.Copy())
	}
	for _, n := range r.sortedNicks() {
		c := msg.Copy()
		c.SetAttr("to", r.occ[n].jid.String())
		o.add(c)
	}
	if body != nil && r.cfg.History > 0 {
		r.hist = append(r.hist, histEntry{at: m.now(), msg: msg})
		if len(r.hist) > r.cfg.History {
			r.hist = append([]histEntry(nil), r.hist[len(r.hist)-r.cfg.History:]...)
		}
	}
}

func (m *Module) private(o *out, r *room, occ *occupant, st *xmlstream.Element, to jid.JID) {
	if occ == nil {
		stanzaErr(o, st, module.ErrModify, "not-acceptable", "join the room first")
		return
	}
	if st.Attr("type") == "groupchat" {
		stanzaErr(o, st, module.ErrModify, "bad-request", "groupchat to an occupant")
		return
	}
	tgt := r.occ[to.Resource]
	if tgt == nil {
		stanzaErr(o, st, module.ErrCancel, "item-not-found", "no such occupant")
		return
	}
	msg := st.Copy()
	msg.SetAttr("from", m.roomJID(r, occ.nick))
	msg.SetAttr("to", tgt.jid.String())
	if msg.Child(NSUser, "x") == nil {
		msg.Append(xmlstream.New(NSUser, "x"))
	}
	o.add(msg)
}

// invitation handles mediated invitations and declines (XEP-0045 §7.8.2).
func (m *Module) invitation(ctx context.Context, o *out, r *room, occ *occupant, st *xmlstream.Element, from jid.JID, x *xmlstream.Element) {
	if d := x.Child(NSUser, "decline"); d != nil {
		tgt, err := jid.Parse(d.Attr("to"))
		if err != nil {
			stanzaErr(o, st, module.ErrModify, "jid-malformed", "")
			return
		}
		msg := xmlstream.New(NSClient, "message", "from", m.roomJID(r, ""), "to", tgt.String())
		dx := xmlstream.New(NSUser, "decline", "from", from.Bare().String())
		if rs := d.Child(NSUser, "reason"); rs != nil {
			dx.Append(rs.Copy())
		}
		o.add(msg.Append(xmlstream.New(NSUser, "x").Append(dx)))
		return
	}
	invs := []*xmlstream.Element{}
	for _, c := range x.Children() {
		if c.Space == NSUser && c.Local == "invite" {
			invs = append(invs, c)
		}
	}
	if len(invs) == 0 {
		stanzaErr(o, st, module.ErrModify, "bad-request", "")
		return
	}
	if occ == nil {
		stanzaErr(o, st, module.ErrModify, "not-acceptable", "join the room first")
		return
	}
	aff := r.aff(from)
	if r.cfg.MembersOnly && !r.cfg.AllowInvites && affRank[aff] < affRank[AffAdmin] {
		stanzaErr(o, st, module.ErrAuth, "forbidden", "only admins may invite to this room")
		return
	}
	changed := false
	for _, inv := range invs {
		tgt, err := jid.Parse(inv.Attr("to"))
		if err != nil {
			stanzaErr(o, st, module.ErrModify, "jid-malformed", "")
			return
		}
		if r.cfg.MembersOnly && r.aff(tgt) == AffNone {
			r.affs[tgt.Bare().String()] = AffMember
			changed = true
		}
		msg := xmlstream.New(NSClient, "message", "from", m.roomJID(r, ""), "to", tgt.String())
		ix := xmlstream.New(NSUser, "x")
		iv := xmlstream.New(NSUser, "invite", "from", from.Bare().String())
		if rs := inv.Child(NSUser, "reason"); rs != nil {
			iv.Append(rs.Copy())
		}
		ix.Append(iv)
		if r.cfg.Password != "" {
			ix.Append(xmlstream.New(NSUser, "password").AppendText(r.cfg.Password))
		}
		msg.Append(ix)
		// XEP-0249 form too, for clients that only read direct invitations.
		msg.Append(xmlstream.New(NSConfInv, "x", "jid", m.roomJID(r, "")))
		o.add(msg)
	}
	if changed && r.cfg.Persistent {
		if err := m.save(ctx, r); err != nil {
			m.log.Error("muc: save room", "room", r.name, "err", err)
		}
	}
}

// --- IQs ---

func (m *Module) iq(ctx context.Context, o *out, r *room, st *xmlstream.Element, from, to jid.JID) {
	typ := st.Attr("type")
	if typ == "result" || typ == "error" {
		return
	}
	q := st.FirstChild()
	nick, joined := r.byJID[from.String()]
	if to.Resource != "" {
		// XEP-0410: a ping to one's own occupant JID answers whether one is joined.
		if !joined {
			stanzaErr(o, st, module.ErrCancel, "not-acceptable", "not joined")
			return
		}
		if q != nil && q.Space == NSPing && nick == to.Resource {
			o.add(module.Result(st))
			return
		}
		stanzaErr(o, st, module.ErrCancel, "service-unavailable", "")
		return
	}
	if q == nil {
		stanzaErr(o, st, module.ErrModify, "bad-request", "")
		return
	}
	switch q.Space {
	case NSInfo:
		if typ != "get" {
			stanzaErr(o, st, module.ErrCancel, "not-allowed", "")
			return
		}
		o.add(module.Result(st, m.roomInfo(r)))
	case NSItems:
		if typ != "get" {
			stanzaErr(o, st, module.ErrCancel, "not-allowed", "")
			return
		}
		res := xmlstream.New(NSItems, "query")
		if joined || (r.cfg.Public && !r.cfg.MembersOnly) {
			for _, n := range r.sortedNicks() {
				res.Append(xmlstream.New(NSItems, "item", "jid", m.roomJID(r, n)))
			}
		}
		o.add(module.Result(st, res))
	case NSPing:
		o.add(module.Result(st))
	case NSOwner:
		m.owner(ctx, o, r, st, from, q)
	case NSAdmin:
		m.admin(ctx, o, r, st, from, q)
	default:
		stanzaErr(o, st, module.ErrCancel, "service-unavailable", "")
	}
}

func (m *Module) roomInfo(r *room) *xmlstream.Element {
	res := xmlstream.New(NSInfo, "query")
	name := r.cfg.Name
	if name == "" {
		name = r.name
	}
	res.Append(xmlstream.New(NSInfo, "identity", "category", "conference", "type", "text", "name", name))
	feats := []string{NS, NSInfo, NSItems, NSPing}
	pick := func(c bool, a, b string) {
		if c {
			feats = append(feats, a)
		} else {
			feats = append(feats, b)
		}
	}
	pick(r.cfg.Persistent, "muc_persistent", "muc_temporary")
	pick(r.cfg.Public, "muc_public", "muc_hidden")
	pick(r.cfg.MembersOnly, "muc_membersonly", "muc_open")
	pick(r.cfg.Password != "", "muc_passwordprotected", "muc_unsecured")
	pick(r.cfg.Moderated, "muc_moderated", "muc_unmoderated")
	pick(r.cfg.NonAnonymous, "muc_nonanonymous", "muc_semianonymous")
	for _, f := range feats {
		res.Append(xmlstream.New(NSInfo, "feature", "var", f))
	}
	form := xmlstream.New(NSData, "x", "type", "result")
	form.Append(field("FORM_TYPE", "hidden", NS+"#roominfo"))
	form.Append(field("muc#roominfo_description", "text-single", r.cfg.Desc))
	form.Append(field("muc#roominfo_occupants", "text-single", strconv.Itoa(len(r.occ))))
	form.Append(field("muc#roominfo_subject", "text-single", r.subject))
	return res.Append(form)
}

func field(v, typ, val string) *xmlstream.Element {
	f := xmlstream.New(NSData, "field", "var", v)
	if typ != "" {
		f.SetAttr("type", typ)
	}
	return f.Append(xmlstream.New(NSData, "value").AppendText(val))
}

func boolStr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (m *Module) configForm(r *room) *xmlstream.Element {
	c := r.cfg
	f := xmlstream.New(NSData, "x", "type", "form")
	f.Append(xmlstream.New(NSData, "title").AppendText("Configuration of " + r.name))
	f.Append(field("FORM_TYPE", "hidden", NSConfig))
	f.Append(field("muc#roomconfig_roomname", "text-single", c.Name))
	f.Append(field("muc#roomconfig_roomdesc", "text-single", c.Desc))
	f.Append(field("muc#roomconfig_persistentroom", "boolean", boolStr(c.Persistent)))
	f.Append(field("muc#roomconfig_publicroom", "boolean", boolStr(c.Public)))
	f.Append(field("muc#roomconfig_membersonly", "boolean", boolStr(c.MembersOnly)))
	f.Append(field("muc#roomconfig_passwordprotectedroom", "boolean", boolStr(c.Password != "")))
	f.Append(field("muc#roomconfig_roomsecret", "text-private", c.Password))
	f.Append(field("muc#roomconfig_moderatedroom", "boolean", boolStr(c.Moderated)))
	who := "moderators"
	if c.NonAnonymous {
		who = "anyone"
	}
	w := field("muc#roomconfig_whois", "list-single", who)
	w.Append(xmlstream.New(NSData, "option").Append(xmlstream.New(NSData, "value").AppendText("moderators")))
	w.Append(xmlstream.New(NSData, "option").Append(xmlstream.New(NSData, "value").AppendText("anyone")))
	f.Append(w)
	f.Append(field("muc#roomconfig_changesubject", "boolean", boolStr(c.ChangeSubject)))
	f.Append(field("muc#roomconfig_allowinvites", "boolean", boolStr(c.AllowInvites)))
	f.Append(field("muc#maxhistoryfetch", "text-single", strconv.Itoa(c.History)))
	return f
}

func formValues(x *xmlstream.Element) map[string]string {
	v := map[string]string{}
	for _, f := range x.Children() {
		if f.Local != "field" {
			continue
		}
		if val := f.Child(NSData, "value"); val != nil {
			v[f.Attr("var")] = val.Text()
		} else {
			v[f.Attr("var")] = ""
		}
	}
	return v
}

func truthy(s string) bool { return s == "1" || s == "true" }

func applyForm(c Config, v map[string]string) (Config, error) {
	for k, val := range v {
		switch k {
		case "muc#roomconfig_roomname":
			c.Name = val
		case "muc#roomconfig_roomdesc":
			c.Desc = val
		case "muc#roomconfig_persistentroom":
			c.Persistent = truthy(val)
		case "muc#roomconfig_publicroom":
			c.Public = truthy(val)
		case "muc#roomconfig_membersonly":
			c.MembersOnly = truthy(val)
		case "muc#roomconfig_moderatedroom":
			c.Moderated = truthy(val)
		case "muc#roomconfig_whois":
			c.NonAnonymous = val == "anyone"
		case "muc#roomconfig_changesubject":
			c.ChangeSubject = truthy(val)
		case "muc#roomconfig_allowinvites":
			c.AllowInvites = truthy(val)
		case "muc#maxhistoryfetch", "muc#roomconfig_historylength":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return c, fmt.Errorf("bad history length %q", val)
			}
			if n > MaxHistory {
				n = MaxHistory
			}
			c.History = n
		}
	}
	if p, ok := v["muc#roomconfig_passwordprotectedroom"]; ok && !truthy(p) {
		c.Password = ""
	} else if s, ok := v["muc#roomconfig_roomsecret"]; ok {
		c.Password = s
	}
	return c, nil
}

func (m *Module) owner(ctx context.Context, o *out, r *room, st *xmlstream.Element, from jid.JID, q *xmlstream.Element) {
	if r.aff(from) != AffOwner {
		stanzaErr(o, st, module.ErrAuth, "forbidden", "owners only")
		return
	}
	typ := st.Attr("type")
	if typ == "get" {
		o.add(module.Result(st, xmlstream.New(NSOwner, "query").Append(m.configForm(r))))
		return
	}
	if d := q.Child(NSOwner, "destroy"); d != nil {
		m.destroy(ctx, o, r, d)
		o.add(module.Result(st))
		return
	}
	x := q.Child(NSData, "x")
	if x == nil {
		stanzaErr(o, st, module.ErrModify, "bad-request", "")
		return
	}
	switch x.Attr("type") {
	case "cancel":
		if r.locked {
			m.destroy(ctx, o, r, nil)
		}
		o.add(module.Result(st))
		return
	case "submit":
	default:
		stanzaErr(o, st, module.ErrModify, "bad-request", "")
		return
	}
	cfg, err := applyForm(r.cfg, formValues(x))
	if err != nil {
		stanzaErr(o, st, module.ErrModify, "not-acceptable", err.Error())
		return
	}
	old := r.cfg
	r.cfg = cfg
	var werr error
	switch {
	case cfg.Persistent:
		werr = m.save(ctx, r)
	case old.Persistent:
		werr = m.unsave(ctx, r)
	}
	if werr != nil {
		r.cfg = old
		m.log.Error("muc: store room", "room", r.name, "err", werr)
		o.add(module.StoreError(st, werr))
		return
	}
	r.locked = false
	if len(r.hist) > cfg.History {
		r.hist = append([]histEntry(nil), r.hist[len(r.hist)-cfg.History:]...)
	}
	o.add(module.Result(st))
	// Members-only now: non-members leave (status 322).
	if cfg.MembersOnly && !old.MembersOnly {
		for _, n := range r.sortedNicks() {
			if oc := r.occ[n]; affRank[r.aff(oc.jid)] < affRank[AffMember] {
				m.leave(ctx, o, r, oc, []string{"322"}, "")
			}
		}
	}
}

func (m *Module) destroy(ctx context.Context, o *out, r *room, d *xmlstream.Element) {
	for _, n := range r.sortedNicks() {
		oc := r.occ[n]
		p := xmlstream.New(NSClient, "presence", "type", "unavailable", "from", m.roomJID(r, n), "to", oc.jid.String())
		x := xmlstream.New(NSUser, "x")
		x.Append(xmlstream.New(NSUser, "item", "affiliation", AffNone, "role", RoleNone))
		de := xmlstream.New(NSUser, "destroy")
		if d != nil {
			if j := d.Attr("jid"); j != "" {
				de.SetAttr("jid", j)
			}
			if rs := d.Child(NSOwner, "reason"); rs != nil {
				de.Append(xmlstream.New(NSUser, "reason").AppendText(rs.Text()))
			}
		}
		x.Append(de, xmlstream.New(NSUser, "status", "code", "110"))
		p.Append(x)
		o.add(p)
	}
	if r.cfg.Persistent {
		if err := m.unsave(ctx, r); err != nil {
			m.log.Error("muc: delete room", "room", r.name, "err", err)
		}
	}
	delete(m.rooms, r.name)
}

func (m *Module) admin(ctx context.Context, o *out, r *room, st *xmlstream.Element, from jid.JID, q *xmlstream.Element) {
	actorAff := r.aff(from)
	var actor *occupant
	if n, ok := r.byJID[from.String()]; ok {
		actor = r.occ[n]
	}
	items := q.Children()
	if len(items) == 0 {
		stanzaErr(o, st, module.ErrModify, "bad-request", "")
		return
	}
	if st.Attr("type") == "get" {
		it := items[0]
		res := xmlstream.New(NSAdmin, "query")
		if a := it.Attr("affiliation"); a != "" {
			if _, ok := affRank[a]; !ok || a == AffNone {
				stanzaErr(o, st, module.ErrModify, "bad-request", "")
				return
			}
			if affRank[actorAff] < affRank[AffAdmin] {
				stanzaErr(o, st, module.ErrAuth, "forbidden", "")
				return
			}
			var js []string
			for j, af := range r.affs {
				if af == a {
					js = append(js, j)
				}
			}
			sort.Strings(js)
			for _, j := range js {
				res.Append(xmlstream.New(NSAdmin, "item", "affiliation", a, "jid", j))
			}
		} else if role := it.Attr("role"); role != "" {
			if actor == nil || actor.role != RoleModerator {
				stanzaErr(o, st, module.ErrAuth, "forbidden", "")
				return
			}
			for _, n := range r.sortedNicks() {
				if oc := r.occ[n]; oc.role == role {
					res.Append(xmlstream.New(NSAdmin, "item", "nick", n, "role", role, "affiliation", r.aff(oc.jid), "jid", oc.jid.String()))
				}
			}
		} else {
			stanzaErr(o, st, module.ErrModify, "bad-request", "")
			return
		}
		o.add(module.Result(st, res))
		return
	}
	affChanged := false
	oldAffs := make(map[string]string, len(r.affs))
	for k, v := range r.affs {
		oldAffs[k] = v
	}
	var after []func()
	for _, it := range items {
		reason := it.ChildText(NSAdmin, "reason")
		if role := it.Attr("role"); role != "" {
			tgt := r.occ[it.Attr("nick")]
			if tgt == nil {
				stanzaErr(o, st, module.ErrCancel, "item-not-found", "no such occupant")
				return
			}
			if actor == nil || actor.role != RoleModerator {
				stanzaErr(o, st, module.ErrAuth, "forbidden", "moderators only")
				return
			}
			if affRank[r.aff(tgt.jid)] > affRank[actorAff] || (role == RoleNone && affRank[r.aff(tgt.jid)] >= affRank[AffAdmin] && actorAff != AffOwner) {
				stanzaErr(o, st, module.ErrCancel, "not-allowed", "")
				return
			}
			switch role {
			case RoleNone:
				after = append(after, func() { m.leave(ctx, o, r, tgt, []string{"307"}, reason) })
			case RoleVisitor, RoleParticipant, RoleModerator:
				if role == RoleModerator && affRank[actorAff] < affRank[AffAdmin] {
					stanzaErr(o, st, module.ErrAuth, "forbidden", "")
					return
				}
				after = append(after, func() { tgt.role = role; m.broadcastPresence(o, r, tgt, nil) })
			default:
				stanzaErr(o, st, module.ErrModify, "bad-request", "")
				return
			}
			continue
		}
		a := it.Attr("affiliation")
		if _, ok := affRank[a]; !ok {
			stanzaErr(o, st, module.ErrModify, "bad-request", "")
			return
		}
		tj, err := jid.Parse(it.Attr("jid"))
		if err != nil || it.Attr("jid") == "" {
			if oc := r.occ[it.Attr("nick")]; oc != nil {
				tj = oc.jid
			} else {
				stanzaErr(o, st, module.ErrModify, "jid-malformed", "")
				return
			}
		}
		tj = tj.Bare()
		cur := r.aff(tj)
		// Admins manage members and outcasts; owners everything (XEP-0045 §9, §10).
		if affRank[actorAff] < affRank[AffAdmin] ||
			(actorAff == AffAdmin && (affRank[cur] >= affRank[AffAdmin] || affRank[a] >= affRank[AffAdmin])) {
			stanzaErr(o, st, module.ErrAuth, "forbidden", "")
			return
		}
		if cur == AffOwner && a != AffOwner && r.countAff(AffOwner) == 1 {
			stanzaErr(o, st, module.ErrCancel, "conflict", "the last owner stays")
			return
		}
		if a == AffNone {
			delete(r.affs, tj.String())
		} else {
			r.affs[tj.String()] = a
		}
		affChanged = true
		after = append(after, func() { m.affiliationChanged(ctx, o, r, tj, a) })
	}
	if affChanged && r.cfg.Persistent {
		if err := m.save(ctx, r); err != nil {
			r.affs = oldAffs
			m.log.Error("muc: store room", "room", r.name, "err", err)
			o.add(module.StoreError(st, err))
			return
		}
	}
	o.add(module.Result(st))
	for _, f := range after {
		f()
	}
}

func (r *room) countAff(a string) int {
	n := 0
	for _, x := range r.affs {
		if x == a {
			n++
		}
	}
	return n
}

// affiliationChanged updates the occupants of bare JID j after a new affiliation:
// banned ones leave with 301, ones not members of a members-only room with 321,
// others get their new role broadcast.
func (m *Module) affiliationChanged(ctx context.Context, o *out, r *room, j jid.JID, a string) {
	for _, n := range r.sortedNicks() {
		oc := r.occ[n]
		if oc == nil || oc.jid.Bare() != j {
			continue
		}
		switch {
		case a == AffOutcast:
			m.leave(ctx, o, r, oc, []string{"301"}, "")
		case r.cfg.MembersOnly && a == AffNone:
			m.leave(ctx, o, r, oc, []string{"321"}, "")
		default:
			oc.role = r.defaultRole(a)
			m.broadcastPresence(o, r, oc, nil)
		}
	}
}

// --- storage ---

// refresh returns room name as stored in the durable table, updating or creating
// the in-memory room (a persistent room configured through another node, or
// since this node started). A room being created here (locked) or a temporary
// room is returned unchanged.
func (m *Module) refresh(name string, r *room) *room {
	if m.tab == nil || (r != nil && (r.locked || !r.cfg.Persistent && len(r.occ) > 0)) {
		return r
	}
	b, ok, err := m.tab.Get(name)
	if err != nil || !ok {
		return r
	}
	var s stored
	if err := json.Unmarshal(b, &s); err != nil {
		m.log.Error("muc: undecodable room", "room", name, "err", err)
		return r
	}
	if r == nil {
		if len(m.rooms) >= MaxRooms {
			return nil
		}
		r = newRoom(name, s.Config)
		m.rooms[name] = r
	}
	r.cfg = s.Config
	if s.Affs != nil {
		r.affs = s.Affs
	} else {
		r.affs = map[string]string{}
	}
	r.subject, r.subjBy = s.Subject, s.SubjBy
	return r
}

func (m *Module) save(ctx context.Context, r *room) error {
	b, err := json.Marshal(stored{Config: r.cfg, Affs: r.affs, Subject: r.subject, SubjBy: r.subjBy})
	if err != nil {
		return fmt.Errorf("muc: encode room: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return m.h.Store().Apply(ctx, storage.Put(Table, r.name, b))
}

func (m *Module) unsave(ctx context.Context, r *room) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return m.h.Store().Apply(ctx, storage.Delete(Table, r.name))
}

// Rooms lists the rooms (sorted), for tests and admin output.
func (m *Module) Rooms() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.rooms))
}

// Occupants lists a room's nicks (sorted).
func (m *Module) Occupants(room string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.rooms[room]; r != nil {
		return r.sortedNicks()
	}
	return nil
}

// Package muc implements Multi-User Chat (XEP-0045) on conference.DOMAIN: room
// creation (locked until configured, status 201, or instant rooms), join with
// self-presence (status 110) and occupant list, nick conflicts, groupchat
// broadcast, leave, private messages, subject, history on join (maxstanzas,
// seconds), disco#info/#items of the service and rooms, roles and affiliations
// (owner, admin, member, outcast; kick and ban through muc#admin), members-only
// and password-protected rooms, mediated invitations (XEP-0249 direct invitations
// travel user to user and need nothing here), self-ping (XEP-0410), persistent
// rooms kept in a durable table and temporary rooms destroyed when the last
// occupant leaves, and, with an Archive (mod/mam's), MAM for rooms (XEP-0313
// queries to the room JID, <stanza-id by=room/> on groupchat messages, history
// on join read from the archive).
//
// Tables: muc_rooms (durable, disc: room localpart -> JSON of a persistent room's
// configuration, affiliations and subject; they survive a full-cluster restart)
// and muc_live (durable, RAM: replicated, never on disk, empty after a full
// restart) holding the live state: temporary and locked rooms ("r\x00room"),
// occupants ("o\x00room\x00nick" -> JID, role, last presence) and an index by
// occupant JID ("j\x00full-jid\x00room" -> nick).
//
// Cluster: there is no room owner node. Every node serves the room stanzas of its
// own sessions (the router hands a domain handler those): it reads the room and
// its occupants from the replicated tables (local reads), runs the XEP-0045 logic
// and writes what changed in one batch whose conditions make it a transaction
// (an occupant added must be absent, one removed or changed present; on a
// conflict the stanza is handled again on the new state); the stanzas it emits
// reach sessions on every node through Host.Route. A lost node's occupants are
// removed by the router's single responsible survivor (EvSessionClosed for each
// lost session); the conditional delete makes that removal, and its unavailable
// presence to the remaining occupants, happen exactly once. Reads may lag
// another node's commit by the store's commit timeout: refusals and room
// creations are decided again after catching up, committed changes also reach
// occupants who joined meanwhile, and messages wait for a shared sync before
// reading the occupants. See docs/muc.md.
//
// It must not import the xmppd core or other modules.
package muc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
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
	NSMAM     = "urn:xmpp:mam:2"
	NSSID     = "urn:xmpp:sid:0"
)

// Tables: the durable table of persistent rooms and the RAM table of live state.
const (
	Table     = "muc_rooms"
	LiveTable = "muc_live"
)

// Limits.
const (
	DefaultHistory = 20
	MaxHistory     = 200
	MaxNickLen     = 64
	MaxRooms       = 10000
	// maxAttempts bounds how often a stanza is handled again after its batch
	// lost a race with another node's.
	maxAttempts = 5
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

// Archive is a message archive for rooms (MAM, XEP-0313 §4.1.2); mod/mam's
// (*Module).Rooms provides one. room is the room's bare JID string.
type Archive interface {
	// StoreRoom archives msg (a groupchat message from room/nick, no to) and
	// returns its archive id, the room's stanza-id for it. It must not block.
	StoreRoom(room, nick string, msg *xmlstream.Element) string
	// RecentRoom calls fn for the room's last max archived messages, oldest first.
	RecentRoom(ctx context.Context, room string, max int, fn func(id string, at time.Time, msg *xmlstream.Element)) error
	// QueryRoom answers a urn:xmpp:mam:2 IQ (get or set) sent to the room by from,
	// routing the results and the reply itself.
	QueryRoom(ctx context.Context, st *xmlstream.Element, from, room jid.JID)
}

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
	// NoArchive turns the room's message archive off (the form's
	// muc#roomconfig_enablearchiving, ejabberd's room option mam): its messages
	// are neither archived nor stamped with a stanza-id, and the history on join
	// is what this node relayed. Negated so that rooms stored before the option
	// existed keep archiving.
	NoArchive bool `json:"no_archive,omitempty"`
}

// archived reports whether r's messages go to the archive.
func (m *Module) archived(r *room) bool { return m.arch != nil && !r.cfg.NoArchive }

func defaultConfig() Config {
	return Config{Public: true, History: DefaultHistory}
}

// stored is a room's row (muc_rooms for persistent rooms, muc_live for the
// others).
type stored struct {
	Config  Config            `json:"config"`
	Affs    map[string]string `json:"affs"`
	Subject string            `json:"subject,omitempty"`
	SubjBy  string            `json:"subject_by,omitempty"`
	Locked  bool              `json:"locked,omitempty"`
}

// occRow is an occupant's row in muc_live.
type occRow struct {
	JID  string `json:"jid"`
	Role string `json:"role"`
	Pres string `json:"pres,omitempty"` // the occupant's last presence, XML
}

type occupant struct {
	nick string
	jid  jid.JID
	role string
	pres *xmlstream.Element // last presence as received (children kept)
	js   string             // jid.String() when read from the table ("" otherwise)
}

// full is the occupant's real JID as a string.
func (oc *occupant) full() string {
	if oc.js != "" {
		return oc.js
	}
	return oc.jid.String()
}

type histEntry struct {
	at  time.Time
	id  string
	msg *xmlstream.Element // from = room/nick, no to
}

type room struct {
	name    string
	cfg     Config
	affs    map[string]string // bare JID -> affiliation (none omitted)
	occ     map[string]*occupant
	byJID   map[string]string // full JID -> nick
	subject string
	subjBy  string
	locked  bool
	gone    bool // destroyed, or a temporary room that became empty
	// nicks is the sorted nick list of a room shared from the cache (which
	// nobody changes), order its occupants in that order; nil in a room being
	// changed (see clone).
	nicks []string
	order []*occupant
}

// clone returns a copy of r that may be changed without touching r: its maps
// and occupants are copied (an occupant's presence element is shared; it is
// replaced, never changed in place).
func (r *room) clone() *room {
	c := *r
	c.affs = maps.Clone(r.affs)
	if c.affs == nil {
		c.affs = map[string]string{}
	}
	c.occ = make(map[string]*occupant, len(r.occ))
	for n, oc := range r.occ {
		cp := *oc
		c.occ[n] = &cp
	}
	c.byJID = maps.Clone(r.byJID)
	if c.byJID == nil {
		c.byJID = map[string]string{}
	}
	c.nicks, c.order = nil, nil
	return &c
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
	locks  [64]sync.Mutex // by room name: a node handles one stanza per room at a time
	h      module.Host
	log    *slog.Logger
	domain string // the default host's service
	// services are every served host's service (virtual hosts); svcNames the
	// names SetServices gave (host -> service).
	services map[string]bool
	svcNames map[string]string
	tab      storage.Table // muc_rooms
	live     storage.Table // muc_live
	arch     Archive
	now      func() time.Time

	mu   sync.Mutex
	hist map[string][]histEntry // per room, without an Archive: what this node relayed
	pres map[string]presCache   // occupant key -> decoded presence

	// rooms caches each room as last decoded, with the rows it was decoded
	// from (see view): a message to a room whose rows did not change decodes
	// nothing.
	cmu   sync.Mutex
	rooms map[string]*cachedRoom

	// pr is the host's ParsedRouter, if it has one: groupchat copies go to
	// the core without their JIDs being prepared again or copied once more.
	pr module.ParsedRouter
	// lagFree: the store applies every write in its Apply on this node (a
	// single-node store, Backend "local"), so reads never lag a commit and a
	// message needs no sync before reading the occupants.
	lagFree bool

	bmu      sync.Mutex
	bnext    *barrierCall // the next sync, not started yet
	brunning bool
	bfailed  time.Time // when a sync last failed (no quorum): messages then skip it for a while

	stop     chan struct{}
	stopOnce sync.Once
}

// syncPause is how long messages stop waiting for syncs after one failed: the
// store is not committing, and messages (which write nothing) keep flowing on
// this node's reads.
const syncPause = 5 * time.Second

var errSyncPaused = errors.New("muc: sync paused after a failure")

type barrierCall struct {
	done chan struct{}
	err  error
}

type presCache struct {
	raw string
	el  *xmlstream.Element
}

// New returns the module.
func New() *Module {
	return &Module{now: time.Now, hist: map[string][]histEntry{}, pres: map[string]presCache{}, rooms: map[string]*cachedRoom{}, stop: make(chan struct{})}
}

// WithArchive makes the module archive its rooms' groupchat messages in a
// (MAM for rooms) and read history on join from it; it returns m.
func (m *Module) WithArchive(a Archive) *Module {
	m.arch = a
	return m
}

// Name implements module.Module.
func (*Module) Name() string { return "muc" }

// Domain is the default host's service domain (set by Start).
func (m *Module) Domain() string { return m.domain }

// SetServices names each host's MUC service (host -> service domain, e.g. a
// host_config muc_domain); a served host not named gets conference.HOST. Call
// before Start.
func (m *Module) SetServices(svcs map[string]string) { m.svcNames = svcs }

// Services lists the service domains served (set by Start), sorted.
func (m *Module) Services() []string {
	out := make([]string, 0, len(m.services))
	for d := range m.services {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// Virtual hosts: one service per served host (conference.a.example,
// conference.b.example), rooms apart. A room of the default host's service is
// keyed by its localpart in the tables (as before virtual hosts), a room of
// another service by localpart@service (a localpart never holds '@').

// roomKey is the tables' key of the room to (a room JID at one of the services).
func (m *Module) roomKey(to jid.JID) string {
	if to.Domain == m.domain {
		return to.Local
	}
	return to.Local + "@" + to.Domain
}

// keyParts splits a room key into its localpart and service.
func (m *Module) keyParts(key string) (local, service string) {
	if l, svc, ok := strings.Cut(key, "@"); ok {
		return l, svc
	}
	return key, m.domain
}

// Start declares the tables and registers conference.DOMAIN with the host's
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
	if err := h.Store().Declare(ctx, storage.TableSpec{Name: LiveTable, Copy: storage.RAM}); err != nil {
		return fmt.Errorf("muc: declare table %s: %w", LiveTable, err)
	}
	var err error
	if m.tab, err = h.Store().Durable(Table); err != nil {
		return fmt.Errorf("muc: %w", err)
	}
	if m.live, err = h.Store().Durable(LiveTable); err != nil {
		return fmt.Errorf("muc: %w", err)
	}
	m.services = map[string]bool{}
	for _, host := range module.Hosts(h) {
		svc := m.svcNames[host]
		if svc == "" {
			svc = "conference." + host
		}
		if host == h.Domain() {
			m.domain = svc
		}
		m.services[svc] = true
	}
	m.pr, _ = h.(module.ParsedRouter)
	m.lagFree = h.Store().Status().Backend == "local"
	h.Hook(module.EvSessionClosed, 50, m.sessionClosed)
	for _, svc := range m.Services() {
		dr.HandleDomain(svc, m.Handle)
	}
	return nil
}

// Stop implements module.Module.
func (m *Module) Stop(context.Context) error {
	m.stopOnce.Do(func() { close(m.stop) })
	if dr, ok := m.h.(module.DomainRouter); ok {
		for _, svc := range m.Services() {
			dr.HandleDomain(svc, nil)
		}
	}
	return nil
}

func newRoom(name string, cfg Config) *room {
	return &room{name: name, cfg: cfg, affs: map[string]string{}, occ: map[string]*occupant{}, byJID: map[string]string{}}
}

// out collects stanzas to route once the room's batch is committed and the lock
// released (a routed stanza may come back to Handle, e.g. an error bounce).
type out struct {
	sts []*xmlstream.Element
	// dst holds, for the stanzas added with addParsed, their prepared from
	// and to (sts[i]'s is dst[i] when i < len(dst) and dst[i].from != nil).
	dst []dest
	// late builds, for an occupant who joined through another node while this
	// stanza was handled (absent from what was read, present once the batch is
	// committed), what a broadcast of this stanza would have sent them.
	late []func(rc *occupant) *xmlstream.Element
}

func (o *out) add(st *xmlstream.Element) { o.sts = append(o.sts, st) }

// dest points at the JIDs rather than holding them: a room's message makes one
// per occupant, and all share the one from (JIDs by value made this list ~100
// bytes per copy).
type dest struct{ from, to *jid.JID }

// addParsed adds st, a stanza nobody else holds, whose from and to attributes
// are exactly *from and *to (prepared JIDs, unchanged until the flush).
func (o *out) addParsed(st *xmlstream.Element, from, to *jid.JID) {
	if o.dst == nil {
		o.dst = make([]dest, len(o.sts), cap(o.sts))
	}
	for len(o.dst) < len(o.sts) {
		o.dst = append(o.dst, dest{})
	}
	o.sts = append(o.sts, st)
	o.dst = append(o.dst, dest{from: from, to: to})
}

// grow makes room for n more stanzas (with their prepared JIDs when parsed),
// so that a room's fan-out does not grow the lists copy by copy.
func (o *out) grow(n int, parsed bool) {
	o.sts = slices.Grow(o.sts, n)
	if parsed {
		o.dst = slices.Grow(o.dst, len(o.sts)+n-len(o.dst))
	}
}

// also registers a broadcast's stanza for late occupants.
func (o *out) also(fn func(rc *occupant) *xmlstream.Element) { o.late = append(o.late, fn) }

func (m *Module) flush(ctx context.Context, o out) {
	for i, st := range o.sts {
		if m.pr != nil && i < len(o.dst) && o.dst[i].from != nil {
			m.pr.RouteParsed(ctx, st, *o.dst[i].from, *o.dst[i].to)
			continue
		}
		m.h.Route(ctx, st)
	}
}

func one(st *xmlstream.Element) out { return out{sts: []*xmlstream.Element{st}} }

// Handle is the module.DomainHandler for conference.DOMAIN.
func (m *Module) Handle(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	if from.IsZero() || m.services[from.Domain] {
		return
	}
	if st.Space == "" {
		st.Space = NSClient
	}
	if to.Local == "" {
		var o out
		m.service(&o, st, from, to)
		m.flush(ctx, o)
		return
	}
	if st.Local == "iq" && to.Resource == "" && m.arch != nil {
		if q := st.FirstChild(); q != nil && q.Space == NSMAM && (st.Attr("type") == "get" || st.Attr("type") == "set") {
			m.mamQuery(ctx, st, from, to)
			return
		}
	}
	synced := false
	if st.Local == "message" && st.Attr("type") != "error" {
		// The occupants a message goes to must include everyone whose join
		// committed before it arrived, through any node: catch up first (one
		// sync serves every message that waits for it). A store whose reads
		// never lag needs none.
		err := error(nil)
		if !m.lagFree {
			err = m.barrier(ctx)
		}
		if err != nil {
			m.log.Debug("muc: sync before a message", "err", err)
		}
		synced = err == nil
	}
	// A groupchat message to the room (no subject change, not an error)
	// changes nothing in the room: it is handled on the shared decoded room.
	ro := st.Local == "message" && st.Attr("type") == "groupchat" && to.Resource == "" &&
		(st.Child(NSClient, "subject") == nil || st.Child(NSClient, "body") != nil)
	_ = m.transact(ctx, m.roomKey(to), st, synced, ro, func(o *out, r *room) *room {
		switch st.Local {
		case "presence":
			return m.presence(ctx, o, r, st, from, to)
		case "message":
			if r == nil {
				stanzaErr(o, st, module.ErrCancel, "item-not-found", "")
				return nil
			}
			m.message(ctx, o, r, st, from, to)
		case "iq":
			if r == nil || (r.locked && r.aff(from) != AffOwner) {
				stanzaErr(o, st, module.ErrCancel, "item-not-found", "")
				return r
			}
			m.iq(ctx, o, r, st, from, to)
		}
		return r
	})
}

// mamQuery hands a MAM query to the archive once the sender may read it: not an
// outcast, and an occupant or member of a members-only or hidden room.
func (m *Module) mamQuery(ctx context.Context, st *xmlstream.Element, from, to jid.JID) {
	for synced := false; ; synced = true {
		c, err := m.view(m.roomKey(to))
		var r *room
		if err == nil {
			r = c.r
		}
		var o out
		switch {
		case err != nil:
			o.add(module.StoreError(st, err))
		case r == nil || (r.locked && r.aff(from) != AffOwner):
			stanzaErr(&o, st, module.ErrCancel, "item-not-found", "")
		case r.aff(from) == AffOutcast:
			stanzaErr(&o, st, module.ErrAuth, "forbidden", "")
		case (r.cfg.MembersOnly || !r.cfg.Public) && affRank[r.aff(from)] < affRank[AffMember] && r.byJID[from.String()] == "":
			stanzaErr(&o, st, module.ErrAuth, "forbidden", "members and occupants only")
		default:
			m.arch.QueryRoom(ctx, st, from, to.Bare())
			return
		}
		// A refusal on a read that may lag (see transact): decide again once.
		if synced || err != nil || m.sync(ctx) != nil {
			m.flush(ctx, o)
			return
		}
	}
}

// transact handles one stanza (st, nil for an internal event) on room name: it
// loads the room, runs fn, which returns the room as it should be (nil: none),
// and writes the difference in one batch. A batch refused on a condition (another
// node changed the room meanwhile) runs fn again on the new state; a batch that
// cannot be written answers st with a wait error and sends nothing else. synced
// says this node caught up with the cluster just before (see sync).
//
// ro says fn changes nothing in the room it is given: fn then gets the shared
// decoded room (see view) instead of a copy, and nothing is written, provided
// that the room as read needs no write of its own (cachedRoom.clean);
// otherwise fn runs on a copy as usual.
func (m *Module) transact(ctx context.Context, name string, st *xmlstream.Element, synced, ro bool, fn func(o *out, r *room) *room) error {
	mu := m.lockFor(name)
	for attempt := 1; ; attempt++ {
		mu.Lock()
		var r *room
		var s *snap
		c, err := m.view(name)
		shared := false
		if err == nil {
			s = c.s
			if ro && c.clean && c.r != nil {
				r, shared = c.r, true
			} else if c.r != nil {
				r = c.r.clone()
			}
		}
		if err != nil {
			mu.Unlock()
			m.log.Error("muc: read room", "room", name, "err", err)
			if st != nil {
				m.flush(ctx, one(module.StoreError(st, err)))
			}
			return err
		}
		var o out
		var ops []storage.Op
		if shared {
			fn(&o, r)
		} else {
			r = fn(&o, r)
			ops = m.diff(name, r, s)
		}
		creates := s.room == nil && r != nil && !r.gone
		if !synced && (creates || len(ops) == 0 && refused(o)) {
			// A refusal, or a room that seems not to exist yet, may come from a
			// read that lags a change another node just committed (an owner
			// unlocked the room, then told others to join): catch up with the
			// cluster once and decide again.
			mu.Unlock()
			synced = true
			if m.sync(ctx) == nil {
				attempt--
				continue
			}
			mu.Lock()
		}
		if len(ops) > 0 {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = m.h.Store().Apply(actx, ops...)
			cancel()
			if err == nil && len(o.late) > 0 {
				m.lateOccupants(name, r, s, &o)
			}
		}
		mu.Unlock()
		if err == nil {
			m.flush(ctx, o)
			return nil
		}
		if errors.Is(err, storage.ErrConflict) && attempt < maxAttempts {
			continue
		}
		m.log.Warn("muc: store room", "room", name, "err", err)
		if st != nil && st.Attr("type") != "error" && st.Attr("type") != "unavailable" {
			m.flush(ctx, one(module.StoreError(st, err)))
		}
		return err
	}
}

// lateOccupants adds to o what its broadcasts owe the occupants that joined
// through other nodes while the stanza was handled. This node's reads are up to
// date once its batch is committed (Apply returns after applying it here, and
// everything committed before it), so a read now finds every occupant whose join
// committed first; one whose join commits later reads this batch's result
// itself.
func (m *Module) lateOccupants(name string, r *room, s *snap, o *out) {
	c, err := m.view(name)
	if err != nil || c.r == nil {
		return
	}
	fresh := c.r
	for _, n := range fresh.sortedNicks() {
		if _, read := s.occ[n]; read {
			continue
		}
		if r != nil {
			if _, ours := r.occ[n]; ours {
				continue
			}
		}
		for _, fn := range o.late {
			if st := fn(fresh.occ[n]); st != nil {
				o.add(st)
			}
		}
	}
}

// barrier returns once this node has applied every write committed in the
// cluster before it was called. Callers share syncs: one that has not started
// yet when a caller arrives serves it, so under load one commit covers many
// messages.
func (m *Module) barrier(ctx context.Context) error {
	m.bmu.Lock()
	if !m.bfailed.IsZero() && time.Since(m.bfailed) < syncPause {
		m.bmu.Unlock()
		return errSyncPaused
	}
	c := m.bnext
	if c == nil {
		c = &barrierCall{done: make(chan struct{})}
		m.bnext = c
		if !m.brunning {
			m.brunning = true
			go m.barriers()
		}
	}
	m.bmu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Module) barriers() {
	for {
		m.bmu.Lock()
		c := m.bnext
		m.bnext = nil
		if c == nil {
			m.brunning = false
			m.bmu.Unlock()
			return
		}
		m.bmu.Unlock()
		c.err = m.sync(context.Background())
		m.bmu.Lock()
		if c.err != nil {
			m.bfailed = time.Now()
		} else {
			m.bfailed = time.Time{}
		}
		m.bmu.Unlock()
		close(c.done)
	}
}

// refused reports whether o holds an error reply.
func refused(o out) bool {
	for _, st := range o.sts {
		if st.Attr("type") == "error" {
			return true
		}
	}
	return false
}

// sync returns once this node has applied every write committed before it was
// called: a batch (an empty delete) goes through the replicated log, and Apply
// returns after this node applied it.
func (m *Module) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return m.h.Store().Apply(ctx, storage.Delete(LiveTable, "sync"))
}

func (m *Module) lockFor(name string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return &m.locks[h.Sum32()%uint32(len(m.locks))]
}

// sessionClosed removes a session that ended from every room it was in. For a
// session of a lost node the router runs this on one survivor only; the
// conditional delete makes the removal happen once even if two nodes ran it.
func (m *Module) sessionClosed(ctx context.Context, _ module.Host, ev *module.EventData) bool {
	if m.live == nil {
		return false
	}
	full := ev.From
	if ev.Session != nil {
		full = ev.Session.JID()
	}
	var rooms []string
	prefix := jidPrefix(full.String())
	if err := m.live.Scan(prefix, func(k string, _ []byte) bool {
		rooms = append(rooms, k[len(prefix):])
		return true
	}); err != nil {
		m.log.Error("muc: read occupancy", "jid", full.String(), "err", err)
	}
	for _, name := range rooms {
		if err := m.removeOccupant(ctx, name, full); errors.Is(err, storage.ErrUnavailable) {
			// No quorum right now (a raft election after the leader died with
			// the node): retry in the background rather than leave a ghost.
			go m.retryRemove(name, full)
		}
	}
	return false
}

func (m *Module) removeOccupant(ctx context.Context, name string, full jid.JID) error {
	return m.transact(ctx, name, nil, false, false, func(o *out, r *room) *room {
		if r != nil {
			if nick, ok := r.byJID[full.String()]; ok {
				m.leave(ctx, o, r, r.occ[nick], nil, "")
			}
		}
		return r
	})
}

// retryRemove removes the ended session full from room name once the store
// takes writes again (bounded: about a minute), unless the session is back.
func (m *Module) retryRemove(name string, full jid.JID) {
	wait := 250 * time.Millisecond
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		select {
		case <-m.stop:
			return
		case <-time.After(wait):
		}
		if m.h.Session(full) != nil {
			return
		}
		err := m.removeOccupant(context.Background(), name, full)
		if !errors.Is(err, storage.ErrUnavailable) {
			return
		}
		wait = min(2*wait, 4*time.Second)
	}
	m.log.Warn("muc: could not remove an ended session from a room (storage unavailable)", "room", name, "jid", full.String())
}

func stanzaErr(o *out, st *xmlstream.Element, typ, cond, text string) {
	if st.Attr("type") == "error" {
		return
	}
	o.add(module.Error(st, typ, cond, text))
}

func (m *Module) roomJID(r *room, nick string) string {
	local, svc := m.keyParts(r.name)
	if nick == "" {
		return local + "@" + svc
	}
	return local + "@" + svc + "/" + nick
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
		for _, s := range m.allRooms() {
			local, svc := m.keyParts(s.name)
			if !s.Config.Public || s.Locked || svc != to.Domain {
				continue // other services' rooms are theirs to list
			}
			name := s.Config.Name
			if name == "" {
				name = local
			}
			res.Append(xmlstream.New(NSItems, "item", "jid", local+"@"+svc, "name", name))
		}
		o.add(module.Result(st, res))
	case q != nil && q.Space == NSPing && q.Local == "ping" && typ == "get":
		o.add(module.Result(st))
	default:
		stanzaErr(o, st, module.ErrCancel, "service-unavailable", "")
	}
}

// --- presence: join, update, leave ---

func (m *Module) presence(ctx context.Context, o *out, r *room, st *xmlstream.Element, from, to jid.JID) *room {
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
		return r
	case "unavailable":
		if occ != nil {
			m.leave(ctx, o, r, occ, nil, st.ChildText(NSClient, "status"))
		}
		return r
	case "":
	default:
		return r // subscriptions and probes: not for rooms
	}
	if to.Resource == "" {
		stanzaErr(o, st, module.ErrModify, "jid-malformed", "a nickname is required")
		return r
	}
	if occ != nil {
		if occ.nick != to.Resource {
			m.changeNick(o, r, occ, st, to.Resource)
			return r
		}
		occ.pres = st
		m.broadcastPresence(o, r, occ, nil)
		return r
	}
	return m.join(ctx, o, r, st, from, to)
}

// changeNick moves occ to nick (XEP-0045 §7.6): every occupant gets occ's old
// nick unavailable with status 303 and the new nick, then its presence under the
// new nick. The batch deletes the old occupant row and creates the new one on
// the condition that it is absent, so a nick taken meanwhile through another
// node fails the batch and the change is decided again (then: conflict).
func (m *Module) changeNick(o *out, r *room, occ *occupant, st *xmlstream.Element, nick string) {
	if len(nick) > MaxNickLen {
		stanzaErr(o, st, module.ErrModify, "not-acceptable", "nickname too long")
		return
	}
	if _, taken := r.occ[nick]; taken {
		stanzaErr(o, st, module.ErrCancel, "conflict", "nickname in use")
		return
	}
	old := *occ
	unavailable := func(rc *occupant) *xmlstream.Element {
		if rc == occ {
			rc = &old
		}
		p := m.presenceOf(r, &old, rc, []string{"303"}, "unavailable")
		if item := p.Child(NSUser, "x").Child(NSUser, "item"); item != nil {
			item.SetAttr("role", old.role) // still in the room (XEP-0045 example 56)
			item.SetAttr("nick", nick)
		}
		return p
	}
	for _, rc := range r.sortedOccupants() {
		o.add(unavailable(rc))
	}
	o.also(unavailable)
	delete(r.occ, occ.nick)
	occ.nick = nick
	occ.pres = st
	r.occ[nick] = occ
	r.byJID[occ.jid.String()] = nick
	m.broadcastPresence(o, r, occ, nil)
}

func (m *Module) join(ctx context.Context, o *out, r *room, st *xmlstream.Element, from, to jid.JID) *room {
	nick := to.Resource
	if len(nick) > MaxNickLen {
		stanzaErr(o, st, module.ErrModify, "not-acceptable", "nickname too long")
		return r
	}
	x := st.Child(NS, "x")
	created := false
	if r == nil {
		if m.roomCount() >= MaxRooms {
			stanzaErr(o, st, module.ErrWait, "resource-constraint", "too many rooms")
			return nil
		}
		r = newRoom(m.roomKey(to), defaultConfig())
		r.affs[from.Bare().String()] = AffOwner
		// A MUC-aware client gets a locked room to configure (status 201); a
		// presence without <x/> creates an instant room (XEP-0045 §10.1.1).
		r.locked = x != nil
		created = true
	} else if r.locked && r.aff(from) != AffOwner {
		stanzaErr(o, st, module.ErrCancel, "item-not-found", "the room is locked until its owner configures it")
		return r
	}
	aff := r.aff(from)
	fail := r
	if created {
		fail = nil
	}
	switch {
	case aff == AffOutcast:
		stanzaErr(o, st, module.ErrAuth, "forbidden", "you are banned from this room")
		return fail
	case r.cfg.MembersOnly && affRank[aff] < affRank[AffMember]:
		stanzaErr(o, st, module.ErrAuth, "registration-required", "members only")
		return fail
	case r.cfg.Password != "" && affRank[aff] < affRank[AffOwner] && (x == nil || x.ChildText(NS, "password") != r.cfg.Password):
		stanzaErr(o, st, module.ErrAuth, "not-authorized", "password required")
		return fail
	}
	if _, taken := r.occ[nick]; taken {
		stanzaErr(o, st, module.ErrCancel, "conflict", "nickname in use")
		return r
	}
	occ := &occupant{nick: nick, jid: from, role: r.defaultRole(aff), pres: st}
	// Existing occupants to the newcomer (and those whose joins commit meanwhile
	// through other nodes).
	for _, rc := range r.sortedOccupants() {
		o.add(m.presenceOf(r, rc, occ, nil, ""))
	}
	o.also(func(rc *occupant) *xmlstream.Element { return m.presenceOf(r, rc, occ, nil, "") })
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
	m.sendHistory(ctx, o, r, from, x)
	subj := xmlstream.New(NSClient, "message", "type", "groupchat", "from", m.roomJID(r, r.subjBy), "to", from.String())
	if r.subjBy == "" {
		subj.SetAttr("from", m.roomJID(r, ""))
	}
	subj.Append(xmlstream.New(NSClient, "subject").AppendText(r.subject))
	o.add(subj)
	return r
}

func (r *room) sortedNicks() []string {
	if r.nicks != nil {
		return r.nicks
	}
	ns := make([]string, 0, len(r.occ))
	for n := range r.occ {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// sortedOccupants returns the occupants in nick order: a room's message goes
// to each in that order without a lookup by nick per copy.
func (r *room) sortedOccupants() []*occupant {
	if r.order != nil {
		return r.order
	}
	ns := r.sortedNicks()
	out := make([]*occupant, len(ns))
	for i, n := range ns {
		out[i] = r.occ[n]
	}
	return out
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
	for _, rc := range r.sortedOccupants() {
		if rc != occ {
			o.add(m.presenceOf(r, occ, rc, codes, ""))
		}
	}
	o.add(m.presenceOf(r, occ, occ, codes, ""))
	o.also(func(rc *occupant) *xmlstream.Element { return m.presenceOf(r, occ, rc, codes, "") })
}

// leave removes occ and tells everyone, occ included, with the given extra status
// codes; a temporary room that becomes empty is destroyed.
func (m *Module) leave(ctx context.Context, o *out, r *room, occ *occupant, codes []string, status string) {
	unavailable := func(rc *occupant) *xmlstream.Element {
		p := m.presenceOf(r, occ, rc, codes, "unavailable")
		if status != "" {
			p.Append(xmlstream.New(NSClient, "status").AppendText(status))
		}
		return p
	}
	for _, rc := range r.sortedOccupants() {
		o.add(unavailable(rc))
	}
	o.also(unavailable)
	delete(r.occ, occ.nick)
	delete(r.byJID, occ.jid.String())
	if len(r.occ) == 0 && !r.cfg.Persistent {
		r.gone = true
		m.forget(r.name)
	}
}

// history returns the room's last max groupchat messages with a body, oldest
// first: from the archive when there is one, else what this node relayed.
func (m *Module) history(ctx context.Context, r *room, max int) []histEntry {
	if max <= 0 {
		return nil
	}
	if m.archived(r) {
		var out []histEntry
		err := m.arch.RecentRoom(ctx, m.roomJID(r, ""), max, func(id string, at time.Time, msg *xmlstream.Element) {
			out = append(out, histEntry{at: at, id: id, msg: msg})
		})
		if err != nil {
			m.log.Warn("muc: history from the archive", "room", r.name, "err", err)
		}
		return out
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hist[r.name]
	if len(h) > max {
		h = h[len(h)-max:]
	}
	return append([]histEntry(nil), h...)
}

// remember keeps a relayed message for the history on join (without an archive,
// or with the room's archiving off).
func (m *Module) remember(r *room, e histEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := append(m.hist[r.name], e)
	if len(h) > r.cfg.History {
		h = append([]histEntry(nil), h[len(h)-r.cfg.History:]...)
	}
	m.hist[r.name] = h
}

func (m *Module) forget(name string) {
	m.mu.Lock()
	delete(m.hist, name)
	m.mu.Unlock()
}

func (m *Module) sendHistory(ctx context.Context, o *out, r *room, to jid.JID, x *xmlstream.Element) {
	max := r.cfg.History
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
	for _, e := range m.history(ctx, r, max) {
		if e.at.Before(since) {
			continue
		}
		msg := e.msg.Copy()
		msg.SetAttr("to", to.String())
		if e.id != "" && msg.Child(NSSID, "stanza-id") == nil {
			msg.Append(xmlstream.New(NSSID, "stanza-id", "by", m.roomJID(r, ""), "id", e.id))
		}
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
		r.subject, r.subjBy = subj.Text(), occ.nick
	}
	msg := xmlstream.New(NSClient, "message", "type", "groupchat", "from", m.roomJID(r, occ.nick))
	if id := st.Attr("id"); id != "" {
		msg.SetAttr("id", id)
	}
	self := m.roomJID(r, "")
	for _, c := range st.Children() {
		if c.Space == NSSID && c.Local == "stanza-id" && sameBare(c.Attr("by"), self) {
			continue // forged by the sender (XEP-0359 §3.1)
		}
		msg.Append(c.Copy())
	}
	if body != nil {
		e := histEntry{at: m.now(), msg: msg}
		if m.archived(r) {
			e.id = m.arch.StoreRoom(self, occ.nick, msg)
			msg = msg.Copy()
			msg.Append(xmlstream.New(NSSID, "stanza-id", "by", self, "id", e.id))
		} else if r.cfg.History > 0 {
			m.remember(r, e)
		}
	}
	// One copy per occupant (the core may hand each to a session as it is),
	// routed with its JIDs already prepared when the host allows.
	fromJ, ferr := jid.Parse(msg.Attr("from"))
	parsed := m.pr != nil && ferr == nil
	occs := r.sortedOccupants()
	o.grow(len(occs), parsed)
	for _, rc := range occs {
		c := copyTo(msg, rc.full())
		if parsed {
			o.addParsed(c, &fromJ, &rc.jid)
		} else {
			o.add(c)
		}
	}
	o.also(func(rc *occupant) *xmlstream.Element {
		c := msg.Copy()
		c.SetAttr("to", rc.jid.String())
		return c
	})
}

// copyTo returns a copy of msg (which has no to) addressed to to. The copies
// of one message share its children (xmlstream.Element.CopyShared): a room
// makes one per occupant, and deep copies were most of what a message to a
// large room allocated.
func copyTo(msg *xmlstream.Element, to string) *xmlstream.Element {
	c := msg.CopyShared()
	c.Attrs = append(c.Attrs, xmlstream.Attr{Local: "to", Value: to})
	return c
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
	for _, inv := range invs {
		tgt, err := jid.Parse(inv.Attr("to"))
		if err != nil {
			stanzaErr(o, st, module.ErrModify, "jid-malformed", "")
			return
		}
		if r.cfg.MembersOnly && r.aff(tgt) == AffNone {
			r.affs[tgt.Bare().String()] = AffMember
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
		name, _ = m.keyParts(r.name)
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
	if m.archived(r) {
		feats = append(feats, NSMAM, NSSID)
	}
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
	if m.arch != nil {
		f.Append(field("muc#roomconfig_enablearchiving", "boolean", boolStr(!c.NoArchive)))
	}
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
		case "muc#roomconfig_enablearchiving", "mam":
			c.NoArchive = !truthy(val)
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
	r.locked = false
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
	for _, oc := range r.sortedOccupants() {
		p := xmlstream.New(NSClient, "presence", "type", "unavailable", "from", m.roomJID(r, oc.nick), "to", oc.jid.String())
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
	r.gone = true
	m.forget(r.name)
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
			for _, oc := range r.sortedOccupants() {
				if oc.role == role {
					res.Append(xmlstream.New(NSAdmin, "item", "nick", oc.nick, "role", role, "affiliation", r.aff(oc.jid), "jid", oc.jid.String()))
				}
			}
		} else {
			stanzaErr(o, st, module.ErrModify, "bad-request", "")
			return
		}
		o.add(module.Result(st, res))
		return
	}
	// Changes apply only if every item is acceptable.
	oldAffs := r.affs
	r.affs = maps.Clone(oldAffs)
	done := false
	defer func() {
		if !done {
			r.affs = oldAffs
		}
	}()
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
		after = append(after, func() { m.affiliationChanged(ctx, o, r, tj, a) })
	}
	done = true
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

// Keys of muc_live.
func roomKey(name string) string      { return "r\x00" + name }
func occPrefix(name string) string    { return "o\x00" + name + "\x00" }
func jidPrefix(full string) string    { return "j\x00" + full + "\x00" }
func jidKey(full, name string) string { return jidPrefix(full) + name }

// snap is what load read, for diff.
type snap struct {
	room []byte // the room's row (nil: none)
	disc bool   // the row is in muc_rooms
	occ  map[string][]byte
	jids map[string]string // nick -> full JID of the rows read
}

// cachedRoom is a room as decoded from its rows, with copies of those rows.
// Nothing in it is changed once it is cached: load hands out clones.
type cachedRoom struct {
	raw   []byte // the room's row (nil: none)
	disc  bool
	keys  []string // occupant rows' keys, in key order
	vals  [][]byte
	r     *room // nil: no room
	s     *snap
	clean bool // diff(r, s) is empty: a handler that changes nothing writes nothing
	// tabStamp and liveStamp: the two tables' stamps (storage.Stamped) read
	// before the rows this entry was last checked against; while both are
	// unchanged the entry is current without reading a row (under cmu).
	tabStamp, liveStamp any
}

// maxCached bounds the room cache (it is cleared when full, as the presence
// cache is).
const maxCached = MaxRooms

// load reads room name and its occupants (see view) and returns a copy of the
// room that the caller may change, and what was read (for diff).
func (m *Module) load(name string) (*room, *snap, error) {
	c, err := m.view(name)
	if err != nil || c.r == nil {
		return nil, sOf(c), err
	}
	return c.r.clone(), c.s, nil
}

func sOf(c *cachedRoom) *snap {
	if c == nil {
		return nil
	}
	return c.s
}

// view reads room name and its occupants from the tables (local reads) and
// returns them decoded. The decoding is cached with the rows it came from, and
// a read that finds the same bytes in every row (the room's, each occupant's,
// and no row more or less) returns the cached room: a change through any node
// (join, leave, nick or role change, configuration) changes a row, so the next
// read decodes again. The result is shared: it must not be changed (load
// clones it).
//
// A room with occupant rows but no room row (its last occupant left through
// one node while someone joined through another: the leave deleted the
// temporary room) comes back as the room that join would have created: an
// instant room with the default configuration, its occupants its owners.
func (m *Module) view(name string) (*cachedRoom, error) {
	// Stamps first: a write after them makes them differ next time, so an
	// entry is never taken for current on stamps read after its rows.
	ts, ls := storage.StampOf(m.tab), storage.StampOf(m.live)
	m.cmu.Lock()
	c := m.rooms[name]
	if c != nil && ts != nil && ls != nil && c.tabStamp == ts && c.liveStamp == ls {
		m.cmu.Unlock()
		return c, nil // nothing written to either table since it was checked
	}
	m.cmu.Unlock()
	raw, disc, err := m.roomRow(name)
	if err != nil {
		return nil, err
	}
	if c != nil && c.disc == disc && bytes.Equal(c.raw, raw) && (c.raw == nil) == (raw == nil) {
		same, n := true, 0
		prefix := occPrefix(name)
		err := m.live.Scan(prefix, func(k string, v []byte) bool {
			if n >= len(c.keys) || c.keys[n] != k || !bytes.Equal(c.vals[n], v) {
				same = false
				return false
			}
			n++
			return true
		})
		if err != nil {
			return nil, err
		}
		if same && n == len(c.keys) {
			m.cmu.Lock()
			c.tabStamp, c.liveStamp = ts, ls
			m.cmu.Unlock()
			return c, nil
		}
	}
	c, err = m.decode(name, raw, disc)
	if err != nil {
		return nil, err
	}
	m.cmu.Lock()
	if len(m.rooms) >= maxCached {
		clear(m.rooms)
	}
	c.tabStamp, c.liveStamp = ts, ls
	m.rooms[name] = c
	m.cmu.Unlock()
	return c, nil
}

// roomRow reads the room's row: muc_rooms for a persistent room, else muc_live.
func (m *Module) roomRow(name string) (raw []byte, disc bool, err error) {
	b, ok, err := m.tab.Get(name)
	if err != nil {
		return nil, false, err
	}
	if ok {
		return b, true, nil
	}
	if b, ok, err = m.live.Get(roomKey(name)); err != nil {
		return nil, false, err
	} else if ok {
		return b, false, nil
	}
	return nil, false, nil
}

// decode builds the room from its row raw and its occupant rows (read now).
func (m *Module) decode(name string, raw []byte, disc bool) (*cachedRoom, error) {
	raw = bytes.Clone(raw)
	s := &snap{occ: map[string][]byte{}, jids: map[string]string{}, room: raw, disc: disc}
	c := &cachedRoom{raw: raw, disc: disc, s: s}
	var r *room
	if s.room != nil {
		var st stored
		if err := json.Unmarshal(s.room, &st); err != nil {
			m.log.Error("muc: undecodable room", "room", name, "err", err)
		} else {
			r = newRoom(name, st.Config)
			if st.Affs != nil {
				r.affs = st.Affs
			}
			r.subject, r.subjBy, r.locked = st.Subject, st.SubjBy, st.Locked
		}
	}
	prefix := occPrefix(name)
	err := m.live.Scan(prefix, func(k string, v []byte) bool {
		v = append([]byte(nil), v...)
		c.keys, c.vals = append(c.keys, k), append(c.vals, v)
		nick := k[len(prefix):]
		var row occRow
		if err := json.Unmarshal(v, &row); err != nil {
			m.log.Error("muc: undecodable occupant", "room", name, "nick", nick, "err", err)
			return true
		}
		j, err := jid.Parse(row.JID)
		if err != nil {
			return true
		}
		s.occ[nick], s.jids[nick] = v, row.JID
		if r == nil {
			r = newRoom(name, defaultConfig())
		}
		if s.room == nil {
			r.affs[j.Bare().String()] = AffOwner
		}
		r.occ[nick] = &occupant{nick: nick, jid: j, role: row.Role, pres: m.decodePres(k, row.Pres), js: j.String()}
		r.byJID[row.JID] = nick
		return true
	})
	if err != nil {
		return nil, err
	}
	if r != nil {
		r.nicks = r.sortedNicks()
		r.order = r.sortedOccupants()
	}
	c.r = r
	c.clean = len(m.diff(name, r, s)) == 0
	return c, nil
}

// diff returns the batch that turns what s read into r (nil or gone: no room).
// Occupants added must be absent and occupants removed or changed present, so a
// batch built on a stale read fails with storage.ErrConflict instead of
// resurrecting or duplicating an occupant.
func (m *Module) diff(name string, r *room, s *snap) []storage.Op {
	var ops []storage.Op
	exists := r != nil && !r.gone
	if !exists {
		if s.room != nil {
			if s.disc {
				ops = append(ops, storage.Delete(Table, name))
			} else {
				ops = append(ops, storage.Delete(LiveTable, roomKey(name)).If(storage.CondPresent))
			}
		}
	} else {
		b, _ := json.Marshal(stored{Config: r.cfg, Affs: r.affs, Subject: r.subject, SubjBy: r.subjBy, Locked: r.locked})
		switch {
		case r.cfg.Persistent && !r.locked:
			if !s.disc || !bytes.Equal(b, s.room) {
				ops = append(ops, storage.Put(Table, name, b))
			}
			if s.room != nil && !s.disc {
				ops = append(ops, storage.Delete(LiveTable, roomKey(name)))
			}
		case s.room == nil:
			ops = append(ops, storage.Put(LiveTable, roomKey(name), b).If(storage.CondAbsent))
		case s.disc:
			ops = append(ops, storage.Put(LiveTable, roomKey(name), b), storage.Delete(Table, name))
		case !bytes.Equal(b, s.room):
			ops = append(ops, storage.Put(LiveTable, roomKey(name), b))
		}
	}
	after := map[string][]byte{}
	if exists {
		for nick, oc := range r.occ {
			row := occRow{JID: oc.jid.String(), Role: oc.role}
			if oc.pres != nil {
				row.Pres = string(xmlstream.AppendElement(nil, storedPres(oc.pres), NSClient))
			}
			after[nick], _ = json.Marshal(row)
		}
	}
	for _, nick := range sortedKeys(s.occ) {
		if _, ok := after[nick]; !ok {
			ops = append(ops, storage.Delete(LiveTable, occPrefix(name)+nick).If(storage.CondPresent),
				storage.Delete(LiveTable, jidKey(s.jids[nick], name)))
		}
	}
	for _, nick := range sortedKeys(after) {
		old, ok := s.occ[nick]
		switch {
		case !ok:
			ops = append(ops, storage.Put(LiveTable, occPrefix(name)+nick, after[nick]).If(storage.CondAbsent),
				storage.Put(LiveTable, jidKey(r.occ[nick].jid.String(), name), []byte(nick)))
		case !bytes.Equal(old, after[nick]):
			ops = append(ops, storage.Put(LiveTable, occPrefix(name)+nick, after[nick]).If(storage.CondPresent))
		}
	}
	// A batch writing a disc table may carry no condition on a RAM table
	// (storage.Store): such batches (configuration, affiliations, subject of a
	// persistent room) are applied unconditionally.
	disc := false
	for _, op := range ops {
		disc = disc || op.Table == Table
	}
	if disc {
		for i := range ops {
			ops[i].Cond = storage.CondNone
		}
	}
	return ops
}

// storedPres is what an occupant row keeps of a presence: its children without
// the MUC elements (the join's password stays out of the table).
func storedPres(p *xmlstream.Element) *xmlstream.Element {
	s := xmlstream.New(NSClient, "presence")
	for _, c := range p.Children() {
		if c.Space != NS && c.Space != NSUser {
			s.Append(c.Copy())
		}
	}
	return s
}

// sameBare reports whether JID a has bare JID b.
func sameBare(a, b string) bool {
	j, err := jid.Parse(a)
	return err == nil && j.Bare().String() == b
}

func sortedKeys(mp map[string][]byte) []string {
	ks := make([]string, 0, len(mp))
	for k := range mp {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// streamHead lets the stream decoder parse one stored presence.
const streamHead = "<stream:stream xmlns='" + NSClient + "' xmlns:stream='" + xmlstream.NSStream + "'>"

// decodePres parses an occupant's stored presence, remembering the last one per
// occupant row so that messages to a room do not parse every occupant's again.
func (m *Module) decodePres(key, raw string) *xmlstream.Element {
	if raw == "" {
		return nil
	}
	m.mu.Lock()
	c, ok := m.pres[key]
	m.mu.Unlock()
	if ok && c.raw == raw {
		return c.el
	}
	d := xmlstream.NewDecoder(io.MultiReader(strings.NewReader(streamHead), strings.NewReader(raw)), xmlstream.DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		return nil
	}
	el, err := d.Next()
	if err != nil {
		return nil
	}
	m.mu.Lock()
	if len(m.pres) > 4*MaxRooms {
		clear(m.pres)
	}
	m.pres[key] = presCache{raw: raw, el: el}
	m.mu.Unlock()
	return el
}

// roomRow is a room's row with its name, for listings.
type roomRow struct {
	stored
	name string
}

// allRooms lists every room (persistent and live), sorted by name.
func (m *Module) allRooms() []roomRow {
	var out []roomRow
	seen := map[string]bool{}
	add := func(name string, v []byte) {
		var s stored
		if seen[name] || json.Unmarshal(v, &s) != nil {
			return
		}
		seen[name] = true
		out = append(out, roomRow{stored: s, name: name})
	}
	_ = m.tab.Scan("", func(k string, v []byte) bool { add(k, v); return true })
	_ = m.live.Scan("r\x00", func(k string, v []byte) bool { add(k[2:], v); return true })
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (m *Module) roomCount() int {
	n, _ := m.tab.Count("")
	l, _ := m.live.Count("r\x00")
	return n + l
}

// RoomJIDs lists the bare JIDs of the rooms of service ("": every service),
// sorted by key (ejabberdctl muc_online_rooms).
func (m *Module) RoomJIDs(service string) []string {
	var out []string
	for _, r := range m.allRooms() {
		if local, svc := m.keyParts(r.name); service == "" || svc == service {
			out = append(out, local+"@"+svc)
		}
	}
	return out
}

// Rooms lists the rooms' keys (sorted: the localpart on the default host's
// service, localpart@service on another), for tests and admin output.
func (m *Module) Rooms() []string {
	var out []string
	for _, r := range m.allRooms() {
		out = append(out, r.name)
	}
	return out
}

// Occupants lists a room's nicks (sorted).
func (m *Module) Occupants(room string) []string {
	c, err := m.view(room)
	if err != nil || c.r == nil {
		return nil
	}
	return append([]string(nil), c.r.sortedNicks()...)
}

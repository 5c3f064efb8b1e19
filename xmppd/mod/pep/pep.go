// Package pep implements the Personal Eventing Protocol (XEP-0163): a pubsub service
// (XEP-0060) on every local account's bare JID with the semantics clients rely on —
// publish with item ids, auto-create, publish-options (XEP-0223) with the access
// models presence (default), open and whitelist, persistent items, max_items,
// retrieval (all, by id, newest max_items), retract, purge, node create, configure
// and delete — and notifications to the owner's resources and to contacts with a
// presence subscription whose entity capabilities (XEP-0115) ask for NODE+notify.
// OMEMO (XEP-0384), avatars (XEP-0084) and Bookmarks 2 (XEP-0402) are PEP nodes and
// need nothing else; a published avatar also becomes the vCard's photo (XEP-0398,
// avatar.go). Bookmarks 2 conversion (XEP-0411): a first read of an absent
// urn:xmpp:bookmarks:1 node imports the account's private XML bookmarks
// (storage:bookmarks, read from the private module's table, never written).
//
// Caps: on an available presence from a local session the module asks the client's
// full JID for disco#info of its caps node (from the account's bare JID, so the
// answer reaches this node's EvDeliver hook), caches the features by ver in memory
// when the answer hashes to the ver (sha-1; others are used for that session only),
// and records the session's +notify nodes in the ephemeral table pep_caps (the
// node's own rows; every node reads all), so a publish on any node of the cluster
// notifies sessions on every node through Host.Sessions and Host.Route. When the
// caps are known after a session's initial presence, it is sent the last item of
// every node it may read and asked to be notified about, of its own account and of
// the contacts it is subscribed to.
//
// Tables: pep_nodes (durable disc: "user\x00node" -> node config, JSON) and
// pep_items (durable disc: "user\x00node\x00item id" -> stored item, JSON): items
// are account data that must survive restarts. pep_caps (ephemeral: "full JID" ->
// the session's +notify nodes): soft state of live sessions.
//
// It must not import the xmppd core; of the modules it imports only roster, and it
// reads the private and vcard modules' tables by name.
package pep

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS          = "http://jabber.org/protocol/pubsub"
	NSOwner     = NS + "#owner"
	NSEvent     = NS + "#event"
	NSErrors    = NS + "#errors"
	NSPublishOp = NS + "#publish-options"
	NSNodeCfg   = NS + "#node_config"
	NSData      = "jabber:x:data"
	NSCaps      = "http://jabber.org/protocol/caps"
	NSDiscoInfo = "http://jabber.org/protocol/disco#info"
	NSBookmarks = "urn:xmpp:bookmarks:1"
	// NSAvatarMeta is the XEP-0084 metadata node (converted to the vCard, avatar.go).
	NSAvatarMeta = "urn:xmpp:avatar:metadata"
	// NSBookmarksCompat is advertised on the account (XEP-0402 §3.3/XEP-0411):
	// private XML bookmarks are offered in urn:xmpp:bookmarks:1 (converted on first
	// read).
	NSBookmarksCompat = NSBookmarks + "#compat"
	nsLegacyBookmarks = "storage:bookmarks"
)

// Tables.
const (
	TableNodes = "pep_nodes"
	TableItems = "pep_items"
	TableCaps  = "pep_caps"
	// privateTable is the private module's table (read only).
	privateTable = "private"
)

// Limits.
const (
	// DefaultMaxItems is a node's max_items unless configured: 1, as Prosody's PEP
	// (a PEP node normally carries the current state only).
	DefaultMaxItems = 1
	// MaxItemsLimit is the largest max_items ("max" means it).
	MaxItemsLimit = 1000
	// MaxNodes is the number of nodes per account.
	MaxNodes = 200
	// MaxItemBytes is the largest stored item.
	MaxItemBytes = 256 << 10
	// capsCacheMax bounds the ver -> features cache.
	capsCacheMax = 10000
	// pendingMax bounds the outstanding caps queries.
	pendingMax = 10000
)

// Access models.
const (
	AccessPresence  = "presence"
	AccessOpen      = "open"
	AccessWhitelist = "whitelist"
)

// Features advertised on the account's disco#info (and the server's).
var Features = []string{
	NS,
	NS + "#access-open",
	NS + "#access-presence",
	NS + "#access-whitelist",
	NS + "#auto-create",
	NS + "#auto-subscribe",
	NS + "#config-node",
	NS + "#create-and-configure",
	NS + "#create-nodes",
	NS + "#delete-items",
	NS + "#delete-nodes",
	NS + "#filtered-notifications",
	NS + "#item-ids",
	NS + "#last-published",
	NS + "#multi-items",
	NS + "#persistent-items",
	NS + "#presence-notifications",
	NS + "#publish",
	NS + "#publish-options",
	NS + "#purge-nodes",
	NS + "#retract-items",
	NS + "#retrieve-items",
	NSBookmarksCompat,
}

// Config is a node's configuration as stored.
type Config struct {
	Access   string `json:"access"`
	MaxItems int    `json:"max"`
}

type storedItem struct {
	T    int64  `json:"t"` // publish order (unix ns, made unique per node)
	Item []byte `json:"i"` // the encoded <item/>
}

// Module is the PEP module.
type Module struct {
	r     *roster.Module
	h     module.Host
	nodes storage.Table
	items storage.Table
	caps  storage.Ephemeral
	locks modutil.Locks
	seq   atomic.Uint64
	last  atomic.Int64

	mu      sync.Mutex
	cache   map[string][]string // caps ver -> +notify nodes
	pending map[string]pendingCaps
}

type pendingCaps struct {
	full    jid.JID
	ver     string
	hash    string
	initial bool
}

// New returns the module; r decides who is a contact with a presence subscription.
func New(r *roster.Module) *Module {
	return &Module{r: r, cache: map[string][]string{}, pending: map[string]pendingCaps{}}
}

// Name implements module.Module.
func (*Module) Name() string { return "pep" }

// Start declares the tables and registers handlers and hooks.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	if err := modutil.Declare(ctx, h.Store(), TableNodes, TableItems); err != nil {
		return fmt.Errorf("pep: %w", err)
	}
	var err error
	if m.nodes, err = h.Store().Durable(TableNodes); err != nil {
		return fmt.Errorf("pep: %w", err)
	}
	if m.items, err = h.Store().Durable(TableItems); err != nil {
		return fmt.Errorf("pep: %w", err)
	}
	m.caps = h.Store().Ephemeral(TableCaps)
	m.h = h
	for _, f := range Features {
		h.DiscoFeature(f)
	}
	h.HandleIQ(NS, m.iq)
	h.HandleIQ(NSOwner, m.ownerIQ)
	h.Hook(module.EvC2SIn, 45, m.presenceOut)
	h.Hook(module.EvDeliver, 5, m.capsReply)
	h.Hook(module.EvSessionClosed, 45, m.closed)
	modutil.RemoveUserOnDelete(h, []string{TableNodes, TableItems}, nil)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

// ---- errors ----

func pubsubError(ctx context.Context, h module.Host, iq *module.IQ, typ, cond, pubsubCond, feature string) {
	r := module.Error(iq.Stanza, typ, cond, "")
	if pubsubCond != "" {
		e := r.Child("", "error")
		pe := xmlstream.New(NSErrors, pubsubCond)
		if feature != "" {
			pe.SetAttr("feature", feature)
		}
		e.Append(pe)
	}
	modutil.Reply(ctx, h, iq, r)
}

// ---- storage helpers ----

func nodeKey(user, node string) string { return modutil.Key(user, node) }
func itemPrefix(user, node string) string {
	return modutil.Key(user, node) + modutil.Sep
}

func (m *Module) config(user, node string) (Config, bool) {
	b, ok, err := m.nodes.Get(nodeKey(user, node))
	if err != nil || !ok {
		return Config{}, false
	}
	var c Config
	if json.Unmarshal(b, &c) != nil {
		return Config{}, false
	}
	if c.Access == "" {
		c.Access = AccessPresence
	}
	if c.MaxItems <= 0 {
		c.MaxItems = DefaultMaxItems
	}
	return c, true
}

type item struct {
	id string
	t  int64
	el *xmlstream.Element
}

// loadItems returns a node's items, oldest first.
func (m *Module) loadItems(user, node string) []item {
	var out []item
	p := itemPrefix(user, node)
	_ = m.items.Scan(p, func(k string, v []byte) bool {
		var si storedItem
		if json.Unmarshal(v, &si) != nil {
			return true
		}
		el, err := modutil.Decode(si.Item)
		if err != nil {
			return true
		}
		out = append(out, item{id: strings.TrimPrefix(k, p), t: si.T, el: el})
		return true
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].t < out[j].t })
	return out
}

func (m *Module) stamp() int64 {
	for {
		now := time.Now().UnixNano()
		last := m.last.Load()
		if now <= last {
			now = last + 1
		}
		if m.last.CompareAndSwap(last, now) {
			return now
		}
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ---- access ----

// mayRead reports whether from may read owner's node with config c.
func (m *Module) mayRead(owner, from jid.JID, c Config) bool {
	if from.Bare() == owner.Bare() {
		return true
	}
	switch c.Access {
	case AccessOpen:
		return true
	case AccessPresence:
		if m.r == nil {
			return false
		}
		it, ok := m.r.Get(m.uk(owner), from.Bare().String())
		return ok && roster.HasFrom(it.Sub)
	}
	return false
}

func (m *Module) readDenied(ctx context.Context, h module.Host, iq *module.IQ, c Config) {
	if c.Access == AccessPresence {
		pubsubError(ctx, h, iq, module.ErrAuth, "not-authorized", "presence-subscription-required", "")
		return
	}
	pubsubError(ctx, h, iq, module.ErrCancel, "not-allowed", "closed-node", "")
}

// ---- data forms ----

// formValues returns the fields of a jabber:x:data form (var -> first value).
func formValues(x *xmlstream.Element) map[string]string {
	out := map[string]string{}
	if x == nil {
		return out
	}
	for _, f := range x.Children() {
		if f.Local != "field" {
			continue
		}
		out[f.Attr("var")] = f.ChildText("", "value")
	}
	return out
}

// applyOptions sets the known node options of vals on c; it fails on a value it
// cannot honour.
func applyOptions(c *Config, vals map[string]string) error {
	for k, v := range vals {
		switch k {
		case "pubsub#access_model":
			switch v {
			case AccessPresence, AccessOpen, AccessWhitelist:
				c.Access = v
			default:
				return fmt.Errorf("access model %q not supported", v)
			}
		case "pubsub#max_items":
			n, err := parseMax(v)
			if err != nil {
				return err
			}
			c.MaxItems = n
		case "pubsub#persist_items":
			if v != "1" && v != "true" {
				return fmt.Errorf("only persistent items are supported")
			}
		}
	}
	return nil
}

func parseMax(v string) (int, error) {
	if v == "max" {
		return MaxItemsLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("bad max_items %q", v)
	}
	if n > MaxItemsLimit {
		n = MaxItemsLimit
	}
	return n, nil
}

// optionsMatch reports whether an existing node's config satisfies the
// publish-options (XEP-0223 §3.1: a mismatch is precondition-not-met).
func optionsMatch(c Config, vals map[string]string) bool {
	want := c
	if applyOptions(&want, vals) != nil {
		return false
	}
	return want == c
}

func configForm(node string, c Config) *xmlstream.Element {
	x := xmlstream.New(NSData, "x", "type", "form")
	field := func(v, typ, val string) {
		f := xmlstream.New(NSData, "field", "var", v)
		if typ != "" {
			f.SetAttr("type", typ)
		}
		f.Append(xmlstream.New(NSData, "value").AppendText(val))
		x.Append(f)
	}
	field("FORM_TYPE", "hidden", NSNodeCfg)
	field("pubsub#access_model", "list-single", c.Access)
	field("pubsub#max_items", "text-single", strconv.Itoa(c.MaxItems))
	field("pubsub#persist_items", "boolean", "1")
	field("pubsub#send_last_published_item", "list-single", "on_sub_and_presence")
	field("pubsub#deliver_payloads", "boolean", "1")
	field("pubsub#notify_retract", "boolean", "1")
	return x
}

// ---- IQ handlers ----

// owner returns the account the IQ addresses and whether it is a local account.
func (m *Module) owner(h module.Host, iq *module.IQ) (jid.JID, bool) {
	o := iq.To.Bare()
	if iq.To.IsZero() {
		o = iq.From.Bare()
	}
	return o, o.Local != "" && module.IsLocal(h, o.Domain) && o.Resource == ""
}

// uk is the user key (module.UserKey) of a local account: the key of its rows.
func (m *Module) uk(j jid.JID) string { return module.UserKey(m.h, j) }

func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	owner, ok := m.owner(h, iq)
	if !ok {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "service-unavailable", "")
		return
	}
	ps := iq.Payload()
	var op *xmlstream.Element
	for _, c := range ps.Children() {
		if c.Local != "publish-options" {
			op = c
			break
		}
	}
	if ps.Local != "pubsub" || op == nil {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
		return
	}
	isOwner := iq.From.Bare() == owner
	typ := iq.Stanza.Attr("type")
	switch {
	case typ == "get" && op.Local == "items":
		m.getItems(ctx, h, iq, owner, op)
	case typ == "set" && (op.Local == "publish" || op.Local == "retract" || op.Local == "create"):
		if !isOwner {
			modutil.ReplyError(ctx, h, iq, module.ErrAuth, "forbidden", "only the account may change its PEP nodes")
			return
		}
		switch op.Local {
		case "publish":
			m.publish(ctx, h, iq, owner, op, ps.Child(NS, "publish-options"))
		case "retract":
			m.retract(ctx, h, iq, owner, op)
		case "create":
			m.create(ctx, h, iq, owner, op, ps.Child(NS, "configure"))
		}
	default:
		pubsubError(ctx, h, iq, module.ErrCancel, "feature-not-implemented", "unsupported", op.Local)
	}
}

func (m *Module) getItems(ctx context.Context, h module.Host, iq *module.IQ, owner jid.JID, op *xmlstream.Element) {
	node := op.Attr("node")
	if node == "" {
		pubsubError(ctx, h, iq, module.ErrModify, "bad-request", "nodeid-required", "")
		return
	}
	c, ok := m.config(m.uk(owner), node)
	if !ok && node == NSBookmarks && iq.From.Bare() == owner {
		c, ok = m.importBookmarks(ctx, h, owner)
	}
	if !ok {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "item-not-found", "")
		return
	}
	if !m.mayRead(owner, iq.From, c) {
		m.readDenied(ctx, h, iq, c)
		return
	}
	items := m.loadItems(m.uk(owner), node)
	if ids := op.Children(); len(ids) > 0 {
		want := map[string]bool{}
		for _, e := range ids {
			if e.Local == "item" {
				want[e.Attr("id")] = true
			}
		}
		var sel []item
		for _, it := range items {
			if want[it.id] {
				sel = append(sel, it)
			}
		}
		items = sel
	} else if s := op.Attr("max_items"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "bad max_items")
			return
		}
		if n < len(items) {
			items = items[len(items)-n:]
		}
	}
	res := xmlstream.New(NS, "items", "node", node)
	for _, it := range items {
		res.Append(it.el)
	}
	modutil.ReplyResult(ctx, h, iq, xmlstream.New(NS, "pubsub").Append(res))
}

func (m *Module) create(ctx context.Context, h module.Host, iq *module.IQ, owner jid.JID, op, configure *xmlstream.Element) {
	node := op.Attr("node")
	if node == "" {
		pubsubError(ctx, h, iq, module.ErrModify, "not-acceptable", "nodeid-required", "")
		return
	}
	unlock := m.locks.Lock(m.uk(owner))
	defer unlock()
	if _, ok := m.config(m.uk(owner), node); ok {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "conflict", "")
		return
	}
	c := Config{Access: AccessPresence, MaxItems: DefaultMaxItems}
	if configure != nil {
		if err := applyOptions(&c, formValues(configure.Child(NSData, "x"))); err != nil {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "not-acceptable", err.Error())
			return
		}
	}
	if n, _ := m.nodes.Count(modutil.UserPrefix(m.uk(owner))); n >= MaxNodes {
		pubsubError(ctx, h, iq, module.ErrWait, "resource-constraint", "max-nodes-exceeded", "")
		return
	}
	if err := m.putConfig(ctx, h, m.uk(owner), node, c); err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "pep create", err)
		return
	}
	modutil.ReplyResult(ctx, h, iq)
}

func (m *Module) putConfig(ctx context.Context, h module.Host, user, node string, c Config) error {
	b, _ := json.Marshal(c)
	return h.Store().Apply(ctx, storage.Put(TableNodes, nodeKey(user, node), b))
}

func (m *Module) publish(ctx context.Context, h module.Host, iq *module.IQ, owner jid.JID, op, opts *xmlstream.Element) {
	node := op.Attr("node")
	if node == "" {
		pubsubError(ctx, h, iq, module.ErrModify, "bad-request", "nodeid-required", "")
		return
	}
	its := op.Children()
	if len(its) != 1 || its[0].Local != "item" || len(its[0].Children()) != 1 {
		pubsubError(ctx, h, iq, module.ErrModify, "bad-request", "invalid-payload", "")
		return
	}
	vals := formValues(nil)
	if opts != nil {
		vals = formValues(opts.Child(NSData, "x"))
		delete(vals, "FORM_TYPE")
	}
	in := its[0]
	id := in.Attr("id")
	if id == "" {
		id = newID()
	}
	stored := xmlstream.New(NS, "item", "id", id)
	for _, k := range in.Children() {
		stored.Append(k)
	}
	enc := modutil.Encode(stored)
	if len(enc) > MaxItemBytes {
		pubsubError(ctx, h, iq, module.ErrModify, "not-acceptable", "payload-too-big", "")
		return
	}
	unlock := m.locks.Lock(m.uk(owner))
	c, exists := m.config(m.uk(owner), node)
	var ops []storage.Op
	if exists {
		if !optionsMatch(c, vals) {
			unlock()
			pubsubError(ctx, h, iq, module.ErrCancel, "conflict", "precondition-not-met", "")
			return
		}
	} else {
		c = Config{Access: AccessPresence, MaxItems: DefaultMaxItems}
		if err := applyOptions(&c, vals); err != nil {
			unlock()
			pubsubError(ctx, h, iq, module.ErrCancel, "conflict", "precondition-not-met", "")
			return
		}
		if n, _ := m.nodes.Count(modutil.UserPrefix(m.uk(owner))); n >= MaxNodes {
			unlock()
			pubsubError(ctx, h, iq, module.ErrWait, "resource-constraint", "max-nodes-exceeded", "")
			return
		}
		b, _ := json.Marshal(c)
		ops = append(ops, storage.Put(TableNodes, nodeKey(m.uk(owner), node), b))
	}
	si, _ := json.Marshal(storedItem{T: m.stamp(), Item: enc})
	ops = append(ops, storage.Put(TableItems, itemPrefix(m.uk(owner), node)+id, si))
	// Trim to max_items, oldest first, counting the new item.
	old := m.loadItems(m.uk(owner), node)
	var keep []item
	for _, it := range old {
		if it.id != id {
			keep = append(keep, it)
		}
	}
	for i := 0; i < len(keep)-(c.MaxItems-1); i++ {
		ops = append(ops, storage.Delete(TableItems, itemPrefix(m.uk(owner), node)+keep[i].id))
	}
	err := h.Store().Apply(ctx, ops...)
	unlock()
	if err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "pep publish", err)
		return
	}
	res := xmlstream.New(NS, "publish", "node", node).Append(xmlstream.New(NS, "item", "id", id))
	modutil.ReplyResult(ctx, h, iq, xmlstream.New(NS, "pubsub").Append(res))
	m.notify(ctx, h, owner, node, c, xmlstream.New(NSEvent, "items", "node", node).Append(eventItem(stored)))
	if node == NSAvatarMeta {
		m.avatarToVCard(ctx, h, owner, stored) // XEP-0398 (avatar.go)
	}
}

func eventItem(stored *xmlstream.Element) *xmlstream.Element {
	e := xmlstream.New(NSEvent, "item", "id", stored.Attr("id"))
	for _, k := range stored.Children() {
		e.Append(k.Copy())
	}
	return e
}

func (m *Module) retract(ctx context.Context, h module.Host, iq *module.IQ, owner jid.JID, op *xmlstream.Element) {
	node := op.Attr("node")
	if node == "" {
		pubsubError(ctx, h, iq, module.ErrModify, "bad-request", "nodeid-required", "")
		return
	}
	var ids []string
	for _, e := range op.Children() {
		if e.Local == "item" && e.Attr("id") != "" {
			ids = append(ids, e.Attr("id"))
		}
	}
	if len(ids) == 0 {
		pubsubError(ctx, h, iq, module.ErrModify, "bad-request", "item-required", "")
		return
	}
	unlock := m.locks.Lock(m.uk(owner))
	c, ok := m.config(m.uk(owner), node)
	var ops []storage.Op
	for _, id := range ids {
		if _, found, _ := m.items.Get(itemPrefix(m.uk(owner), node) + id); ok && found {
			ops = append(ops, storage.Delete(TableItems, itemPrefix(m.uk(owner), node)+id))
		}
	}
	if !ok || len(ops) == 0 {
		unlock()
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "item-not-found", "")
		return
	}
	err := h.Store().Apply(ctx, ops...)
	unlock()
	if err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "pep retract", err)
		return
	}
	modutil.ReplyResult(ctx, h, iq)
	if n := op.Attr("notify"); n == "1" || n == "true" {
		ev := xmlstream.New(NSEvent, "items", "node", node)
		for _, id := range ids {
			ev.Append(xmlstream.New(NSEvent, "retract", "id", id))
		}
		m.notify(ctx, h, owner, node, c, ev)
	}
}

func (m *Module) ownerIQ(ctx context.Context, h module.Host, iq *module.IQ) {
	owner, ok := m.owner(h, iq)
	if !ok {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "service-unavailable", "")
		return
	}
	if iq.From.Bare() != owner {
		modutil.ReplyError(ctx, h, iq, module.ErrAuth, "forbidden", "")
		return
	}
	ps := iq.Payload()
	op := ps.FirstChild()
	if ps.Local != "pubsub" || op == nil {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
		return
	}
	node := op.Attr("node")
	if node == "" {
		pubsubError(ctx, h, iq, module.ErrModify, "bad-request", "nodeid-required", "")
		return
	}
	typ := iq.Stanza.Attr("type")
	unlock := m.locks.Lock(m.uk(owner))
	c, exists := m.config(m.uk(owner), node)
	if !exists {
		unlock()
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "item-not-found", "")
		return
	}
	switch {
	case typ == "get" && op.Local == "configure":
		unlock()
		res := xmlstream.New(NSOwner, "configure", "node", node).Append(configForm(node, c))
		modutil.ReplyResult(ctx, h, iq, xmlstream.New(NSOwner, "pubsub").Append(res))
	case typ == "set" && op.Local == "configure":
		x := op.Child(NSData, "x")
		if x == nil || x.Attr("type") == "cancel" {
			unlock()
			modutil.ReplyResult(ctx, h, iq)
			return
		}
		if err := applyOptions(&c, formValues(x)); err != nil {
			unlock()
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "not-acceptable", err.Error())
			return
		}
		b, _ := json.Marshal(c)
		ops := []storage.Op{storage.Put(TableNodes, nodeKey(m.uk(owner), node), b)}
		items := m.loadItems(m.uk(owner), node)
		for i := 0; i < len(items)-c.MaxItems; i++ {
			ops = append(ops, storage.Delete(TableItems, itemPrefix(m.uk(owner), node)+items[i].id))
		}
		err := h.Store().Apply(ctx, ops...)
		unlock()
		if err != nil {
			modutil.ReplyStoreError(ctx, h, iq, "pep configure", err)
			return
		}
		modutil.ReplyResult(ctx, h, iq)
	case typ == "set" && (op.Local == "delete" || op.Local == "purge"):
		ops := []storage.Op{storage.DeletePrefix(TableItems, itemPrefix(m.uk(owner), node))}
		if op.Local == "delete" {
			ops = append(ops, storage.Delete(TableNodes, nodeKey(m.uk(owner), node)))
		}
		err := h.Store().Apply(ctx, ops...)
		unlock()
		if err != nil {
			modutil.ReplyStoreError(ctx, h, iq, "pep "+op.Local, err)
			return
		}
		modutil.ReplyResult(ctx, h, iq)
		if op.Local == "delete" {
			m.notify(ctx, h, owner, node, c, xmlstream.New(NSEvent, "delete", "node", node))
		} else {
			m.notify(ctx, h, owner, node, c, xmlstream.New(NSEvent, "purge", "node", node))
		}
	default:
		unlock()
		pubsubError(ctx, h, iq, module.ErrCancel, "feature-not-implemented", "unsupported", op.Local)
	}
}

// ---- notifications ----

// interest returns the +notify nodes of a session (any node's row).
func (m *Module) interest(full jid.JID) map[string]bool {
	rows := m.caps.Get(full.String())
	if len(rows) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, n := range strings.Split(string(rows[len(rows)-1].Value), "\n") {
		if n != "" {
			out[n] = true
		}
	}
	return out
}

// subscribers returns the bare JIDs that receive owner's notifications for a node
// with config c: the owner, and (presence, open) contacts with a 'from'
// subscription at this domain.
func (m *Module) subscribers(owner jid.JID, c Config) []jid.JID {
	out := []jid.JID{owner}
	if c.Access == AccessWhitelist || m.r == nil {
		return out
	}
	items, err := m.r.Items(m.uk(owner))
	if err != nil {
		return out
	}
	for _, it := range items {
		if !roster.HasFrom(it.Sub) {
			continue
		}
		j, err := jid.Parse(it.JID)
		if err != nil || !module.IsLocal(m.h, j.Domain) || j.Local == "" {
			continue
		}
		out = append(out, j)
	}
	return out
}

// notify sends an event to every available session of a subscriber whose caps ask
// for node+notify.
func (m *Module) notify(ctx context.Context, h module.Host, owner jid.JID, node string, c Config, ev *xmlstream.Element) {
	for _, sub := range m.subscribers(owner, c) {
		for _, s := range h.Sessions(sub) {
			if s.Presence() == nil || !m.interest(s.JID())[node] {
				continue
			}
			m.sendEvent(ctx, h, owner, s.JID(), ev)
		}
	}
}

func (m *Module) sendEvent(ctx context.Context, h module.Host, owner, to jid.JID, ev *xmlstream.Element) {
	msg := xmlstream.New("jabber:client", "message", "from", owner.String(), "to", to.String(),
		"type", "headline", "id", "pep-"+strconv.FormatUint(m.seq.Add(1), 10))
	msg.Append(xmlstream.New(NSEvent, "event").Append(ev.Copy()))
	h.Route(ctx, msg)
}

// ---- caps ----

func (m *Module) presenceOut(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st.Local != "presence" || ev.Session == nil || !ev.To.IsZero() {
		return false
	}
	full := ev.Session.JID()
	switch st.Attr("type") {
	case "":
	case "unavailable":
		m.caps.Delete(full.String())
		return false
	default:
		return false
	}
	initial := ev.Session.Presence() == nil
	c := st.Child(NSCaps, "c")
	if c == nil || c.Attr("ver") == "" {
		m.caps.Delete(full.String())
		if initial {
			m.sendLast(ctx, h, full, nil)
		}
		return false
	}
	ver := c.Attr("ver")
	m.mu.Lock()
	nodes, known := m.cache[ver]
	m.mu.Unlock()
	if known {
		m.setInterest(full, nodes)
		if initial {
			m.sendLast(ctx, h, full, nodes)
		}
		return false
	}
	id := "pepcaps-" + newID()
	m.mu.Lock()
	if len(m.pending) >= pendingMax {
		m.pending = map[string]pendingCaps{}
	}
	m.pending[id] = pendingCaps{full: full, ver: ver, hash: c.Attr("hash"), initial: initial}
	m.mu.Unlock()
	q := xmlstream.New("jabber:client", "iq", "type", "get", "id", id, "from", full.Bare().String(), "to", full.String())
	q.Append(xmlstream.New(NSDiscoInfo, "query", "node", c.Attr("node")+"#"+ver))
	h.Route(ctx, q)
	return false
}

func (m *Module) setInterest(full jid.JID, nodes []string) {
	if len(nodes) == 0 {
		m.caps.Delete(full.String())
		return
	}
	m.caps.Put(full.String(), []byte(strings.Join(nodes, "\n")))
}

// capsReply takes the answers to our caps queries.
func (m *Module) capsReply(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st.Local != "iq" || !strings.HasPrefix(st.Attr("id"), "pepcaps-") {
		return false
	}
	t := st.Attr("type")
	if t != "result" && t != "error" {
		return false
	}
	m.mu.Lock()
	p, ok := m.pending[st.Attr("id")]
	if ok {
		delete(m.pending, st.Attr("id"))
	}
	m.mu.Unlock()
	if !ok || ev.From != p.full {
		return ok
	}
	var nodes []string
	if q := st.Child(NSDiscoInfo, "query"); t == "result" && q != nil {
		for _, f := range q.Children() {
			if v := f.Attr("var"); f.Local == "feature" && strings.HasSuffix(v, "+notify") {
				nodes = append(nodes, strings.TrimSuffix(v, "+notify"))
			}
		}
		// Only an answer that hashes to its ver is shared with other sessions
		// (XEP-0115 §5.4): a client cannot poison the cache for another's ver.
		if p.hash == "sha-1" && capsVer(q) == p.ver {
			m.mu.Lock()
			if len(m.cache) >= capsCacheMax {
				m.cache = map[string][]string{}
			}
			m.cache[p.ver] = nodes
			m.mu.Unlock()
		} else {
			h.Logger().Debug("pep: caps not cached (unverified ver)", "jid", p.full.String(), "ver", p.ver, "hash", p.hash)
		}
	}
	if s := h.Session(p.full); s == nil || s.Presence() == nil {
		return true
	}
	m.setInterest(p.full, nodes)
	if p.initial {
		m.sendLast(ctx, h, p.full, nodes)
	}
	return true
}

func (m *Module) closed(_ context.Context, _ module.Host, ev *module.EventData) bool {
	if ev.Session != nil {
		m.caps.Delete(ev.Session.JID().String())
	}
	return false
}

// sendLast sends a newly available session the last item of each node it asks to
// be notified about, of its own account and of every local contact it has a 'to'
// subscription with, where the node's access model lets it read.
func (m *Module) sendLast(ctx context.Context, h module.Host, full jid.JID, nodes []string) {
	if len(nodes) == 0 {
		return
	}
	owners := []jid.JID{full.Bare()}
	if m.r != nil {
		if items, err := m.r.Items(m.uk(full)); err == nil {
			for _, it := range items {
				if !roster.HasTo(it.Sub) {
					continue
				}
				if j, err := jid.Parse(it.JID); err == nil && module.IsLocal(h, j.Domain) && j.Local != "" {
					owners = append(owners, j)
				}
			}
		}
	}
	for _, o := range owners {
		for _, n := range nodes {
			c, ok := m.config(m.uk(o), n)
			if !ok || !m.mayRead(o, full, c) || c.Access == AccessWhitelist && o != full.Bare() {
				continue
			}
			items := m.loadItems(m.uk(o), n)
			if len(items) == 0 {
				continue
			}
			m.sendEvent(ctx, h, o, full, xmlstream.New(NSEvent, "items", "node", n).Append(eventItem(items[len(items)-1].el)))
		}
	}
}

// ---- XEP-0411 ----

// importBookmarks converts the account's private XML bookmarks (XEP-0048 in
// XEP-0049 storage) into a urn:xmpp:bookmarks:1 node (whitelist, max items) the
// first time the owner reads that absent node. The private table is only read.
func (m *Module) importBookmarks(ctx context.Context, h module.Host, owner jid.JID) (Config, bool) {
	t, err := h.Store().Durable(privateTable)
	if err != nil {
		return Config{}, false
	}
	b, ok, err := t.Get(modutil.Key(m.uk(owner), nsLegacyBookmarks, "storage"))
	if err != nil || !ok {
		return Config{}, false
	}
	st, err := modutil.Decode(b)
	if err != nil {
		return Config{}, false
	}
	unlock := m.locks.Lock(m.uk(owner))
	defer unlock()
	if c, ok := m.config(m.uk(owner), NSBookmarks); ok {
		return c, true
	}
	c := Config{Access: AccessWhitelist, MaxItems: MaxItemsLimit}
	cb, _ := json.Marshal(c)
	ops := []storage.Op{storage.Put(TableNodes, nodeKey(m.uk(owner), NSBookmarks), cb)}
	for _, conf := range st.Children() {
		if conf.Local != "conference" || conf.Attr("jid") == "" {
			continue
		}
		room, err := jid.Parse(conf.Attr("jid"))
		if err != nil || len(ops) > MaxItemsLimit {
			continue
		}
		bm := xmlstream.New(NSBookmarks, "conference")
		if n := conf.Attr("name"); n != "" {
			bm.SetAttr("name", n)
		}
		if a := conf.Attr("autojoin"); a == "1" || a == "true" {
			bm.SetAttr("autojoin", "true")
		}
		if nick := conf.ChildText("", "nick"); nick != "" {
			bm.Append(xmlstream.New(NSBookmarks, "nick").AppendText(nick))
		}
		if pw := conf.ChildText("", "password"); pw != "" {
			bm.Append(xmlstream.New(NSBookmarks, "password").AppendText(pw))
		}
		it := xmlstream.New(NS, "item", "id", room.Bare().String()).Append(bm)
		si, _ := json.Marshal(storedItem{T: m.stamp(), Item: modutil.Encode(it)})
		ops = append(ops, storage.Put(TableItems, itemPrefix(m.uk(owner), NSBookmarks)+room.Bare().String(), si))
	}
	if err := h.Store().Apply(ctx, ops...); err != nil {
		h.Logger().Warn("pep: bookmarks conversion failed", "user", owner.String(), "err", err)
		return Config{}, false
	}
	return c, true
}

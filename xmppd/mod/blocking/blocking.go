// Package blocking implements blocking command (XEP-0191): the block list (get,
// block, unblock one or all) with pushes to the resources that requested it,
// inbound stanzas from blocked JIDs dropped (IQ get/set answered with
// <service-unavailable/>), outbound messages and IQs to blocked JIDs refused with
// <not-acceptable/> plus <blocked xmlns='urn:xmpp:blocking:errors'/>, outbound
// presence to them dropped, unavailable presence sent to a JID when it is blocked and
// current presence to subscribed contacts when they are unblocked.
//
// A list item matches a JID as XEP-0191 §3.4 (by XEP-0016 rules) says: the item is the
// full JID, the bare JID, the domain/resource or the domain.
//
// Table: blocklist ("user\x00jid" -> empty).
//
// It must not import the xmppd core; of the modules it imports only roster.
package blocking

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS       = "urn:xmpp:blocking"
	NSErrors = "urn:xmpp:blocking:errors"
)

// Table is the block list table.
const Table = "blocklist"

// MaxItems bounds one user's block list.
const MaxItems = 1000

type requestedKey struct{}

// Module is the blocking module.
type Module struct {
	r     *roster.Module
	h     module.Host
	tab   storage.Table
	locks modutil.Locks
}

// New returns the module; r (may be nil) lets unblocking resend presence to
// subscribed contacts.
func New(r *roster.Module) *Module { return &Module{r: r} }

// Name implements module.Module.
func (*Module) Name() string { return "blocking" }

// Start declares the table and registers the handler and hooks.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	m.h = h
	if err := modutil.Declare(ctx, h.Store(), Table); err != nil {
		return fmt.Errorf("blocking: %w", err)
	}
	var err error
	if m.tab, err = h.Store().Durable(Table); err != nil {
		return fmt.Errorf("blocking: %w", err)
	}
	h.DiscoFeature(NS)
	h.HandleIQ(NS, m.iq)
	h.Hook(module.EvC2SIn, 10, m.outbound)
	h.Hook(module.EvDeliver, 10, m.inbound)
	modutil.RemoveUserOnDelete(h, []string{Table}, nil)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

// IsBlocked reports whether user (a localpart) blocks j.
//
// It reads the replicated table on every call and caches nothing, so a list
// changed through any node is seen as soon as this node applied the change. A user
// without a list costs one prefix probe and no allocation (HasList); otherwise the
// four candidates of XEP-0191 §3.4 are looked up in one key buffer.
func (m *Module) IsBlocked(user string, j jid.JID) bool {
	if m.tab == nil || j.IsZero() || !m.HasList(user) {
		return false
	}
	// Keys "user\x00<candidate>": the domain, the bare JID, the full JID and
	// domain/resource, built in place in one buffer.
	var arr [128]byte
	buf := append(append(arr[:0], user...), modutil.Sep...)
	n := len(buf)
	get := func(parts ...string) bool {
		buf = buf[:n]
		for _, p := range parts {
			buf = append(buf, p...)
		}
		_, ok, _ := m.tab.Get(string(buf))
		return ok
	}
	if get(j.Domain) {
		return true
	}
	if j.Local != "" {
		if get(j.Local, "@", j.Domain) {
			return true
		}
		if j.Resource != "" && get(j.Local, "@", j.Domain, "/", j.Resource) {
			return true
		}
	}
	return j.Resource != "" && get(j.Domain, "/", j.Resource)
}

// HasList reports whether user has a non-empty block list. It reads the table
// (never a cache): keys sort bytewise and "\x00" sorts before every byte a
// localpart can hold, so the first key at or after user is "user\x00..." exactly
// when user has a list — one ordered prefix probe that stops at the first key.
// It does not allocate unless some key begins with user.
func (m *Module) HasList(user string) bool {
	if m.tab == nil || user == "" {
		return false
	}
	p := probes.Get().(*probe)
	p.user, p.found = user, false
	_ = m.tab.Scan(user, p.fn)
	found := p.found
	p.user = ""
	probes.Put(p)
	return found
}

// probe is HasList's Scan callback with its result, pooled so that a probe
// allocates neither a closure nor its captured variables.
type probe struct {
	user  string
	found bool
	fn    func(string, []byte) bool
}

var probes = sync.Pool{New: func() any {
	p := &probe{}
	p.fn = func(k string, _ []byte) bool {
		p.found = len(k) > len(p.user) && k[len(p.user)] == modutil.Sep[0]
		return false // only the first key in order matters
	}
	return p
}}

// List returns user's block list.
func (m *Module) List(user string) []string {
	var out []string
	p := modutil.UserPrefix(user)
	_ = m.tab.Scan(p, func(k string, _ []byte) bool {
		out = append(out, strings.TrimPrefix(k, p))
		return true
	})
	return out
}

func items(name string, jids []string) *xmlstream.Element {
	e := xmlstream.New(NS, name)
	for _, j := range jids {
		e.Append(xmlstream.New(NS, "item", "jid", j))
	}
	return e
}

func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	if !modutil.IsOwn(iq) || !modutil.IsLocalUser(h, iq.From) {
		modutil.ReplyError(ctx, h, iq, module.ErrAuth, "forbidden", "a block list belongs to its owner")
		return
	}
	user := module.UserKey(h, iq.From)
	p := iq.Payload()
	switch typ := iq.Stanza.Attr("type"); {
	case typ == "get" && p.Local == "blocklist":
		if iq.Session != nil {
			iq.Session.SetValue(requestedKey{}, true)
			if f, ok := h.(flagger); ok {
				f.SetSessionFlag(iq.Session, Flag, true) // other nodes push to it too
			}
		}
		modutil.ReplyResult(ctx, h, iq, items("blocklist", m.List(user)))
	case typ == "set" && (p.Local == "block" || p.Local == "unblock"):
		var jids []string
		for _, it := range p.Children() {
			if it.Local != "item" {
				continue
			}
			j, err := jid.Parse(it.Attr("jid"))
			if err != nil {
				modutil.ReplyError(ctx, h, iq, module.ErrModify, "jid-malformed", "bad item jid")
				return
			}
			jids = append(jids, j.String())
		}
		if p.Local == "block" {
			m.block(ctx, h, iq, user, jids)
		} else {
			m.unblock(ctx, h, iq, user, jids)
		}
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
	}
}

func (m *Module) block(ctx context.Context, h module.Host, iq *module.IQ, user string, jids []string) {
	if len(jids) == 0 {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "block needs at least one item")
		return
	}
	unlock := m.locks.Lock(user)
	var ops []storage.Op
	var added []string
	for _, j := range jids {
		if _, ok, _ := m.tab.Get(modutil.Key(user, j)); !ok {
			ops = append(ops, storage.Put(Table, modutil.Key(user, j), nil))
			added = append(added, j)
		}
	}
	n, _ := m.tab.Count(modutil.UserPrefix(user))
	if n+len(ops) > MaxItems {
		unlock()
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "not-allowed", "block list is full")
		return
	}
	var err error
	if len(ops) > 0 {
		err = h.Store().Apply(ctx, ops...)
	}
	unlock()
	if err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "block", err)
		return
	}
	modutil.ReplyResult(ctx, h, iq)
	m.push(user, items("block", jids))
	// The newly blocked see the user go offline (XEP-0191 §3.3).
	for _, j := range added {
		for _, s := range h.Sessions(iq.From.Bare()) {
			if s.Presence() != nil {
				h.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "type", "unavailable", "from", s.JID().String(), "to", j))
			}
		}
	}
}

func (m *Module) unblock(ctx context.Context, h module.Host, iq *module.IQ, user string, jids []string) {
	unlock := m.locks.Lock(user)
	var removed []string
	var ops []storage.Op
	if len(jids) == 0 {
		removed = m.List(user)
		ops = append(ops, storage.DeletePrefix(Table, modutil.UserPrefix(user)))
	} else {
		for _, j := range jids {
			if _, ok, _ := m.tab.Get(modutil.Key(user, j)); ok {
				removed = append(removed, j)
				ops = append(ops, storage.Delete(Table, modutil.Key(user, j)))
			}
		}
	}
	var err error
	if len(ops) > 0 {
		err = h.Store().Apply(ctx, ops...)
	}
	unlock()
	if err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "unblock", err)
		return
	}
	modutil.ReplyResult(ctx, h, iq)
	m.push(user, items("unblock", jids))
	if m.r == nil {
		return
	}
	// Subscribed contacts get the user's current presence again.
	for _, j := range removed {
		it, ok := m.r.Get(user, j)
		if !ok || !roster.HasFrom(it.Sub) {
			continue
		}
		for _, s := range h.Sessions(iq.From.Bare()) {
			if p := s.Presence(); p != nil {
				c := p.Copy()
				c.SetAttr("from", s.JID().String())
				c.SetAttr("to", j)
				h.Route(ctx, c)
			}
		}
	}
}

// flagger is implemented by a core that mirrors sessions to other nodes: a
// session's flags travel with it, so a block list change made on one node is
// pushed to the user's resources on every node.
type flagger interface {
	SetSessionFlag(s module.Session, flag string, on bool)
}

// remote is implemented by proxies of sessions bound on other nodes.
type remote interface {
	Remote() bool
	Flag(name string) bool
}

// Flag is the session flag other nodes see for a session that requested the
// block list.
const Flag = "blocklist"

// requested reports whether s (local, or a proxy of another node's session)
// requested the block list.
func requested(s module.Session) bool {
	if r, ok := s.(remote); ok && r.Remote() {
		return r.Flag(Flag)
	}
	v, _ := s.Value(requestedKey{}).(bool)
	return v
}

// push sends a block/unblock push to the resources that requested the block
// list, on this node and on the others.
func (m *Module) push(user string, payload *xmlstream.Element) {
	bare := module.UserJID(m.h, user)
	for _, s := range m.h.Sessions(bare) {
		if !requested(s) {
			continue
		}
		iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "id", "block-push", "from", bare.String(), "to", s.JID().String())
		iq.Append(payload.Copy())
		s.Send(iq)
	}
}

// BlockedError returns the error for a stanza the user sent to a JID they block.
func BlockedError(st *xmlstream.Element) *xmlstream.Element {
	r := module.Error(st, module.ErrCancel, "not-acceptable", "")
	r.Child("", "error").Append(xmlstream.New(NSErrors, "blocked"))
	return r
}

func (m *Module) outbound(_ context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || ev.To.IsZero() || !modutil.IsLocalUser(h, ev.From) || ev.To.Bare() == ev.From.Bare() {
		return false
	}
	if !m.IsBlocked(module.UserKey(h, ev.From), ev.To) {
		return false
	}
	typ := st.Attr("type")
	if st.Local != "presence" && typ != "error" && typ != "result" && ev.Session != nil {
		ev.Session.Send(BlockedError(st))
	}
	return true
}

func (m *Module) inbound(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || ev.To.Local == "" || ev.From.IsZero() || ev.From.Bare() == ev.To.Bare() {
		return false
	}
	if !m.IsBlocked(module.UserKey(h, ev.To), ev.From) {
		return false
	}
	if st.Local == "iq" {
		if t := st.Attr("type"); t == "get" || t == "set" {
			h.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", ""))
		}
	}
	return true
}

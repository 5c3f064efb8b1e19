// Package carbons implements message carbons (XEP-0280): a session enables or
// disables carbons for itself; a message delivered to some of an account's resources
// is copied (<received/>) to its other carbons-enabled resources, and a message a
// session sends is copied (<sent/>) to the account's other carbons-enabled resources,
// each wrapped in <forwarded xmlns='urn:xmpp:forward:0'/>. Messages with
// <private xmlns='urn:xmpp:carbons:2'/> (removed before the message goes on) or a
// <no-copy xmlns='urn:xmpp:hints'/> hint are not copied.
//
// It keeps no tables (the switch is a per-session value). Sessions are node-local,
// so the module also counts, per account, this node's sessions that enabled carbons
// (kept under one lock with the switches and the sessions' ends): a message of an
// account with no such session costs a map lookup and no allocation.
//
// It must not import the xmppd core or other modules.
package carbons

import (
	"context"
	"sync"
	"sync/atomic"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS        = "urn:xmpp:carbons:2"
	NSForward = "urn:xmpp:forward:0"
	NSHints   = "urn:xmpp:hints"
)

type (
	enabledKey struct{}
	closedKey  struct{}
)

// Module is the carbons module.
type Module struct {
	h  module.Host
	mu sync.RWMutex
	// on counts, per account (localpart), this node's open sessions with carbons
	// enabled; total is their sum, for a lock-free "nobody" answer.
	on    map[string]int
	total atomic.Int64
}

// New returns the module.
func New() *Module { return &Module{on: map[string]int{}} }

// Name implements module.Module.
func (*Module) Name() string { return "carbons" }

// Start registers the IQ handler and hooks.
func (m *Module) Start(_ context.Context, h module.Host) error {
	m.h = h
	h.DiscoFeature(NS)
	h.HandleIQ(NS, m.iq)
	h.Hook(module.EvC2SIn, 20, m.sent)
	h.Hook(module.EvDelivered, 50, m.received)
	h.Hook(module.EvSessionClosed, 50, m.closed)
	return nil
}

// set switches carbons for s and keeps the per-account count: a session counts
// while it is enabled and not closed; it is closed once.
func (m *Module) set(s module.Session, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if closed, _ := s.Value(closedKey{}).(bool); closed || Enabled(s) == on {
		s.SetValue(enabledKey{}, on)
		return
	}
	s.SetValue(enabledKey{}, on)
	m.count(module.UserKey(m.h, s.JID()), on)
	m.publish(s, on)
}

// flagger is implemented by a core that mirrors sessions to other nodes: the
// carbons state of a session travels with it so other nodes copy to it.
type flagger interface {
	SetSessionFlag(s module.Session, flag string, on bool)
	AnyRemoteFlag(bare jid.JID, flag string) bool
}

// Flag is the session flag other nodes see for an enabled session.
const Flag = "carbons"

func (m *Module) publish(s module.Session, on bool) {
	if f, ok := m.h.(flagger); ok {
		f.SetSessionFlag(s, Flag, on)
	}
}

// remote is implemented by proxies of sessions bound on other nodes.
type remote interface {
	Remote() bool
	Flag(name string) bool
}

// enabledAnywhere reports whether some session of user, on this node or
// another, has carbons enabled.
func (m *Module) enabledAnywhere(h module.Host, bare jid.JID) bool {
	if m.anyEnabled(module.UserKey(m.h, bare)) {
		return true
	}
	f, ok := h.(flagger)
	return ok && f.AnyRemoteFlag(bare, Flag)
}

func (m *Module) count(user string, on bool) {
	if on {
		m.on[user]++
		m.total.Add(1)
		return
	}
	if m.on[user]--; m.on[user] <= 0 {
		delete(m.on, user)
	}
	m.total.Add(-1)
}

func (m *Module) closed(_ context.Context, _ module.Host, ev *module.EventData) bool {
	s := ev.Session
	if s == nil {
		return false
	}
	if _, ok := s.(remote); ok {
		return false // counted on its own node
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if closed, _ := s.Value(closedKey{}).(bool); closed {
		return false
	}
	s.SetValue(closedKey{}, true)
	if Enabled(s) {
		m.count(module.UserKey(m.h, s.JID()), false)
	}
	return false
}

// anyEnabled reports whether one of user's sessions on this node enabled carbons.
func (m *Module) anyEnabled(user string) bool {
	if m.total.Load() == 0 {
		return false
	}
	m.mu.RLock()
	n := m.on[user]
	m.mu.RUnlock()
	return n > 0
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

// Enabled reports whether s enabled carbons.
func Enabled(s module.Session) bool {
	if r, ok := s.(remote); ok {
		return r.Flag(Flag)
	}
	v, _ := s.Value(enabledKey{}).(bool)
	return v
}

func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	p := iq.Payload()
	switch {
	case !modutil.IsOwn(iq) || iq.Session == nil:
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "not-allowed", "carbons are enabled by a session for itself")
	case iq.Stanza.Attr("type") != "set":
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
	case p.Local == "enable":
		m.set(iq.Session, true)
		modutil.ReplyResult(ctx, h, iq)
	case p.Local == "disable":
		m.set(iq.Session, false)
		modutil.ReplyResult(ctx, h, iq)
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "")
	}
}

var imPayloads = map[string]bool{
	"http://jabber.org/protocol/chatstates": true,
	"urn:xmpp:receipts":                     true,
	"urn:xmpp:chat-markers:0":               true,
}

// Eligible reports whether msg is copied (XEP-0280 §6): type chat, or normal with a
// body, or carrying an IM payload (chat states, receipts, markers); never with
// <private/>, a no-copy hint, a MUC user payload, or when it already is a carbon.
// The type is looked at first: a groupchat, headline or error message (every copy
// of a room's fan-out) is refused without walking its children.
func Eligible(msg *xmlstream.Element) bool {
	typ := modutil.Type(msg)
	if typ != "chat" && typ != "normal" {
		return false
	}
	if msg.Child(NS, "private") != nil || msg.Child(NSHints, "no-copy") != nil ||
		msg.Child(NS, "received") != nil || msg.Child(NS, "sent") != nil ||
		msg.Child("http://jabber.org/protocol/muc#user", "x") != nil {
		return false
	}
	if typ == "chat" || msg.Child("", "body") != nil {
		return true
	}
	for _, c := range msg.Children() {
		if imPayloads[c.Space] {
			return true
		}
	}
	return false
}

func wrap(kind string, msg *xmlstream.Element, to module.Session) *xmlstream.Element {
	bare := to.JID().Bare().String()
	out := xmlstream.New(xmlstream.NSClient, "message", "from", bare, "to", to.JID().String())
	out.SetAttr("type", msg.Attr("type"))
	inner := msg.Copy()
	inner.Space = xmlstream.NSClient
	out.Append(xmlstream.New(NS, kind).Append(xmlstream.New(NSForward, "forwarded").Append(inner)))
	return out
}

// sent copies a message a local session sends to the account's other resources.
func (m *Module) sent(_ context.Context, h module.Host, ev *module.EventData) bool {
	st, s := ev.Stanza, ev.Session
	if st == nil || s == nil || st.Local != "message" {
		return false
	}
	if st.Child(NS, "private") != nil {
		st.RemoveChildren(NS, "private")
		return false
	}
	// Eligible first: it reads the stanza only, while enabledAnywhere builds
	// the account's key and asks the cluster's session table.
	if !Eligible(st) || !m.enabledAnywhere(h, s.JID().Bare()) {
		return false
	}
	for _, o := range h.Sessions(s.JID().Bare()) {
		if o.ID() != s.ID() && Enabled(o) && o.JID() != ev.To {
			o.Send(wrap("sent", st, o))
		}
	}
	return false
}

// received copies a delivered message to the recipient account's other resources.
func (m *Module) received(_ context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || st.Local != "message" || ev.To.Local == "" || !Eligible(st) || !m.enabledAnywhere(h, ev.To.Bare()) {
		return false
	}
	for _, o := range h.Sessions(ev.To.Bare()) {
		if Enabled(o) && !isTarget(o, ev.Targets) {
			o.Send(wrap("received", st, o))
		}
	}
	return false
}

func isTarget(s module.Session, targets []module.Session) bool {
	for _, t := range targets {
		if t.ID() == s.ID() {
			return true
		}
	}
	return false
}

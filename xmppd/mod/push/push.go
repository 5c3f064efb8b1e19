// Package push implements push notifications (XEP-0357) on the user's side: a
// client enables push for its account with an app server's JID, a node and an
// optional publish-options data form (<enable/>), or disables one or every
// registration of an app server (<disable/>). When a message arrives for the
// account while none of its sessions can read it — every session it was
// delivered to is detached and waiting for XEP-0198 resumption, or it has no
// session at all and the message goes to offline storage — the server publishes a
// notification to each registration's app server: an IQ set from the account's
// bare JID carrying a pubsub <publish/> to the registered node with a
// urn:xmpp:push:summary form (message-count, last-message-sender, and
// last-message-body only when Config.IncludeBody is set), plus the registered
// publish-options. An error reply from the app server disables that
// registration, as Prosody's mod_cloud_notify does: the app server no longer
// knows the device (a token the platform revoked, a node deleted, a wrong
// secret), and keeping it would retry into the void on every message. A result
// or an error of type wait keeps it. The errors a server gives when the app
// server cannot be reached (service-unavailable, remote-server-not-found,
// remote-server-timeout: a component not connected right now, a remote domain
// down) are not the app server's answer: they are counted, and only
// MaxUnreachable of them in a row (Prosody's max_push_errors) disable it.
//
// Table: push (durable; "user\x00app-server-jid\x00node" -> Registration).
// Registrations are durable on purpose: they exist for the time the client is NOT
// connected (the phone's app is asleep or killed and only the push wakes it), so a
// node restart, a failover to another node or a full-cluster restart must not
// forget them — the device would not learn of new messages until its user opened
// the app, which is exactly what push is for; and any node may route a message for
// the account, so every node must see them.
//
// The message count is kept per account on each node (in memory): it counts the
// messages notified since the account's last activity (a stanza from one of its
// sessions or a new binding) and restarts at 1 after that; on a cluster each node
// counts what it routed.
//
// Replies are matched without per-node state: each registration holds a random
// tag, notification IQ ids carry it ("push-TAG-N"), and an error reply is taken
// only from the registered app server with the tag of one of the account's
// registrations — so whichever node the reply reaches disables the right one, and
// no other entity can disable a registration it does not know the tag of.
//
// It must not import the xmppd core or other modules.
package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
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
	NS        = "urn:xmpp:push:0"
	NSSummary = "urn:xmpp:push:summary"
	NSPubsub  = "http://jabber.org/protocol/pubsub"
	NSData    = "jabber:x:data"
	// FormPublishOptions is the FORM_TYPE of a publish-options form (XEP-0223).
	FormPublishOptions = "http://jabber.org/protocol/pubsub#publish-options"
)

// Table is the registration table.
const Table = "push"

// MaxRegistrations bounds an account's registrations (a client enabling a new
// node on every reinstall must not grow the table without end).
const MaxRegistrations = 20

// MaxBody bounds the last-message-body sent to an app server (runes).
const MaxBody = 256

// FlagDetached is the session flag a core sets on a session waiting for XEP-0198
// resumption, so that other nodes see it as unable to read.
const FlagDetached = "detached"

// MaxUnreachable is how many notifications in a row may fail because the app
// server cannot be reached before its registration is disabled (Prosody's
// max_push_errors default).
const MaxUnreachable = 16

// maxFailing bounds the registrations whose unreachable errors are counted.
const maxFailing = 10000

// idPrefix starts the id of every notification IQ.
const idPrefix = "push-"

// Registration is one stored <enable/>.
type Registration struct {
	JID  string `json:"jid"`
	Node string `json:"node"`
	// Tag identifies the registration in notification ids (random hex).
	Tag string `json:"tag"`
	// Options is the encoded publish-options form (modutil.Encode), if one was given.
	Options []byte    `json:"options,omitempty"`
	Since   time.Time `json:"since"`
}

// Config configures the module.
type Config struct {
	// IncludeBody adds last-message-body to notifications (off by default: the
	// body then travels through the app server and the platform's push service).
	IncludeBody bool
	// NoSender leaves last-message-sender out.
	NoSender bool
}

// Module is the push module.
type Module struct {
	h     module.Host
	tab   storage.Table
	locks modutil.Locks
	cfg   atomic.Pointer[Config]
	seq   atomic.Uint64
	now   func() time.Time

	mu       sync.Mutex
	pending  map[string]int // account -> messages notified since its last activity
	failures map[string]int // registration tag -> unreachable errors in a row
	npending atomic.Int64   // len(pending): the activity hook skips the lock when 0

	// detached reports whether a session cannot read now (tests replace it).
	detached func(module.Session) bool
}

// New returns the module.
func New() *Module {
	m := &Module{now: time.Now, pending: map[string]int{}, failures: map[string]int{}, detached: sessionDetached}
	m.cfg.Store(&Config{})
	return m
}

// Configure sets the configuration (before or after Start).
func (m *Module) Configure(c Config) { m.cfg.Store(&c) }

// Name implements module.Module.
func (*Module) Name() string { return "push" }

// Start declares the table and registers the handler and hooks.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	m.h = h
	if err := modutil.Declare(ctx, h.Store(), Table); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	var err error
	if m.tab, err = h.Store().Durable(Table); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	h.DiscoFeature(NS)
	h.HandleIQ(NS, m.iq)
	h.Hook(module.EvDeliver, 1, m.reply)
	h.Hook(module.EvOffline, 40, m.offline)
	h.Hook(module.EvDelivered, 60, m.delivered)
	h.Hook(module.EvC2SIn, 1, m.active)
	h.Hook(module.EvSessionBound, 50, m.active)
	modutil.RemoveUserOnDelete(h, []string{Table}, nil)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

// sessionDetached: a local session of the core says so itself; a session on
// another node through the flag its node publishes.
func sessionDetached(s module.Session) bool {
	if d, ok := s.(interface{ Detached() bool }); ok {
		return d.Detached()
	}
	if r, ok := s.(interface{ Flag(string) bool }); ok {
		return r.Flag(FlagDetached)
	}
	return false
}

// ---- enable / disable ----

func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	if !modutil.IsOwn(iq) || !modutil.IsLocalUser(h, iq.From) {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "forbidden", "push is enabled by the account itself")
		return
	}
	if iq.Stanza.Attr("type") != "set" {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "bad-request", "enable and disable are IQ sets")
		return
	}
	p := iq.Payload()
	svc, err := jid.Parse(p.Attr("jid"))
	if err != nil || svc.IsZero() {
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "the app server's jid is missing or malformed")
		return
	}
	user := module.UserKey(h, iq.From)
	node := p.Attr("node")
	switch p.Local {
	case "enable":
		if node == "" {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "node is required")
			return
		}
		m.enable(ctx, h, iq, user, svc.String(), node, p)
	case "disable":
		m.disable(ctx, h, iq, user, svc.String(), node)
	default:
		modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "expected <enable/> or <disable/>")
	}
}

func regKey(user, svc, node string) string { return modutil.Key(user, svc, node) }

func (m *Module) enable(ctx context.Context, h module.Host, iq *module.IQ, user, svc, node string, p *xmlstream.Element) {
	reg := Registration{JID: svc, Node: node, Tag: newTag(), Since: m.now().UTC()}
	if x := p.Child(NSData, "x"); x != nil {
		if t := x.Attr("type"); t != "submit" && t != "" {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "the publish-options form must be of type submit")
			return
		}
		if ft := formType(x); ft != "" && ft != FormPublishOptions {
			modutil.ReplyError(ctx, h, iq, module.ErrModify, "bad-request", "the form's FORM_TYPE must be "+FormPublishOptions)
			return
		}
		reg.Options = modutil.Encode(x)
	}
	unlock := m.locks.Lock(user)
	defer unlock()
	k := regKey(user, svc, node)
	if _, ok, _ := m.tab.Get(k); !ok {
		if n, _ := m.tab.Count(modutil.UserPrefix(user)); n >= MaxRegistrations {
			modutil.ReplyError(ctx, h, iq, module.ErrWait, "resource-constraint", fmt.Sprintf("at most %d push registrations per account", MaxRegistrations))
			return
		}
	}
	b, _ := json.Marshal(reg)
	if err := h.Store().Apply(ctx, storage.Put(Table, k, b)); err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "push enable", err)
		return
	}
	h.Logger().Info("push enabled", "user", user, "app_server", svc, "node", node)
	modutil.ReplyResult(ctx, h, iq)
}

func (m *Module) disable(ctx context.Context, h module.Host, iq *module.IQ, user, svc, node string) {
	var op storage.Op
	if node != "" {
		op = storage.Delete(Table, regKey(user, svc, node))
	} else {
		op = storage.DeletePrefix(Table, modutil.Key(user, svc)+modutil.Sep)
	}
	if err := h.Store().Apply(ctx, op); err != nil {
		modutil.ReplyStoreError(ctx, h, iq, "push disable", err)
		return
	}
	h.Logger().Info("push disabled", "user", user, "app_server", svc, "node", node)
	modutil.ReplyResult(ctx, h, iq)
}

// Registrations returns user's registrations, sorted by app server and node.
func (m *Module) Registrations(user string) []Registration {
	var out []Registration
	_ = m.tab.Scan(modutil.UserPrefix(user), func(_ string, v []byte) bool {
		var r Registration
		if json.Unmarshal(v, &r) == nil {
			out = append(out, r)
		}
		return true
	})
	return out
}

// ---- triggers ----

// pushable reports whether a message is worth waking a device for: a message
// with a body (or an end-to-end encrypted payload), not an error or headline.
func pushable(st *xmlstream.Element) bool {
	if st == nil || st.Local != "message" {
		return false
	}
	switch st.Attr("type") {
	case "error", "headline":
		return false
	}
	if st.Child("", "body") != nil {
		return true
	}
	for _, c := range st.Children() {
		if c.Local == "encrypted" {
			return true
		}
	}
	return false
}

// offline: a message for an account with no session able to take it (it goes to
// offline storage next).
func (m *Module) offline(ctx context.Context, h module.Host, ev *module.EventData) bool {
	if ev.To.Local != "" && pushable(ev.Stanza) {
		m.notify(ctx, module.UserKey(h, ev.To), ev.From, ev.Stanza)
	}
	return false
}

// delivered: a message went to sessions that are all detached (waiting for
// resumption): nobody reads it now.
func (m *Module) delivered(ctx context.Context, h module.Host, ev *module.EventData) bool {
	if ev.To.Local == "" || !module.IsLocal(h, ev.To.Domain) || len(ev.Targets) == 0 || !pushable(ev.Stanza) {
		return false
	}
	for _, s := range ev.Targets {
		if !m.detached(s) {
			return false
		}
	}
	m.notify(ctx, module.UserKey(h, ev.To), ev.From, ev.Stanza)
	return false
}

// active restarts an account's count: one of its sessions is in use.
func (m *Module) active(_ context.Context, _ module.Host, ev *module.EventData) bool {
	if ev.Session == nil {
		return false
	}
	if m.npending.Load() == 0 {
		return false // every stanza of every session passes here: no lock for nothing
	}
	u := module.UserKey(m.h, ev.Session.JID())
	m.mu.Lock()
	if _, ok := m.pending[u]; ok {
		delete(m.pending, u)
		m.npending.Store(int64(len(m.pending)))
	}
	m.mu.Unlock()
	return false
}

// notify publishes a notification for msg to each of user's registrations.
func (m *Module) notify(ctx context.Context, user string, from jid.JID, msg *xmlstream.Element) {
	regs := m.Registrations(user)
	if len(regs) == 0 {
		return
	}
	m.mu.Lock()
	m.pending[user]++
	count := m.pending[user]
	m.npending.Store(int64(len(m.pending)))
	m.mu.Unlock()
	cfg := m.cfg.Load()
	bare := module.UserJID(m.h, user).String()
	for _, r := range regs {
		iq := xmlstream.New(xmlstream.NSClient, "iq", "type", "set", "from", bare, "to", r.JID,
			"id", idPrefix+r.Tag+"-"+strconv.FormatUint(m.seq.Add(1), 10))
		iq.Append(m.publish(r, count, from, msg, cfg))
		m.h.Logger().Debug("push notification", "user", user, "app_server", r.JID, "node", r.Node, "count", count)
		m.h.Route(ctx, iq)
	}
}

func (m *Module) publish(r Registration, count int, from jid.JID, msg *xmlstream.Element, cfg *Config) *xmlstream.Element {
	x := xmlstream.New(NSData, "x", "type", "submit")
	x.Append(field("FORM_TYPE", NSSummary, "hidden"))
	x.Append(field("message-count", strconv.Itoa(count), ""))
	if !cfg.NoSender && !from.IsZero() {
		x.Append(field("last-message-sender", from.String(), ""))
	}
	if cfg.IncludeBody {
		if b := msg.ChildText("", "body"); b != "" {
			if rs := []rune(b); len(rs) > MaxBody {
				b = string(rs[:MaxBody])
			}
			x.Append(field("last-message-body", b, ""))
		}
	}
	ps := xmlstream.New(NSPubsub, "pubsub")
	ps.Append(xmlstream.New(NSPubsub, "publish", "node", r.Node).Append(
		xmlstream.New(NSPubsub, "item").Append(xmlstream.New(NS, "notification").Append(x))))
	if len(r.Options) > 0 {
		if opts, err := modutil.Decode(r.Options); err == nil {
			ps.Append(xmlstream.New(NSPubsub, "publish-options").Append(opts))
		}
	}
	return ps
}

func field(v, val, typ string) *xmlstream.Element {
	f := xmlstream.New(NSData, "field", "var", v)
	if typ != "" {
		f.SetAttr("type", typ)
	}
	return f.Append(xmlstream.New(NSData, "value").AppendText(val))
}

func formType(x *xmlstream.Element) string {
	for _, f := range x.Children() {
		if f.Local == "field" && f.Attr("var") == "FORM_TYPE" {
			return f.ChildText("", "value")
		}
	}
	return ""
}

func newTag() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- replies ----

// reply takes the app server's answer to a notification (an IQ result or error
// addressed to the account's bare JID with a notification id). An error other
// than wait disables the registration it belongs to.
func (m *Module) reply(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || st.Local != "iq" || ev.To.Resource != "" || ev.To.Local == "" {
		return false
	}
	t := st.Attr("type")
	if t != "result" && t != "error" {
		return false
	}
	id := st.Attr("id")
	if !strings.HasPrefix(id, idPrefix) {
		return false
	}
	tag, _, ok := strings.Cut(id[len(idPrefix):], "-")
	if !ok || tag == "" {
		return false
	}
	user := module.UserKey(h, ev.To)
	var match *Registration
	for _, r := range m.Registrations(user) {
		if r.Tag == tag && r.JID == ev.From.String() {
			r := r
			match = &r
			break
		}
	}
	if match == nil {
		return false // not ours (or already disabled): the core drops it
	}
	if t == "result" {
		m.mu.Lock()
		delete(m.failures, match.Tag)
		m.mu.Unlock()
		return true
	}
	e := st.Child("", "error")
	cond := condition(e)
	if e != nil && e.Attr("type") == module.ErrWait {
		h.Logger().Info("push: app server asks to wait; registration kept", "user", user, "app_server", match.JID, "node", match.Node, "condition", cond)
		return true
	}
	switch cond {
	case "service-unavailable", "remote-server-not-found", "remote-server-timeout":
		m.mu.Lock()
		if len(m.failures) >= maxFailing {
			m.failures = map[string]int{} // bounded memory: counts start over
		}
		m.failures[match.Tag]++
		n := m.failures[match.Tag]
		if n >= MaxUnreachable {
			delete(m.failures, match.Tag)
		}
		m.mu.Unlock()
		if n < MaxUnreachable {
			if n == 1 {
				h.Logger().Info("push: app server unreachable; registration kept", "user", user, "app_server", match.JID, "node", match.Node, "condition", cond)
			}
			return true
		}
	}
	unlock := m.locks.Lock(user)
	k := regKey(user, match.JID, match.Node)
	var err error
	if cur, ok, _ := m.tab.Get(k); ok {
		var r Registration
		if json.Unmarshal(cur, &r) == nil && r.Tag == match.Tag { // not re-enabled meanwhile
			err = h.Store().Apply(ctx, storage.Delete(Table, k))
		}
	}
	unlock()
	if err != nil && !errors.Is(err, storage.ErrConflict) {
		h.Logger().Warn("push: registration not disabled after an app server error", "user", user, "app_server", match.JID, "err", err)
		return true
	}
	h.Logger().Info("push: app server returned an error; registration disabled", "user", user, "app_server", match.JID, "node", match.Node, "condition", cond)
	return true
}

func condition(e *xmlstream.Element) string {
	if e == nil {
		return ""
	}
	for _, c := range e.Children() {
		if c.Space == module.NSStanzas && c.Local != "text" {
			return c.Local
		}
	}
	return ""
}

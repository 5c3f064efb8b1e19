// Package offline implements offline message storage (XEP-0160): a chat or normal
// message with a body for a local account with no session able to take it is stored
// with a <delay xmlns='urn:xmpp:delay'/> stamp (XEP-0203) and delivered, then deleted,
// when one of the account's sessions sends initial presence with a non-negative
// priority. A per-user cap bounds storage: a message beyond it bounces with
// <service-unavailable/>, as ejabberd does with max_user_offline_messages.
//
// Table: offline ("user\x00<16 hex nanoseconds><8 hex sequence>" -> stored message).
//
// It must not import the xmppd core or other modules.
package offline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"xedge/storage"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// Namespaces.
const (
	NS      = "msgoffline"
	NSDelay = "urn:xmpp:delay"
)

// Table is the offline message table.
const Table = "offline"

// MaxMessageBytes bounds one stored message (larger ones bounce).
const MaxMessageBytes = 64 << 10

// Module is the offline module.
type Module struct {
	max   int
	h     module.Host
	tab   storage.Table
	seq   atomic.Uint64
	locks modutil.Locks
	now   func() time.Time
}

// New returns the module; max is the per-user cap (< 0: unlimited, 0: nothing stored).
func New(max int) *Module { return &Module{max: max, now: time.Now} }

// Name implements module.Module.
func (*Module) Name() string { return "offline" }

// Start declares the table and registers hooks.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	m.h = h
	if err := modutil.Declare(ctx, h.Store(), Table); err != nil {
		return fmt.Errorf("offline: %w", err)
	}
	var err error
	if m.tab, err = h.Store().Durable(Table); err != nil {
		return fmt.Errorf("offline: %w", err)
	}
	h.DiscoFeature(NS)
	h.Hook(module.EvOffline, 50, m.store)
	h.Hook(module.EvC2SIn, 30, m.onPresence)
	modutil.RemoveUserOnDelete(h, []string{Table}, nil)
	return nil
}

// Stop implements module.Module.
func (*Module) Stop(context.Context) error { return nil }

// NSHints is the XEP-0334 message processing hints namespace.
const NSHints = "urn:xmpp:hints"

// Storable reports whether XEP-0160 §3 says to store msg: type normal or chat with a
// body (not error, groupchat, headline; not an empty chat state notification). The
// XEP-0334 hints override the body rule: <no-store/> never, <store/> always.
func Storable(msg *xmlstream.Element) bool {
	switch modutil.Type(msg) {
	case "normal", "chat":
	default:
		return false
	}
	switch {
	case msg.Child(NSHints, "no-store") != nil:
		return false
	case msg.Child(NSHints, "store") != nil:
		return true
	}
	return msg.Child("", "body") != nil
}

// Count returns how many messages are stored for user.
func (m *Module) Count(user string) int {
	n, _ := m.tab.Count(modutil.UserPrefix(user))
	return n
}

func (m *Module) store(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || st.Local != "message" || !Storable(st) || ev.To.Local == "" {
		return false
	}
	user := ev.To.Local
	msg := st.Copy()
	msg.RemoveChildren(NSDelay, "delay")
	msg.Append(xmlstream.New(NSDelay, "delay", "from", h.Domain(), "stamp", m.now().UTC().Format("2006-01-02T15:04:05.000Z")))
	b := modutil.Encode(msg)
	if len(b) > MaxMessageBytes {
		h.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", "message too large for offline storage"))
		return true
	}
	// The lock makes the count and the put one step; bounces are routed after it.
	unlock := m.locks.Lock(user)
	full := m.max >= 0 && m.Count(user) >= m.max
	var err error
	for try := 0; !full && try < 3; try++ {
		// Keys are unique on this node; another node storing for the same user in the
		// same nanosecond with the same sequence number is a conflict, so retry.
		key := modutil.Key(user, fmt.Sprintf("%016x%08x", uint64(m.now().UnixNano()), m.seq.Add(1)&0xffffffff))
		err = h.Store().Apply(ctx, storage.Put(Table, key, b).If(storage.CondAbsent))
		if !errors.Is(err, storage.ErrConflict) {
			break
		}
	}
	unlock()
	switch {
	case full:
		h.Logger().Info("offline storage full, bouncing", "user", user, "max", m.max)
		h.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", "offline storage is full"))
	case err != nil:
		h.Logger().Warn("offline message not stored", "user", user, "err", err)
		h.Route(ctx, module.StoreError(st, err))
	}
	return true
}

// onPresence delivers stored messages to a session that becomes able to take
// bare-JID messages: initial presence with a non-negative priority, or a presence
// update raising a negative priority to a non-negative one (it runs before the
// presence module records the presence).
func (m *Module) onPresence(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st, s := ev.Stanza, ev.Session
	if st == nil || s == nil || st.Local != "presence" || st.Attr("type") != "" || st.Attr("to") != "" {
		return false
	}
	if s.Presence() != nil && s.Priority() >= 0 {
		return false
	}
	if p, err := strconv.Atoi(st.ChildText("", "priority")); err == nil && p < 0 {
		return false
	}
	m.Deliver(ctx, s)
	return false
}

// Deliver sends s every stored message of its user and deletes them.
func (m *Module) Deliver(ctx context.Context, s module.Session) {
	user := s.JID().Local
	unlock := m.locks.Lock(user)
	defer unlock()
	var keys []string
	var msgs []*xmlstream.Element
	err := m.tab.Scan(modutil.UserPrefix(user), func(k string, v []byte) bool {
		keys = append(keys, k)
		if e, err := modutil.Decode(v); err == nil {
			msgs = append(msgs, e)
		} else {
			m.h.Logger().Error("offline: undecodable stored message dropped", "key", k, "err", err)
		}
		return true
	})
	if err != nil || len(keys) == 0 {
		return
	}
	for _, msg := range msgs {
		s.Send(msg)
	}
	ops := make([]storage.Op, 0, len(keys))
	for _, k := range keys {
		ops = append(ops, storage.Delete(Table, k))
	}
	if err := m.h.Store().Apply(ctx, ops...); err != nil {
		// At-least-once: they come again at the next initial presence.
		m.h.Logger().Warn("offline: delivered messages not deleted", "user", user, "n", len(keys), "err", err)
	}
}

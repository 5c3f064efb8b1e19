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
	"sync"
	"sync/atomic"
	"time"

	"xedge/internal/backoff"
	"xedge/storage"
	"xedge/xmppd/jid"
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
	// wired: the presence module makes sessions available through SetPresence, so
	// the EvC2SIn flush is not needed.
	wired atomic.Bool
	// deleting: keys of messages delivered whose delete is in flight (outside
	// the user's lock): a flush meanwhile does not send them again.
	delMu    sync.Mutex
	deleting map[string]bool
	inflight atomic.Int64 // deletes running
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

// Stop waits (bounded by ctx) for the deletes of delivered messages in flight.
func (m *Module) Stop(ctx context.Context) error {
	m.Settle(ctx)
	return nil
}

// Settle waits until no delete of delivered messages is in flight, or ctx ends:
// Stop calls it, and tests before they count what is left in storage.
func (m *Module) Settle(ctx context.Context) {
	for m.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

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
	user := module.UserKey(h, ev.To)
	msg := st.Copy()
	msg.RemoveChildren(NSDelay, "delay")
	msg.Append(xmlstream.New(NSDelay, "delay", "from", ev.To.Domain, "stamp", m.now().UTC().Format("2006-01-02T15:04:05.000Z")))
	b := modutil.Encode(msg)
	if len(b) > MaxMessageBytes {
		h.Route(ctx, module.Error(st, module.ErrCancel, "service-unavailable", "message too large for offline storage"))
		return true
	}
	// The lock orders the store with SetPresence: the router found no session able
	// to take the message, but one of the user's sessions may have become available
	// since (its flush already ran, so a message stored now would stay in storage
	// while the session is online). Checked under the lock, a session that is
	// available gets the message routed live (once: a second miss stores). The
	// write itself runs without the lock: it may wait for a raft leader (seconds
	// after a leader's death), and a session becoming available (a login, an XEP-0198
	// resumption) must not wait for it. A session that became available while the
	// write was in flight may have flushed before it committed: after the write the
	// user's sessions are checked again and get the stored messages. (Stores in
	// flight at once may overshoot the cap by their number.)
	unlock := m.locks.Lock(user)
	if ctx.Value(reroutedKey{}) == nil && m.deliverable(ev.To) {
		unlock()
		h.Route(context.WithValue(ctx, reroutedKey{}, true), st)
		return true
	}
	full := m.max >= 0 && m.Count(user) >= m.max
	unlock()
	var err error
	// Unavailable storage (no raft leader: seconds after the leader's node died,
	// exactly when a lost node's messages are routed again) is retried for up to
	// UnavailableRetry before the message bounces: the sender's server has
	// acknowledged it, and a bounce is a message the user never gets.
	retryUntil := time.Now().Add(UnavailableRetry)
	retry := backoff.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	// The write outlives the stream that carried the message: its sender was
	// told it was received (XEP-0198) before it was routed here, and that stream
	// may end meanwhile (its client resumed on another node) while the store
	// waits for a raft leader. Its own bound is UnavailableRetry.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), UnavailableRetry+5*time.Second)
	defer cancel()
	for try := 0; !full && try < 3; {
		// Keys are unique on this node; another node storing for the same user in the
		// same nanosecond with the same sequence number is a conflict, so retry.
		key := modutil.Key(user, fmt.Sprintf("%016x%08x", uint64(m.now().UnixNano()), m.seq.Add(1)&0xffffffff))
		err = h.Store().Apply(ctx, storage.Put(Table, key, b).If(storage.CondAbsent))
		if errors.Is(err, storage.ErrConflict) {
			try++
			continue
		}
		if !errors.Is(err, storage.ErrUnavailable) || time.Now().Add(retry.Peek()).After(retryUntil) {
			break
		}
		if retry.Wait(ctx) != nil {
			break
		}
	}
	if !full && err == nil {
		m.deliverLate(ctx, ev.To)
	}
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

// deliverLate hands what is stored for to's user to a local session of it that is
// able to take bare-JID messages (it became available while a store was in
// flight). Under the user's lock: a SetPresence either has finished (the session
// is seen available here) or flushes after this write committed. A session on
// another node gets the messages from its late flush.
func (m *Module) deliverLate(ctx context.Context, to jid.JID) {
	unlock := m.locks.Lock(module.UserKey(m.h, to))
	defer unlock()
	for _, s := range m.h.Sessions(to.Bare()) {
		if _, remote := s.(interface{ Remote() bool }); remote {
			continue
		}
		if s.Presence() != nil && s.Priority() >= 0 {
			m.deliverLocked(ctx, s)
			return
		}
	}
}

// onPresence delivers stored messages to a session that becomes able to take
// bare-JID messages: initial presence with a non-negative priority, or a presence
// update raising a negative priority to a non-negative one (it runs before the
// presence module records the presence).
func (m *Module) onPresence(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st, s := ev.Stanza, ev.Session
	if m.wired.Load() || st == nil || s == nil || st.Local != "presence" || st.Attr("type") != "" || st.Attr("to") != "" {
		return false
	}
	if !becomesDeliverable(s, st) {
		return false
	}
	m.Deliver(ctx, s)
	return false
}

// reroutedKey marks the context of a message the store hook routed again.
type reroutedKey struct{}

// deliverable reports whether one of to's local sessions takes bare-JID messages
// (available, non-negative priority: RFC 6121 §8.5.2.1.1).
func (m *Module) deliverable(to jid.JID) bool {
	for _, s := range m.h.Sessions(to.Bare()) {
		if s.Presence() != nil && s.Priority() >= 0 {
			return true
		}
	}
	return false
}

// becomesDeliverable reports whether presence p (nil: unavailable) makes s able to
// take bare-JID messages when it was not: initial presence with a non-negative
// priority, or an update raising a negative priority.
func becomesDeliverable(s module.Session, p *xmlstream.Element) bool {
	if p == nil || (s.Presence() != nil && s.Priority() >= 0) {
		return false
	}
	prio, err := strconv.Atoi(p.ChildText("", "priority"))
	return err != nil || prio >= 0
}

// PresenceSetter returns the function the presence module must use instead of
// Session.SetPresence (and turns off the flush on EvC2SIn, which runs before the
// session is available). It records p on s under the user's offline lock and, when
// p makes s able to take bare-JID messages, first delivers the stored messages. So
// a message the router found no session for is either stored before the flush (and
// flushed) or finds s available when it is about to be stored (and is routed live):
// delivered once, and after the older stored ones.
func (m *Module) PresenceSetter() func(ctx context.Context, s module.Session, p *xmlstream.Element) {
	m.wired.Store(true)
	return m.SetPresence
}

// SetPresence is the function PresenceSetter returns.
func (m *Module) SetPresence(ctx context.Context, s module.Session, p *xmlstream.Element) {
	unlock := m.locks.Lock(module.UserKey(m.h, s.JID()))
	defer unlock()
	if becomesDeliverable(s, p) {
		m.deliverLocked(ctx, s)
		m.lateFlush(s)
	}
	s.SetPresence(p)
}

// UnavailableRetry is how long a message is retried while the store is
// unavailable before it bounces.
var UnavailableRetry = 20 * time.Second

// lateFlushDelay is how long after a session became available its stored
// messages are looked for once more in a cluster (see lateFlush).
var lateFlushDelay = time.Second

// lateFlush, in a cluster, delivers once more what is stored for s's user a
// moment after s became available, caught up with the cluster (modutil.LateLook):
// another node that routed a message before it saw s's session row stored it
// after the flush above; by then every node sees s and delivers to it.
func (m *Module) lateFlush(s module.Session) {
	if _, remote := s.(interface{ Remote() bool }); remote {
		return
	}
	modutil.LateLook(m.h, lateFlushDelay, "offline", func() {
		if s.Presence() != nil && s.Priority() >= 0 && m.Count(module.UserKey(m.h, s.JID())) > 0 {
			m.Deliver(context.Background(), s)
		}
	})
}

// Deliver sends s every stored message of its user and deletes them.
func (m *Module) Deliver(ctx context.Context, s module.Session) {
	unlock := m.locks.Lock(module.UserKey(m.h, s.JID()))
	defer unlock()
	m.deliverLocked(ctx, s)
}

// deliverLocked is Deliver with the user's lock held. The stored messages are
// sent under the lock; their delete — a raft write that may wait seconds for a
// leader (after the leader's node died, exactly when sessions resume on the
// survivors) — runs without it: the user's lock holds up the session's
// presence (SetPresence) and every message to the user that finds no
// available session. A flush while the delete is in flight skips them; a
// delete that fails leaves them stored, delivered again at the next flush
// (at-least-once).
func (m *Module) deliverLocked(ctx context.Context, s module.Session) {
	user := module.UserKey(m.h, s.JID())
	var keys []string
	var msgs []*xmlstream.Element
	m.delMu.Lock()
	err := m.tab.Scan(modutil.UserPrefix(user), func(k string, v []byte) bool {
		if m.deleting[k] {
			return true // delivered; its delete is in flight
		}
		keys = append(keys, k)
		if e, err := modutil.Decode(v); err == nil {
			msgs = append(msgs, e)
		} else {
			m.h.Logger().Error("offline: undecodable stored message dropped", "key", k, "err", err)
		}
		return true
	})
	if err != nil || len(keys) == 0 {
		m.delMu.Unlock()
		return
	}
	if m.deleting == nil {
		m.deleting = map[string]bool{}
	}
	for _, k := range keys {
		m.deleting[k] = true
	}
	m.delMu.Unlock()
	for _, msg := range msgs {
		s.Send(msg)
	}
	ops := make([]storage.Op, 0, len(keys))
	for _, k := range keys {
		ops = append(ops, storage.Delete(Table, k))
	}
	m.inflight.Add(1)
	go func() {
		defer m.inflight.Add(-1)
		// Its own bound: the caller's context may end with the connection.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
		defer cancel()
		if err := m.h.Store().Apply(dctx, ops...); err != nil {
			// At-least-once: they come again at the next initial presence.
			m.h.Logger().Warn("offline: delivered messages not deleted", "user", user, "n", len(keys), "err", err)
		}
		m.delMu.Lock()
		for _, k := range keys {
			delete(m.deleting, k)
		}
		m.delMu.Unlock()
	}()
}

// deleteTimeout bounds the delete of delivered messages.
var deleteTimeout = 30 * time.Second

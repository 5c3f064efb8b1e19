// Package last keeps each account's last activity, ejabberd's mod_last: the
// time its last session ended and the status text of its last unavailable
// presence, and answers XEP-0012 (jabber:iq:last) queries with it.
//
// Recording: every session end (EvSessionClosed: a logout, a dropped or
// replaced stream, and, on the one survivor responsible for it, each session
// of a lost cluster node) queues the user's record; a writer goroutine writes
// the queued records in batches, once the user has no session left on any
// node (a user with a session on another node is online; a record still
// queued when its user comes back online is dropped after Settle, because
// that later session's end writes one). The record of a removed account is
// deleted with the account (EvUserRemoved) and never written again.
//
// Queries (XEP-0012): to a bare JID, from the account itself or a contact
// whose subscription is "from" or "both" (§4; anyone else: <forbidden/>), the
// seconds since the last logout and its status, 0 while the account has a
// session on any node, <service-unavailable/> when nothing is recorded
// (ejabberd's answer); to the server's JID (§5) the seconds since this node
// started. An IQ to a full JID is the client's: delivered to it only when
// the requester may ask (§3), else refused with <forbidden/> by the server.
//
// Table: last_activity (durable, replicated): user key (module.UserKey) ->
// JSON Record.
//
// It must not import the xmppd core or other modules: the roster lookup it
// needs is given in Options.
package last

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"xedge/storage"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/internal/modutil"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// NS is the XEP-0012 namespace.
const NS = "jabber:iq:last"

// Table is the durable last-activity table.
const Table = "last_activity"

// Record is one account's last activity as stored.
type Record struct {
	// At is the end of the account's last session, in Unix seconds (or,
	// with Noticed, when delete_old_users first saw the account without
	// any record).
	At int64 `json:"t"`
	// Status is the status text of the last session's unavailable presence.
	Status string `json:"s,omitempty"`
	// Noticed marks a record written by Notice, not by a logout: xmppd has
	// not seen the account log out since it keeps last activity.
	Noticed bool `json:"n,omitempty"`
}

// Time is At as a time.
func (r Record) Time() time.Time { return time.Unix(r.At, 0) }

// Options configure the module.
type Options struct {
	// Subscription returns user's (a user key) subscription to contact (a
	// bare JID string): "none", "to", "from", "both", or "" when contact is
	// not in the roster. Nil: nobody but the account itself may query it.
	Subscription func(user, contact string) string
	// FlushEvery is how often queued records are written (0: 200 ms).
	FlushEvery time.Duration
	// Settle is how long a queued record waits for its user's other
	// sessions to end before it is dropped (0: 5 s).
	Settle time.Duration
	// Now is the clock (nil: time.Now); tests set it.
	Now func() time.Time
}

// Module is the last-activity module.
type Module struct {
	o       Options
	h       module.Host
	tab     storage.Table
	started time.Time

	mu      sync.Mutex
	pending map[string]queued // user key -> latest session end not yet written
	busy    int               // records taken by a flush not finished yet
	wake    chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

// queued is a session end waiting to be written.
type queued struct {
	bare   jid.JID
	rec    Record
	queued time.Time
}

// New returns the module.
func New(o Options) *Module {
	if o.FlushEvery <= 0 {
		o.FlushEvery = 200 * time.Millisecond
	}
	if o.Settle <= 0 {
		o.Settle = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Module{o: o, pending: map[string]queued{}, wake: make(chan struct{}, 1)}
}

// Name implements module.Module.
func (*Module) Name() string { return "last" }

// Start declares the table, registers the IQ handler and hooks, and starts
// the writer.
func (m *Module) Start(ctx context.Context, h module.Host) error {
	if err := modutil.Declare(ctx, h.Store(), Table); err != nil {
		return fmt.Errorf("last: %w", err)
	}
	var err error
	if m.tab, err = h.Store().Durable(Table); err != nil {
		return fmt.Errorf("last: %w", err)
	}
	m.h = h
	m.started = m.o.Now()
	h.DiscoFeature(NS)
	h.HandleIQ(NS, m.iq)
	h.Hook(module.EvC2SIn, 5, m.outbound)
	h.Hook(module.EvDeliver, 15, m.toClient)
	h.Hook(module.EvSessionClosed, 40, m.closed)
	h.Hook(module.EvUserRemoved, 45, m.removed)
	modutil.RemoveUserOnDelete(h, nil, []string{Table})
	wctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go m.writer(wctx)
	return nil
}

// Stop writes what is queued (bounded by ctx) and stops the writer.
func (m *Module) Stop(ctx context.Context) error {
	if m.cancel == nil {
		return nil
	}
	m.cancel()
	<-m.done
	m.flush(ctx, true)
	return nil
}

// statusKey is the session value holding the status text of the
// unavailable presence the session sent.
type statusKey struct{}

// outbound remembers the status of a session's unavailable broadcast
// presence (no 'to'), the status XEP-0012 reports after the logout.
func (m *Module) outbound(_ context.Context, _ module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if ev.Session == nil || st == nil || st.Local != "presence" || st.Attr("to") != "" || st.Attr("type") != "unavailable" {
		return false
	}
	ev.Session.SetValue(statusKey{}, st.ChildText(st.Space, "status"))
	return false
}

// toClient applies XEP-0012 §3 to a query addressed to a user's full JID
// (the client answers it): the server refuses it with <forbidden/> instead
// of delivering it when the requester may not see the user's presence.
func (m *Module) toClient(ctx context.Context, h module.Host, ev *module.EventData) bool {
	st := ev.Stanza
	if st == nil || st.Local != "iq" || ev.To.Resource == "" || st.Attr("type") != "get" {
		return false
	}
	if q := st.FirstChild(); q == nil || q.Space != NS {
		return false
	}
	if m.authorized(module.UserKey(h, ev.To), ev.To.Bare(), ev.From) {
		return false
	}
	h.Route(ctx, module.Error(st, module.ErrAuth, "forbidden", ""))
	return true
}

// closed queues the record of a session that ended (locally, or on a lost
// node for the responsible survivor).
func (m *Module) closed(_ context.Context, h module.Host, ev *module.EventData) bool {
	j := ev.From
	if j.IsZero() && ev.Session != nil {
		j = ev.Session.JID()
	}
	if !modutil.IsLocalUser(h, j) {
		return false
	}
	status := ""
	if ev.Session != nil {
		status, _ = ev.Session.Value(statusKey{}).(string)
	}
	m.Queue(j.Bare(), Record{At: m.o.Now().Unix(), Status: status})
	return false
}

// removed forgets a queued record of a removed account (its sessions are
// kicked after the removal: their ends must not write it back).
func (m *Module) removed(_ context.Context, h module.Host, ev *module.EventData) bool {
	if u := modutil.RemovedUser(h, ev.User); u != "" {
		m.mu.Lock()
		delete(m.pending, u)
		m.mu.Unlock()
	}
	return false
}

// Queue queues bare's record (the latest queued for a user wins) for the
// writer.
func (m *Module) Queue(bare jid.JID, r Record) {
	u := module.UserKey(m.h, bare)
	m.mu.Lock()
	m.pending[u] = queued{bare: bare, rec: r, queued: m.o.Now()}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Module) writer(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.o.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.wake:
			// Let the ends of a burst (a node loss) gather into one write.
			select {
			case <-ctx.Done():
				return
			case <-time.After(m.o.FlushEvery / 4):
			}
		}
		m.flush(ctx, false)
	}
}

// flush writes the queued records whose user has no session on any node;
// one still online keeps its record queued until Settle has passed, then it
// is dropped (that session's end queues a newer one). final writes every
// record of an offline user and drops the others.
func (m *Module) flush(ctx context.Context, final bool) {
	m.mu.Lock()
	if len(m.pending) == 0 {
		m.mu.Unlock()
		return
	}
	batch := m.pending
	m.pending = map[string]queued{}
	m.busy = len(batch)
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.busy = 0
		m.mu.Unlock()
	}()
	now := m.o.Now()
	var ops []storage.Op
	var keep []string
	for u, q := range batch {
		if len(m.h.Sessions(q.bare)) > 0 {
			if !final && now.Sub(q.queued) < m.o.Settle {
				keep = append(keep, u)
			}
			continue
		}
		if ok, err := m.h.Accounts().Exists(ctx, u); err == nil && !ok {
			continue // removed meanwhile
		}
		b, _ := json.Marshal(q.rec)
		ops = append(ops, storage.Put(Table, u, b))
	}
	if len(ops) > 0 {
		if err := m.h.Store().Apply(ctx, ops...); err != nil {
			m.h.Logger().Warn("last activity: writing records failed", "records", len(ops), "err", err)
			if !final { // try them again at the next flush
				keep = keep[:0]
				for u := range batch {
					keep = append(keep, u)
				}
			}
		}
	}
	if len(keep) == 0 {
		return
	}
	m.mu.Lock()
	for _, u := range keep {
		if _, newer := m.pending[u]; !newer {
			m.pending[u] = batch[u]
		}
	}
	m.mu.Unlock()
}

// Pending reports how many records wait to be written or are being
// written (tests).
func (m *Module) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending) + m.busy
}

// Get returns user's (a user key) record as this node's replica holds it.
func (m *Module) Get(user string) (Record, bool, error) {
	if m.tab == nil {
		return Record{}, false, fmt.Errorf("last: not started")
	}
	b, ok, err := m.tab.Get(user)
	if err != nil || !ok {
		return Record{}, false, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, false, fmt.Errorf("last: decode record of %q: %w", user, err)
	}
	return r, true, nil
}

// Set writes user's record (xmppctl set_last, ejabberd's mod_admin_extra).
func (m *Module) Set(ctx context.Context, user string, r Record) error {
	if m.h == nil {
		return fmt.Errorf("last: not started")
	}
	b, _ := json.Marshal(r)
	if err := m.h.Store().Apply(ctx, storage.Put(Table, user, b)); err != nil {
		return fmt.Errorf("last: writing the record of %s: %w", user, err)
	}
	return nil
}

// CatchUp writes through the log, so that this node's reads then hold
// every record committed before, through whichever node.
func (m *Module) CatchUp(ctx context.Context) error {
	if m.h == nil {
		return fmt.Errorf("last: not started")
	}
	if err := m.h.Store().Apply(ctx, storage.Delete(Table, "\x00barrier")); err != nil {
		return fmt.Errorf("last: catching up with the cluster: %w", err)
	}
	return nil
}

// Online reports whether bare has a session on any node.
func (m *Module) Online(bare jid.JID) bool { return m.h != nil && len(m.h.Sessions(bare.Bare())) > 0 }

// Uptime is how long this node's module has run (the server's uptime).
func (m *Module) Uptime() time.Duration { return m.o.Now().Sub(m.started) }

// --- XEP-0012 ---------------------------------------------------------------

func (m *Module) iq(ctx context.Context, h module.Host, iq *module.IQ) {
	if iq.Stanza.Attr("type") != "get" {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "not-allowed", "last activity is read-only")
		return
	}
	if !iq.To.IsZero() && iq.To.Local == "" {
		// §5: the server's uptime.
		modutil.ReplyResult(ctx, h, iq, Query(m.Uptime(), ""))
		return
	}
	target := iq.To.Bare()
	if iq.To.IsZero() {
		target = iq.From.Bare()
	}
	user := module.UserKey(h, target)
	if !m.authorized(user, target, iq.From) {
		modutil.ReplyError(ctx, h, iq, module.ErrAuth, "forbidden", "")
		return
	}
	if m.Online(target) {
		modutil.ReplyResult(ctx, h, iq, Query(0, ""))
		return
	}
	r, ok, err := m.Get(user)
	if err != nil {
		h.Logger().Error("last activity: reading a record failed", "user", user, "err", err)
		modutil.ReplyError(ctx, h, iq, module.ErrWait, "internal-server-error", "")
		return
	}
	if !ok || r.Noticed {
		modutil.ReplyError(ctx, h, iq, module.ErrCancel, "service-unavailable", "No info about last activity found")
		return
	}
	modutil.ReplyResult(ctx, h, iq, Query(m.o.Now().Sub(r.Time()), r.Status))
}

// authorized applies XEP-0012 §4: the account itself, or a contact allowed
// to see its presence (subscription from or both).
func (m *Module) authorized(user string, target, from jid.JID) bool {
	if from.Bare() == target {
		return true
	}
	if m.o.Subscription == nil {
		return false
	}
	switch m.o.Subscription(user, from.Bare().String()) {
	case "from", "both":
		return true
	}
	return false
}

// Query is the <query xmlns='jabber:iq:last' seconds='N'>status</query> of an
// answer (whole seconds, never negative).
func Query(d time.Duration, status string) *xmlstream.Element {
	s := max(int64(d/time.Second), 0)
	q := xmlstream.New(NS, "query", "seconds", strconv.FormatInt(s, 10))
	if status != "" {
		q.AppendText(status)
	}
	return q
}

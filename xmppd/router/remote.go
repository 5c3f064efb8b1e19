package router

// Cross-node routing. Every bound local session is mirrored into the ephemeral
// table "session" (key: full JID) with what another node's delivery rules need:
// node, incarnation, stream ID, the cluster-wide bind order (a hybrid logical
// clock stamp with the node name as tie-break), priority, availability and the
// last available presence (for probes), whether it requested the roster, and
// flags modules set (carbons). Sessions and Session return local sessions and
// proxies of the other nodes' sessions built from those rows, so RFC 6121 §8
// and every module apply across all resources on any node. A proxy's Send
// forwards the stanza over the cluster bus to the owning node, which hands it
// to that exact local session without running the delivery rules again. If the
// owner dies before acknowledging, the stanza is routed again (another
// resource, offline storage, or an error bounce), never dropped silently.

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"xedge/storage"
	"xedge/xmppd/cluster"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/xmlstream"
)

// SessionRow is the value of a row of the ephemeral session table.
type SessionRow struct {
	Node       string        `json:"node"`
	Inc        uint64        `json:"inc,omitempty"`
	ID         string        `json:"id"`
	Since      time.Time     `json:"since"`
	Order      cluster.Stamp `json:"order"`
	Priority   int           `json:"prio,omitempty"`
	Available  bool          `json:"avail,omitempty"`
	Interested bool          `json:"interested,omitempty"`
	Flags      []string      `json:"flags,omitempty"`
	Presence   string        `json:"pres,omitempty"` // the last available presence, XML
}

// Bus message kinds the router uses.
const (
	KindStanza = "stanza" // deliver Body to the local session To (ID)
	KindClose  = "close"  // close the local session To (ID) with stream error Body
	KindBind   = "bind"   // a newer bind of To happened (Body: its order): close an older one
)

// localMeta is what the router keeps per bound local session.
type localMeta struct {
	order cluster.Stamp
	since time.Time
	flags map[string]bool
}

// cl is the router's cluster state (zero when not clustered).
type cl struct {
	mu    sync.RWMutex
	bus   *cluster.Bus
	inc   uint64
	clock *cluster.Clock
	// resumable, when set, returns the full JIDs of node's sessions that stay
	// resumable here (XEP-0198 copies) after node is lost.
	resumable func(node string) map[string]bool
	// held: lost sessions whose closure waits for their resumption to settle.
	held map[string]heldSession
	// taken: held sessions settled as resumed in the last takenFor, kept in
	// case the resumption is then refused here (ResumeRefused).
	taken map[string]takenSession
	// awaiting: stanzas that waited in a held session for its resumption,
	// keyed by full JID: routed once the resumed session is bound (here or
	// on another node), or after awaitBind.
	awaiting map[string][]*xmlstream.Element
}

// takenSession is a held session whose state a resumption took.
type takenSession struct {
	rs *RemoteSession
	at time.Time
}

// takenFor bounds how long a taken session is kept for ResumeRefused: a
// resumption's outcome is known within its Fetch timeout (10 s).
const takenFor = time.Minute

// heldSession is a lost node's resumable session whose closure for its contacts
// is held back until it is resumed (then it never happens) or its resumption
// times out (then it happens, on the node that was responsible at the loss).
type heldSession struct {
	rs          *RemoteSession
	responsible bool
	// stanzas: stanzas for the session that its lost node never took (the bus
	// failed them), kept for the resumed session instead of being routed while
	// it is bound nowhere (to offline storage, whose write may wait for a raft
	// leader: the lost node may have been the leader).
	stanzas []*xmlstream.Element
}

// maxHeldStanzas bounds the stanzas kept per held session; beyond it they are
// routed as they come (offline storage).
const maxHeldStanzas = 10000

// awaitBind bounds how long the stanzas of a session settled as resumed wait
// for it to be bound somewhere; then they are routed as they are (the
// resumption was refused, or its client went away).
const awaitBind = 10 * time.Second

// AttachBus makes the router route to other nodes over b; inc is this node's
// incarnation (the tag of its ephemeral rows). Call before the bus starts.
func (r *Router) AttachBus(b *cluster.Bus, inc uint64) {
	r.cl.mu.Lock()
	r.cl.bus, r.cl.inc = b, inc
	r.cl.mu.Unlock()
	b.Handle(KindStanza, r.onStanza)
	b.Handle(KindClose, r.onClose)
	b.Handle(KindBind, r.onBind)
}

func (r *Router) bus() *cluster.Bus {
	r.cl.mu.RLock()
	defer r.cl.mu.RUnlock()
	return r.cl.bus
}

// Clustered reports whether the router routes to other nodes (a bus is attached).
func (r *Router) Clustered() bool { return r.bus() != nil }

// Clock returns the router's hybrid logical clock.
func (r *Router) Clock() *cluster.Clock { return r.cl.clock }

// rowOf builds s's session row.
func (r *Router) rowOf(s module.Session) []byte {
	r.mu.RLock()
	m := r.meta[s]
	var row SessionRow
	if m != nil {
		row.Order, row.Since = m.order, m.since
		for f, on := range m.flags {
			if on {
				row.Flags = append(row.Flags, f)
			}
		}
	}
	r.mu.RUnlock()
	sort.Strings(row.Flags)
	row.Node, row.ID = r.cfg.Node, s.ID()
	r.cl.mu.RLock()
	row.Inc = r.cl.inc
	r.cl.mu.RUnlock()
	row.Priority, row.Interested = s.Priority(), s.Interested()
	if p := s.Presence(); p != nil {
		row.Available = true
		row.Presence = string(xmlstream.AppendElement(nil, p, xmlstream.NSClient))
	}
	b, _ := json.Marshal(row)
	return b
}

// publish writes s's row if s is still the bound session of its JID.
func (r *Router) publish(s module.Session) {
	j := s.JID()
	r.mu.RLock()
	bound := r.sessions[keyOf(j)][j.Resource] == s
	r.mu.RUnlock()
	if bound {
		r.eph().Put(j.String(), r.rowOf(s))
	}
}

// SessionChanged republishes a local session's row after its presence,
// priority or interest changed (the presence module calls it).
func (r *Router) SessionChanged(s module.Session) {
	if _, remote := s.(*RemoteSession); remote {
		return
	}
	r.publish(s)
}

// SetSessionFlag sets a named flag of a local session that other nodes see
// (carbons: "carbons").
func (r *Router) SetSessionFlag(s module.Session, flag string, on bool) {
	r.mu.Lock()
	m := r.meta[s]
	if m != nil {
		if m.flags == nil {
			m.flags = map[string]bool{}
		}
		m.flags[flag] = on
	}
	r.mu.Unlock()
	if m != nil {
		r.publish(s)
	}
}

// AnyRemoteFlag reports whether a session of bare on another node has flag.
// It runs for every message (carbons), so it builds no proxies.
func (r *Router) AnyRemoteFlag(bare jid.JID, flag string) bool {
	found := false
	r.eph().Scan(bare.Local+"@"+bare.Domain+"/", func(row storage.Row) bool {
		if row.Node == r.cfg.Node {
			return true
		}
		if sr, ok := r.rows.decode(row); ok && slices.Contains(sr.Flags, flag) {
			found = true
			return false
		}
		return true
	})
	return found
}

// remoteSessions returns proxies of other nodes' sessions whose key has the
// prefix, one per full JID (the newest bind), skipping node exclude.
func (r *Router) remoteSessions(prefix, exclude string) []*RemoteSession {
	var out []*RemoteSession
	var last string
	r.eph().Scan(prefix, func(row storage.Row) bool {
		if row.Node == r.cfg.Node || row.Node == exclude {
			return true
		}
		rs := r.proxy(row)
		if rs == nil {
			return true
		}
		if row.Key == last && len(out) > 0 {
			if prev := out[len(out)-1]; prev.row.Order.Less(rs.row.Order) {
				out[len(out)-1] = rs
			}
			return true
		}
		last = row.Key
		out = append(out, rs)
		return true
	})
	return out
}

func (r *Router) proxy(row storage.Row) *RemoteSession {
	sr, ok := r.rows.decode(row)
	if !ok {
		return nil
	}
	j, err := r.jids.parse(row.Key)
	if err != nil {
		return nil
	}
	if sr.Node == "" {
		sr.Node = row.Node
	}
	return &RemoteSession{r: r, j: j, row: sr}
}

// rowsOf returns every node's row of key without copying the values (they
// must not be modified; rowCache keys on their addresses).
func (r *Router) rowsOf(key string) []storage.Row {
	var out []storage.Row
	r.eph().Scan(key, func(row storage.Row) bool {
		if row.Key == key {
			out = append(out, row)
		}
		return true
	})
	return out
}

// onlineElsewhere reports whether another node has a session of bare.
func (r *Router) onlineElsewhere(bare string) bool {
	found := false
	r.eph().Scan(bare+"/", func(row storage.Row) bool {
		found = row.Node != r.cfg.Node
		return !found
	})
	return found
}

// remoteSession returns the proxy of full's session on another node, or nil.
func (r *Router) remoteSession(full jid.JID, exclude string) module.Session {
	var best *RemoteSession
	for _, row := range r.rowsOf(full.String()) {
		if row.Node == r.cfg.Node || row.Node == exclude {
			continue
		}
		if rs := r.proxy(row); rs != nil && (best == nil || best.row.Order.Less(rs.row.Order)) {
			best = rs
		}
	}
	if best == nil {
		return nil
	}
	return best
}

// rowCache remembers decoded session rows: a row's value is never changed in
// place (a change is a new slice), so the address of its first byte names a
// version of the row.
type rowCache struct {
	mu sync.Mutex
	m  map[rowKey]cachedRow
}

type rowKey struct{ key, node string }

type cachedRow struct {
	p   *byte
	row SessionRow
}

func (c *rowCache) decode(row storage.Row) (SessionRow, bool) {
	if len(row.Value) == 0 {
		return SessionRow{}, false
	}
	k := rowKey{row.Key, row.Node}
	c.mu.Lock()
	if e, ok := c.m[k]; ok && e.p == &row.Value[0] {
		c.mu.Unlock()
		return e.row, true
	}
	c.mu.Unlock()
	var sr SessionRow
	if err := json.Unmarshal(row.Value, &sr); err != nil {
		return sr, false
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 200000 {
		c.m = map[rowKey]cachedRow{}
	}
	c.m[k] = cachedRow{&row.Value[0], sr}
	c.mu.Unlock()
	return sr, true
}

// RemoteSession is a session bound on another node, as this node's modules see
// it (module.Session). Send forwards over the bus; the setters only change
// this proxy (each node owns its own sessions).
type RemoteSession struct {
	r   *Router
	j   jid.JID
	row SessionRow

	once sync.Once
	pres *xmlstream.Element
	mu   sync.Mutex
	vals map[any]any
}

var _ module.Session = (*RemoteSession)(nil)

func (s *RemoteSession) ID() string       { return s.row.ID }
func (s *RemoteSession) JID() jid.JID     { return s.j }
func (s *RemoteSession) Priority() int    { return s.row.Priority }
func (s *RemoteSession) Interested() bool { return s.row.Interested }
func (s *RemoteSession) SetInterested()   {}

// Node is the node the session is bound on; Row its published row.
func (s *RemoteSession) Node() string    { return s.row.Node }
func (s *RemoteSession) Row() SessionRow { return s.row }

// Remote reports true: the session is bound on another node.
func (s *RemoteSession) Remote() bool { return true }

// Flag reports a flag the owning node published (e.g. "carbons").
func (s *RemoteSession) Flag(name string) bool {
	for _, f := range s.row.Flags {
		if f == name {
			return true
		}
	}
	return false
}

// Presence is the session's last available presence (nil: unavailable).
func (s *RemoteSession) Presence() *xmlstream.Element {
	if !s.row.Available {
		return nil
	}
	s.once.Do(func() {
		if p, err := decodeStanza([]byte(s.row.Presence)); err == nil {
			s.pres = p
		} else {
			s.pres = xmlstream.New(xmlstream.NSClient, "presence")
		}
	})
	return s.pres.Copy()
}

// SetPresence only changes this proxy's view (node-loss cleanup marks a lost
// session unavailable with it).
func (s *RemoteSession) SetPresence(p *xmlstream.Element) {
	s.once.Do(func() {})
	s.pres = p
	s.row.Available = p != nil
}

func (s *RemoteSession) Value(k any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vals[k]
}

func (s *RemoteSession) SetValue(k, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vals == nil {
		s.vals = map[any]any{}
	}
	s.vals[k] = v
}

// Send forwards st to the owning node. If the owner does not acknowledge it
// (it died, its queue is full) st is routed again without that node.
func (s *RemoteSession) Send(st *xmlstream.Element) {
	b := s.r.bus()
	if b == nil {
		s.r.reroute(st, s.row.Node, nil)
		return
	}
	body := xmlstream.AppendElement(nil, st, xmlstream.NSClient)
	b.Send(s.row.Node, &cluster.Message{Kind: KindStanza, To: s.j.String(), ID: s.row.ID, Body: body},
		func(_ *cluster.Message, err error) { s.r.reroute(st, s.row.Node, err) })
}

// Close asks the owning node to close the session.
func (s *RemoteSession) Close(condition, text string) {
	if b := s.r.bus(); b != nil {
		b.Send(s.row.Node, &cluster.Message{Kind: KindClose, To: s.j.String(), ID: s.row.ID, Body: []byte(condition + "\x00" + text)}, nil)
	}
}

type excludeKey struct{}

// reroute routes st again, avoiding node (it did not take st).
func (r *Router) reroute(st *xmlstream.Element, node string, err error) {
	if r.keepForResumption(st, node) {
		return
	}
	r.log.Info("stanza not acknowledged by the node of its session: routing it again", "node", node, "to", st.Attr("to"), "err", err)
	r.routeOwned(context.WithValue(context.Background(), excludeKey{}, node), st)
}

// routeOwned routes st, which nobody else holds, by its own from and to.
func (r *Router) routeOwned(ctx context.Context, st *xmlstream.Element) {
	from, _ := r.jids.parse(st.Attr("from"))
	to, err := r.jids.parse(st.Attr("to"))
	if err != nil {
		return
	}
	r.route(ctx, st, from, to, true)
}

// keepForResumption keeps st, which the lost node did not take, for its
// recipient's session if that session is held here for its resumption (or was
// just settled as resumed and is not bound yet): the resumed session gets it
// after what the session's copy holds, instead of offline storage getting it
// while the session is bound nowhere. It reports whether st was kept.
func (r *Router) keepForResumption(st *xmlstream.Element, node string) bool {
	to := st.Attr("to")
	r.cl.mu.Lock()
	defer r.cl.mu.Unlock()
	if h, ok := r.cl.held[to]; ok && h.rs.row.Node == node && len(h.stanzas) < maxHeldStanzas {
		h.stanzas = append(h.stanzas, st)
		r.cl.held[to] = h
		return true
	}
	if q, ok := r.cl.awaiting[to]; ok && len(q) < maxHeldStanzas {
		if t, ok := r.cl.taken[to]; ok && t.rs.row.Node == node {
			r.cl.awaiting[to] = append(q, st)
			return true
		}
	}
	return false
}

// awaitResumed routes stanzas kept for the resumed session j once it is
// bound: at once by Bind when that is here, else when its row is seen (it
// resumed on another node), else after awaitBind.
func (r *Router) awaitResumed(j jid.JID, stanzas []*xmlstream.Element) {
	key := j.String()
	r.cl.mu.Lock()
	if r.cl.awaiting == nil {
		r.cl.awaiting = map[string][]*xmlstream.Element{}
	}
	r.cl.awaiting[key] = append(r.cl.awaiting[key], stanzas...)
	r.cl.mu.Unlock()
	go func() {
		// A bind here routes them itself, in line with the bind (so they come
		// before what is routed to the session afterwards): this goroutine
		// takes a local session only if Bind may have looked before they were
		// put here (after a second).
		start := time.Now()
		for time.Since(start) < awaitBind {
			r.cl.mu.RLock()
			_, waiting := r.cl.awaiting[key]
			r.cl.mu.RUnlock()
			if !waiting {
				return // routed by the bind here, or by a refusal
			}
			s := r.Session(j)
			if _, remote := s.(*RemoteSession); remote || (s != nil && time.Since(start) > time.Second) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		r.routeAwaiting(context.Background(), key)
	}()
}

// routeAwaiting routes what waits for the resumed session bound to full.
func (r *Router) routeAwaiting(ctx context.Context, full string) {
	r.cl.mu.Lock()
	q, ok := r.cl.awaiting[full]
	delete(r.cl.awaiting, full)
	r.cl.mu.Unlock()
	if !ok || len(q) == 0 {
		return
	}
	r.log.Info("stanzas kept for a resumed session of a lost node: routed to it", "jid", full, "stanzas", len(q))
	r.routeKept(ctx, q)
}

// routeKept routes stanzas that were kept for a session: to wherever it is
// bound now, else as any stanza to an unbound resource.
func (r *Router) routeKept(ctx context.Context, q []*xmlstream.Element) {
	for _, st := range q {
		r.routeOwned(ctx, st)
	}
}

func excluded(ctx context.Context) string {
	v, _ := ctx.Value(excludeKey{}).(string)
	return v
}

// onStanza delivers a stanza forwarded by another node to the local session.
func (r *Router) onStanza(ctx context.Context, from cluster.Peer, m *cluster.Message) ([]byte, error) {
	st, err := decodeStanza(m.Body)
	if err != nil {
		r.log.Warn("undecodable stanza from a peer; dropped", "peer", from.Node, "err", err)
		return nil, nil
	}
	if s := r.localByJID(m.To); s != nil {
		s.Send(st)
		holdIfResumable(ctx, s)
		return nil, nil
	}
	// The session is gone: route again from here, to this node's sessions
	// only (no ping-pong between nodes), else offline or a bounce.
	fromJ, _ := r.jids.parse(st.Attr("from"))
	toJ, perr := r.jids.parse(st.Attr("to"))
	if perr != nil {
		return nil, nil
	}
	r.route(context.WithValue(ctx, excludeKey{}, "*"), st, fromJ, toJ, true)
	cluster.HoldAck(ctx) // it may have gone to a resumable session here
	return nil, nil
}

// holdIfResumable makes the bus acknowledge a stanza just queued for s only
// once the XEP-0198 resumption state holding it is on another node (the bus
// barrier: c2s SyncReplicas, one per acknowledgement batch), so that a sender
// on another node is covered when this node dies right after: the stanza is
// either in a copy a client resumes elsewhere, or rerouted by the sender's
// node (never acknowledged and lost).
func holdIfResumable(ctx context.Context, s module.Session) {
	if d, ok := s.(Describer); ok && d.Info().SM {
		cluster.HoldAck(ctx)
	}
}

// localByJID returns the local session bound to the full JID full, or nil.
func (r *Router) localByJID(full string) module.Session {
	j, err := r.jids.parse(full)
	if err != nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.sessions[keyOf(j)][j.Resource]
}

// onClose closes a local session on another node's request (kick, conflict).
func (r *Router) onClose(_ context.Context, _ cluster.Peer, m *cluster.Message) ([]byte, error) {
	if s := r.localByJID(m.To); s != nil && s.ID() == m.ID {
		cond, text, _ := strings.Cut(string(m.Body), "\x00")
		s.Close(cond, text)
	}
	return nil, nil
}

// onBind: another node bound m.To with order m.Body; close the local session
// of that JID if it is older (RFC 6120 §7.7.2.2 across nodes).
func (r *Router) onBind(_ context.Context, from cluster.Peer, m *cluster.Message) ([]byte, error) {
	order, err := cluster.ParseStamp(string(m.Body))
	if err != nil {
		return nil, nil
	}
	r.cl.clock.Observe(order)
	j, err := r.jids.parse(m.To)
	if err != nil {
		return nil, nil
	}
	r.closeIfOlder(j, order, from.Node)
	return nil, nil
}

// closeIfOlder closes the local session of j if its bind is older than order.
func (r *Router) closeIfOlder(j jid.JID, order cluster.Stamp, node string) {
	r.mu.RLock()
	s := r.sessions[keyOf(j)][j.Resource]
	var mine cluster.Stamp
	if m := r.meta[s]; m != nil {
		mine = m.order
	}
	r.mu.RUnlock()
	if s == nil || !mine.Less(order) {
		return
	}
	r.log.Info("resource conflict across nodes: closing the older session", "jid", j.String(), "old", s.ID(), "old_order", mine.String(), "new_node", node, "new_order", order.String())
	s.Close("conflict", "Replaced by new connection")
}

// announceBind tells the nodes holding a row for j that j was bound here now.
func (r *Router) announceBind(j jid.JID, order cluster.Stamp) {
	b := r.bus()
	if b == nil {
		return
	}
	for _, row := range r.rowsOf(j.String()) {
		if row.Node == r.cfg.Node {
			continue
		}
		b.Send(row.Node, &cluster.Message{Kind: KindBind, To: j.String(), Body: []byte(order.String())}, nil)
	}
}

// observeRows merges the bind orders of other nodes' rows of j into the clock,
// so a bind here is ordered after every bind already seen.
func (r *Router) observeRows(j jid.JID) {
	for _, row := range r.rowsOf(j.String()) {
		if row.Node == r.cfg.Node {
			continue
		}
		if sr, ok := r.rows.decode(row); ok {
			r.cl.clock.Observe(sr.Order)
		}
	}
}

// SweepConflicts closes local sessions for which another node holds a newer
// bind of the same full JID (two binds at the same moment on two nodes, each
// unseen by the other when it happened). The bus feature runs it periodically.
func (r *Router) SweepConflicts() {
	type cand struct {
		j     jid.JID
		order cluster.Stamp
		node  string
	}
	var cs []cand
	r.mu.RLock()
	var keys []string
	for _, m := range r.sessions {
		for _, s := range m {
			keys = append(keys, s.JID().String())
		}
	}
	r.mu.RUnlock()
	for _, k := range keys {
		rows := r.rowsOf(k)
		if len(rows) < 2 {
			continue
		}
		for _, row := range rows {
			if row.Node == r.cfg.Node {
				continue
			}
			var sr SessionRow
			if json.Unmarshal(row.Value, &sr) != nil {
				continue
			}
			if j, err := r.jids.parse(k); err == nil {
				cs = append(cs, cand{j, sr.Order, row.Node})
			}
		}
	}
	for _, c := range cs {
		r.cl.clock.Observe(c.order)
		r.closeIfOlder(c.j, c.order, c.node)
	}
}

// SetResumable installs the function that tells which sessions of a lost node
// stay resumable on this node (cluster-wide XEP-0198 resumption). Their closure
// for their contacts is held back like a detached local session's: a client
// that resumes one is never seen going away, one that does not is closed when
// its resumption times out (ResumeSettled).
func (r *Router) SetResumable(fn func(node string) map[string]bool) {
	r.cl.mu.Lock()
	r.cl.resumable = fn
	r.cl.mu.Unlock()
}

// NodeLost handles the loss of node (incarnation inc) whose session rows were
// dropped: stanzas queued for it are routed again, and if responsible (exactly
// one survivor is) each lost available session's unavailable presence goes to
// its user's subscribers and other resources (EvSessionClosed with a proxy).
// Sessions that stay resumable here (SetResumable) are held instead, on every
// survivor, and settled by ResumeSettled.
func (r *Router) NodeLost(ctx context.Context, node string, rows []storage.Row, responsible bool) {
	r.cl.mu.RLock()
	resumable := r.cl.resumable
	r.cl.mu.RUnlock()
	var keep map[string]bool
	if resumable != nil {
		keep = resumable(node)
	}
	n, held := 0, 0
	var closing []*RemoteSession
	for _, row := range rows {
		rs := r.proxy(row)
		if rs == nil {
			continue
		}
		// A newer bind of the same JID elsewhere (the client is back): its
		// contacts must not see it go away.
		if cur := r.Session(rs.j); cur != nil {
			continue
		}
		if keep[rs.j.String()] {
			r.cl.mu.Lock()
			if r.cl.held == nil {
				r.cl.held = map[string]heldSession{}
			}
			r.cl.held[rs.j.String()] = heldSession{rs: rs, responsible: responsible}
			r.cl.mu.Unlock()
			held++
			continue
		}
		if responsible {
			closing = append(closing, rs)
		}
	}
	// Only now are the stanzas the node had not taken failed (routed again):
	// those for a session held above wait for its resumption.
	if b := r.bus(); b != nil {
		b.NodeDown(node)
	}
	for _, rs := range closing {
		if rs.Presence() != nil {
			n++
		}
		r.Run(ctx, module.EvSessionClosed, &module.EventData{From: rs.j, Session: rs})
	}
	r.log.Info("node lost: its sessions are closed for their contacts", "node", node, "sessions", len(rows),
		"closed", len(closing), "available", n, "held_resumable", held, "responsible", responsible)
}

// ResumeSettled ends the hold of lost session j (see SetResumable): resumed (on
// any node) it is forgotten, but for ResumeRefused; not resumed in time it is
// closed for its contacts by the node that was responsible when its node was
// lost, unless j is bound again by then.
func (r *Router) ResumeSettled(ctx context.Context, j jid.JID, resumed bool) {
	key := j.String()
	now := time.Now()
	r.cl.mu.Lock()
	h, ok := r.cl.held[key]
	delete(r.cl.held, key)
	for k, t := range r.cl.taken {
		if now.Sub(t.at) > takenFor {
			delete(r.cl.taken, k)
		}
	}
	if ok && resumed {
		if r.cl.taken == nil {
			r.cl.taken = map[string]takenSession{}
		}
		r.cl.taken[key] = takenSession{rs: h.rs, at: now}
	}
	r.cl.mu.Unlock()
	if ok && resumed {
		// Kept until the session is bound where it resumed (here: soon, by
		// the c2s server that resumed it).
		r.awaitResumed(j, h.stanzas)
		return
	}
	if !ok {
		return
	}
	if h.responsible && r.Session(j) == nil {
		r.log.Info("lost session not resumed in time: closed for its contacts", "jid", key)
		r.Run(ctx, module.EvSessionClosed, &module.EventData{From: j, Session: h.rs})
	}
	if len(h.stanzas) > 0 {
		// On their own goroutine: offline storage may wait seconds for a raft
		// leader, and the caller is the resumption manager's membership check.
		r.log.Info("lost session not resumed in time: the stanzas kept for it are routed", "jid", key, "stanzas", len(h.stanzas))
		go r.routeKept(context.WithoutCancel(ctx), h.stanzas)
	}
}

// TakeOverHeld makes this node the one that closes held session j for its
// contacts should it not be resumed in time: the survivor that was
// responsible for it went too (resume.Config.TakeOver).
func (r *Router) TakeOverHeld(j jid.JID) {
	r.cl.mu.Lock()
	defer r.cl.mu.Unlock()
	if h, ok := r.cl.held[j.String()]; ok && !h.responsible {
		h.responsible = true
		r.cl.held[j.String()] = h
		r.log.Info("the survivor responsible for a lost session is gone too: this node closes it if it is not resumed", "jid", j.String())
	}
}

// ResumeRefused is told, on the node where it happened, that the resumption
// of lost session j was refused (its state was older than the client's): the
// session is over, although ResumeSettled heard it was resumed. Unless j is
// bound again, it is closed for its contacts here — exactly once, since only
// this node saw the refusal — so they do not keep seeing the resource of a
// dead node available.
func (r *Router) ResumeRefused(ctx context.Context, j jid.JID) {
	key := j.String()
	r.cl.mu.Lock()
	t, ok := r.cl.taken[key]
	delete(r.cl.taken, key)
	var kept []*xmlstream.Element
	if h, held := r.cl.held[key]; !ok && held {
		t, ok = takenSession{rs: h.rs}, true
		kept = h.stanzas
		delete(r.cl.held, key)
	}
	kept = append(kept, r.cl.awaiting[key]...)
	delete(r.cl.awaiting, key)
	r.cl.mu.Unlock()
	// The session is over: what was kept for it goes where any stanza for an
	// unbound resource goes, after its contacts are told (below), without
	// holding up the refusal (offline storage may wait for a raft leader).
	defer func() {
		if len(kept) > 0 {
			go r.routeKept(context.WithoutCancel(ctx), kept)
		}
	}()
	if !ok || r.Session(j) != nil {
		return
	}
	r.log.Info("lost session's resumption refused: closed for its contacts", "jid", key)
	r.Run(ctx, module.EvSessionClosed, &module.EventData{From: j, Session: t.rs})
}

// Held reports how many lost sessions wait for their resumption to settle.
func (r *Router) Held() int {
	r.cl.mu.RLock()
	defer r.cl.mu.RUnlock()
	return len(r.cl.held)
}

// AllNodes describes every session of the cluster (this node's and the rows of
// the others), for `xmppctl sessions --all-nodes`.
func (r *Router) AllNodes() []SessionInfo {
	out := []SessionInfo{}
	r.eph().Scan("", func(row storage.Row) bool {
		var sr SessionRow
		if json.Unmarshal(row.Value, &sr) != nil {
			return true
		}
		node := sr.Node
		if node == "" {
			node = row.Node
		}
		out = append(out, SessionInfo{JID: row.Key, ID: sr.ID, Node: node, Since: sr.Since, Priority: sr.Priority})
		return true
	})
	return out
}

var decoders = sync.Pool{New: func() any { return xmlstream.NewDecoder(nil, xmlstream.DefaultLimits()) }}

var streamHead = []byte("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

// decodeStanza parses one stanza serialized with xmlstream.AppendElement.
func decodeStanza(b []byte) (*xmlstream.Element, error) {
	d := decoders.Get().(*xmlstream.Decoder)
	defer decoders.Put(d)
	d.Reset(ioMulti(streamHead, b))
	if _, err := d.StreamHeader(); err != nil {
		return nil, err
	}
	return d.Next()
}

func ioMulti(a, b []byte) *multiReader { return &multiReader{parts: [][]byte{a, b}} }

type multiReader struct{ parts [][]byte }

func (m *multiReader) Read(p []byte) (int, error) {
	for len(m.parts) > 0 && len(m.parts[0]) == 0 {
		m.parts = m.parts[1:]
	}
	if len(m.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, m.parts[0])
	m.parts[0] = m.parts[0][n:]
	return n, nil
}

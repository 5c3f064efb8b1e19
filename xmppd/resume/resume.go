// Package resume owns XEP-0198 stream resumption across the cluster: it keeps
// a copy of every resumable session's state (h counters, presence and the
// queue of stanzas the client has not acknowledged) on the other nodes, so a
// client resumes on any node — from the node that holds its session (which
// hands it over) or, when that node was drained, stopped or killed, from the
// copy. It implements c2s.Replicator on top of the cluster bus.
//
// Replication: every change (a queued stanza, an ack, the scalar state) is
// sent to each live peer with cluster.Bus.Send — asynchronous, ordered per
// peer, no round trip on the hot path. Sync is a Call to each peer, which the
// bus delivers after everything sent before it: c2s answers a client's <r/>
// only after Sync, so a stanza whose sender was told it was received is on at
// least one other node. A peer that missed messages (or joins) gets a full
// copy first.
//
// It must not import server, router or any module; it reaches c2s only
// through the types of the c2s package and the Handoverer interface.
package resume

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xedge/internal/rounds"
	"xedge/xmppd/c2s"
	"xedge/xmppd/cluster"
	"xedge/xmppd/jid"
	"xedge/xmppd/xmlstream"
)

// Bus message kinds.
const (
	KindPut    = "sm.put"    // Body: wireState without queue
	KindQueue  = "sm.q"      // ID: session, To: seq, Body: stanza
	KindAck    = "sm.ack"    // ID: session, To: h
	KindEnd    = "sm.end"    // ID: session
	KindFull   = "sm.full"   // Body: []wireState with queues: every session of the sender
	KindOrphan = "sm.orphan" // the sender stops: its copies are the sessions now
	KindSync   = "sm.sync"   // Call: answered after everything sent before it
	KindTake   = "sm.take"   // Call to the holder: ID: session, To: user; reply: wireState
	KindTail   = "sm.tail"   // Call: ID: session (To: tailUnheld: without held stanzas); reply: []qItem of this node's copy
	// KindResync asks the owner of orphaned copies, back as the same
	// incarnation after a false node loss, for a full copy.
	KindResync = "sm.resync"
)

// Handoverer is the c2s server's side of a handover.
type Handoverer interface {
	Handover(ctx context.Context, id, user string) (*c2s.SMState, error)
}

// Bus is what the manager needs of the cluster bus.
type Bus interface {
	Handle(kind string, h cluster.Handler)
	Send(node string, m *cluster.Message, onFail func(*cluster.Message, error))
	Call(ctx context.Context, node string, m *cluster.Message) ([]byte, error)
}

// Config configures a Manager.
type Config struct {
	Node string
	Bus  Bus
	// Peers returns the other live nodes and their incarnations.
	Peers func() map[string]uint64
	// Timeout is how long a copy of a gone node's session stays resumable (sm-timeout).
	Timeout time.Duration
	// Reroute gets the unacknowledged stanzas of a copy that expired unresumed,
	// on exactly one survivor: the live node with the smallest name (the owner
	// excluded) when the owner was found gone.
	Reroute func(ctx context.Context, j jid.JID, queue []*xmlstream.Element)
	// Deliver, when set, routes stanzas the previous owner of a session resumed
	// here queued after this node took its state (to the session here, as they
	// are); unset, Reroute gets them.
	Deliver func(ctx context.Context, j jid.JID, stanzas []*xmlstream.Element)
	// Settled, when set, is told on every node when a copy of a gone node's
	// session stops being resumable here: resumed (taken here, handed to a peer,
	// or replaced by the state of the node that resumed it) or expired. It runs
	// without the manager's lock.
	Settled func(ctx context.Context, j jid.JID, resumed bool)
	// TakeOver, when set, is told that this node became responsible for the
	// copy of gone node's session j because the survivor responsible for it
	// went too: should j not be resumed, its Settled(false) here is the one
	// that closes it for its contacts. It runs without the manager's lock.
	TakeOver func(j jid.JID)
	// Refused, when set, is told on this node that the resumption of j from
	// the state Fetch returned was refused here (Manager.Refused): the old
	// session is over although Settled heard it resumed. It runs before the
	// client gets <failed/>, so before its next session is announced.
	Refused func(ctx context.Context, j jid.JID)
	// AloneAfter is how long after its last peer left its view a node goes on
	// refusing Sync (and so <a/> answers and bus acknowledgements) for want
	// of a peer holding its sessions' state; after that it acknowledges alone,
	// as a single node does. Peers that declared this node lost by mistake
	// (a false node loss) hold copies of its sessions that a client can
	// resume for sm-timeout: default Timeout.
	AloneAfter time.Duration
	// Tick is the period of the membership check (default 200 ms).
	Tick   time.Duration
	Logger *slog.Logger
}

// wireState is a session's state on the wire and in copies.
type wireState struct {
	ID         string    `json:"id"`
	JID        string    `json:"jid"`
	HIn        uint32    `json:"hin"`
	Out        uint32    `json:"out"`
	Presence   string    `json:"pres,omitempty"`
	Interested bool      `json:"int,omitempty"`
	Since      time.Time `json:"since"`
	Mech       string    `json:"mech,omitempty"`
	TLS        bool      `json:"tls,omitempty"`
	Queue      []qItem   `json:"queue,omitempty"`
	// Gen counts the moves of the session between nodes (each resumption on
	// another node adds one): of two nodes holding the session at once — one
	// resumed it from a copy while the other, declared gone by mistake, was
	// alive — the one with the higher Gen keeps it.
	Gen uint64 `json:"gen,omitempty"`
	// Base is Out when the current owner resumed the session (Gen > 0): what a
	// previous owner queued after it never reached the client.
	Base uint32 `json:"base,omitempty"`
	// Copy marks a handover (KindTake reply) of a copy of a gone node's
	// session, not of a session the answering node held: the other nodes'
	// copies may hold stanzas it lacks.
	Copy bool `json:"copy,omitempty"`
}

type qItem struct {
	Seq uint32 `json:"seq"`
	XML []byte `json:"xml"`
}

// copyOf is another node's session as held here.
type copyOf struct {
	owner  cluster.Peer
	st     wireState // Queue kept in order of Seq
	orphan bool      // the owner is gone: this copy is the session
	// late: the session itself, handed over by its live owner after the
	// resumption that asked stopped waiting (keepLateTake); not a gone
	// node's session (no Settled call for it).
	late     bool
	deadline time.Time // orphan: resumable until then
	// responsible: this node was the live node with the smallest name (the
	// owner excluded) when the copy became an orphan, or took over from that
	// node when it went too: it reroutes the queue if the copy expires. (A
	// responsible node declared gone by mistake that comes back keeps its
	// duty, so both reroute: a stanza may then arrive twice.)
	responsible bool
	// resp and respInc name the responsible node (this one, or the live
	// peer with the smallest name) and its incarnation: should it go before
	// the copy expires, the survivor next in line takes over (check).
	// survivors are the peers that were live (and so held copies) when the
	// owner was found gone, with their incarnations.
	resp      string
	respInc   uint64
	survivors map[string]uint64
	// held: the stanzas of the queue (by number) that the bus did not fail
	// back to their sender because this copy holds them (Holds): this copy
	// may be the only place they are, so its expiry reroutes them here even
	// when another node is responsible for the rest.
	held map[uint32]bool
}

// Manager implements c2s.Replicator.
type Manager struct {
	cfg Config
	log *slog.Logger
	ho  Handoverer

	mu    sync.Mutex
	local map[string]*wireState // this node's resumable sessions (for full copies)
	gens  map[string]uint64     // Gen of sessions being resumed here (until their first Put)
	// late: stanzas the previous owner queued for a session being resumed
	// here (between Fetch and its first Put), routed to it once it is here.
	late map[string][]*xmlstream.Element
	// tails: stanzas other nodes' copies of a session being resumed here
	// brought after the resumption (mergeTails), delivered at its first Put.
	tails   map[string][]qItem
	copies  map[string]*copyOf // other nodes' sessions, by id
	peers   map[string]uint64  // peers that have (or are being sent) a full copy
	stale   map[string]bool    // peers that missed a message: full copy on the next tick
	stopped bool
	// peeredAt: when this node last had a peer receiving its copies (zero:
	// never); Sync refuses to succeed alone until AloneAfter after it.
	peeredAt time.Time
	// resyncAt: when each owner of orphaned copies that is back as the same
	// incarnation was last asked for a full copy.
	resyncAt map[string]time.Time

	cancel context.CancelFunc
	done   chan struct{}

	// Sync rounds: callers share the next round to start (one bus call per
	// peer for any number of waiting callers).
	syncs *rounds.Group[struct{}]
}

// New returns a manager; Register its bus handlers before the bus starts.
func New(cfg Config, ho Handoverer) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 200 * time.Millisecond
	}
	if cfg.AloneAfter <= 0 {
		cfg.AloneAfter = cfg.Timeout
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.With("component", "resume"), ho: ho,
		local: map[string]*wireState{}, gens: map[string]uint64{}, copies: map[string]*copyOf{}, peers: map[string]uint64{}, stale: map[string]bool{},
		resyncAt: map[string]time.Time{}}
	m.syncs = rounds.New(m.syncOnce)
	return m
}

// Register installs the bus handlers.
func (m *Manager) Register() {
	b := m.cfg.Bus
	b.Handle(KindPut, m.onPut)
	b.Handle(KindQueue, m.onQueue)
	b.Handle(KindAck, m.onAck)
	b.Handle(KindEnd, m.onEnd)
	b.Handle(KindFull, m.onFull)
	b.Handle(KindOrphan, m.onOrphan)
	b.Handle(KindSync, func(context.Context, cluster.Peer, *cluster.Message) ([]byte, error) { return nil, nil })
	b.Handle(KindTake, m.onTake)
	b.Handle(KindTail, m.onTail)
	b.Handle(KindResync, m.onResync)
}

// Start runs the membership loop: full copies to new peers, copies of gone
// nodes turned into resumable sessions, expired ones handed to Reroute.
func (m *Manager) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go m.loop(ctx)
	return nil
}

// Stop tells the peers that this node's sessions are theirs now (a stopping
// node leaves its resumable sessions to the cluster), waits for them to
// confirm, and ends the loop.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	n := len(m.local)
	if n > 0 {
		for p := range m.peers {
			if m.stale[p] {
				// It missed updates: the sessions left to it are the ones it
				// gets now, not its out-of-date copies.
				m.fullLocked(p)
			}
			m.sendLocked(p, &cluster.Message{Kind: KindOrphan})
		}
	}
	m.stopped = true
	m.mu.Unlock()
	if n > 0 {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := m.Sync(sctx); err != nil {
			m.log.Warn("peers did not confirm the resumable sessions left to them", "sessions", n, "err", err)
		} else {
			m.log.Info("resumable sessions left to the other nodes", "sessions", n)
		}
		cancel()
	}
	if m.cancel != nil {
		m.cancel()
		<-m.done
	}
	return nil
}

// --- c2s.Replicator ------------------------------------------------------

// NewID returns a resumption id naming this node.
func (m *Manager) NewID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b) + "-" + base64.RawURLEncoding.EncodeToString([]byte(m.cfg.Node))
}

// OwnerOf returns the node named in a resumption id made by NewID.
func OwnerOf(id string) string {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(id[i+1:])
	if err != nil {
		return ""
	}
	return string(b)
}

func toWire(st *c2s.SMState) wireState {
	w := wireState{ID: st.ID, JID: st.JID.String(), HIn: st.HIn, Out: st.OutCount, Interested: st.Interested,
		Since: st.Since, Mech: st.Mech, TLS: st.TLS}
	if st.Presence != nil {
		w.Presence = string(xmlstream.AppendElement(nil, st.Presence, xmlstream.NSClient))
	}
	first := st.OutCount - uint32(len(st.Queue))
	for i, q := range st.Queue {
		w.Queue = append(w.Queue, qItem{Seq: first + uint32(i) + 1, XML: xmlstream.AppendElement(nil, q, xmlstream.NSClient)})
	}
	return w
}

// Put records a session's scalar state and sends it to the peers.
func (m *Manager) Put(st *c2s.SMState) {
	w := toWire(st)
	w.Queue = nil
	body, _ := json.Marshal(&w)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.copies, st.ID) // this node holds it now
	l := m.local[st.ID]
	if l == nil {
		// Resumed here: the first Put comes before anything new is queued.
		_, resumed := m.gens[st.ID]
		l = &wireState{Gen: m.gens[st.ID], Base: w.Out}
		delete(m.gens, st.ID)
		if !resumed {
			m.abandonedLocked(w.JID, st.ID)
		}
		m.local[st.ID] = l
		if late := m.late[st.ID]; len(late) > 0 {
			delete(m.late, st.ID)
			m.rerouteLate(st.JID, late)
		}
		if tail := m.tails[st.ID]; len(tail) > 0 {
			delete(m.tails, st.ID)
			go m.deliverTail(st.JID, tail, w.Out, m.cfg.Deliver)
		}
	}
	if l.Gen != 0 {
		w.Gen, w.Base = l.Gen, l.Base
		body, _ = json.Marshal(&w)
	}
	q := l.Queue
	*l = w
	l.Queue = q
	m.broadcastLocked(&cluster.Message{Kind: KindPut, ID: st.ID, Body: body})
}

// Queued records a stanza sent to the client.
func (m *Manager) Queued(id string, seq uint32, st *xmlstream.Element) {
	x := xmlstream.AppendElement(nil, st, xmlstream.NSClient)
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.local[id]
	if l == nil {
		return
	}
	l.Queue = append(l.Queue, qItem{Seq: seq, XML: x})
	if after(seq, l.Out) {
		l.Out = seq
	}
	m.broadcastLocked(&cluster.Message{Kind: KindQueue, ID: id, To: fmt.Sprint(seq), Body: x})
}

// Acked records the client's acknowledgement of every stanza up to h.
func (m *Manager) Acked(id string, h uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.local[id]
	if l == nil {
		return
	}
	l.Queue = trim(l.Queue, h)
	m.broadcastLocked(&cluster.Message{Kind: KindAck, ID: id, To: fmt.Sprint(h)})
}

// Ended forgets a session of this node.
func (m *Manager) Ended(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.local[id]; !ok {
		return
	}
	delete(m.local, id)
	m.broadcastLocked(&cluster.Message{Kind: KindEnd, ID: id})
}

// Replicated reports whether a peer that is in sync receives the copies.
func (m *Manager) Replicated() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.peers {
		if !m.stale[p] {
			return true
		}
	}
	return false
}

// Sync returns once at least one peer has handled everything sent to it so
// far. With no peer it succeeds at once only when this node never had one or
// lost its last one more than AloneAfter ago: a node its peers declared lost
// while alive (its cluster traffic cut or stalled) must not acknowledge what
// no copy holds, since the peers' copies of its sessions are resumable
// without it. Concurrent callers share rounds.
func (m *Manager) Sync(ctx context.Context) error {
	_, err := m.syncs.Do(ctx)
	return err
}

// syncOnce runs one round of Sync, bounded.
func (m *Manager) syncOnce() (struct{}, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return struct{}{}, m.syncRound(ctx)
}

// syncRound is one round of Sync.
func (m *Manager) syncRound(ctx context.Context) error {
	m.mu.Lock()
	peers := make([]string, 0, len(m.peers))
	for p := range m.peers {
		if !m.stale[p] {
			peers = append(peers, p)
		}
	}
	none := len(m.peers) == 0
	since := time.Since(m.peeredAt)
	alone := m.peeredAt.IsZero() || since >= m.cfg.AloneAfter
	m.mu.Unlock()
	if none {
		if alone {
			return nil
		}
		return fmt.Errorf("resume: no peer holds this node's sessions' state (the last one left %s ago; alone after %s)",
			since.Round(time.Millisecond), m.cfg.AloneAfter)
	}
	if len(peers) == 0 {
		return errors.New("resume: no peer is in sync yet")
	}
	res := make(chan error, len(peers))
	for _, p := range peers {
		go func() {
			_, err := m.cfg.Bus.Call(ctx, p, &cluster.Message{Kind: KindSync})
			res <- err
		}()
	}
	var errs []error
	for range peers {
		err := <-res
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("resume: no peer confirmed: %w", errors.Join(errs...))
}

// Fetch takes over session id of user: from the live node that holds it, or
// from this node's copy when that node is gone.
func (m *Manager) Fetch(ctx context.Context, id, user string) (*c2s.SMState, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	useCopy := false // the owner, back after a false loss, says it has no such session
	for attempt := 0; ; attempt++ {
		peers := m.cfg.Peers()
		m.mu.Lock()
		cp := m.copies[id]
		owner := OwnerOf(id)
		if cp != nil {
			owner = cp.owner.Node
		}
		// An orphan copy whose owner is a live peer again, same incarnation: the
		// owner was declared gone by mistake and still holds the session, which
		// is taken from it (a handover), not from the copy.
		// A late handover (keepLateTake) is the owner's own answer: not asked again.
		back := cp != nil && cp.orphan && !cp.late && !useCopy && peers[owner] == cp.owner.Incarnation
		if cp != nil && cp.orphan && !back {
			if !userOf(cp.st.JID, user) {
				m.mu.Unlock()
				return nil, c2s.ErrNoSession // another user's session: left as it is
			}
			delete(m.copies, id)
			m.gens[id] = cp.st.Gen + 1
			m.mu.Unlock()
			m.settled(cp, true)
			added, late := m.mergeTails(ctx, id, cp, peers, "")
			m.log.Info("resuming a session of a node that is gone, from its copy", "jid", cp.st.JID, "node", owner, "queued", len(cp.st.Queue), "from_other_copies", added, "late_peers", late)
			return fromWire(&cp.st)
		}
		_, alive := peers[owner]
		m.mu.Unlock()
		if owner == "" || owner == m.cfg.Node || (!alive && cp == nil) {
			// Not here and its node is not (or no longer) the holder: a peer may
			// hold it (moved there, or a copy of a gone node this node never got,
			// e.g. after a restart).
			return m.askAll(ctx, id, user)
		}
		if alive {
			var inc uint64
			if cp != nil {
				inc = cp.owner.Incarnation
			}
			body, gone, err := m.take(ctx, owner, inc, cp != nil, id, user)
			if gone {
				// Declared gone while we waited for it: the copy is the session now.
				m.log.Info("the node holding the session was declared gone during the handover; resuming from the copy", "node", owner)
				m.check()
				continue
			}
			if err == nil {
				var w wireState
				if err := json.Unmarshal(body, &w); err != nil {
					return nil, fmt.Errorf("resume: handover from %s: %w", owner, err)
				}
				m.log.Info("session handed over by its node", "jid", w.JID, "node", owner, "queued", len(w.Queue))
				m.adopting(id, w.Gen)
				return fromWire(&w)
			}
			if strings.Contains(err.Error(), c2s.ErrNoSession.Error()) {
				if back {
					useCopy = true
					continue
				}
				return m.askAll(ctx, id, user)
			}
			if cp == nil {
				return nil, fmt.Errorf("resume: handover from %s: %w", owner, err)
			}
			m.log.Info("the node holding the session does not answer; waiting for it to be declared gone", "node", owner, "err", err)
		}
		// The owner is gone (or not answering) and a copy is here: wait until the
		// membership says so, then the copy becomes the session.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("resume: node %s holds the session and does not answer: %w", owner, ctx.Err())
		case <-time.After(m.cfg.Tick):
		}
		m.check()
	}
}

// takePoll is how often a handover in flight checks that the holder is still
// a live peer.
const takePoll = 20 * time.Millisecond

// take asks owner to hand session id over, waiting for at most takeWait. When
// watch is set (a copy is here) the wait is cut short as soon as owner leaves
// the live peers (or comes back as another incarnation than inc, when inc is
// not 0): gone is then true and the copy is to be used at once.
//
// The holder gives the session up when it answers: an answer that comes after
// the wait ended (a loaded holder) is not dropped — the call goes on for up to
// lateTakeWait and a late answer is kept here as the session (keepLateTake),
// resumable on this node or handed over to whichever node the client resumes
// through. Dropping it lost the session and its queue: in qemu scenario (f) at
// host load 12, node2 handed alice's session (322 queued stanzas) to node3
// 0.4 s after node3 had stopped waiting, and her next resume was refused.
func (m *Manager) take(ctx context.Context, owner string, inc uint64, watch bool, id, user string) (body []byte, gone bool, err error) {
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), lateTakeWait)
	type res struct {
		body []byte
		err  error
	}
	ch := make(chan res, 1)
	// state: 0 while the caller waits, 1 once it gave up, 2 once the answer
	// is handed to it; whoever moves it from 0 decides where the answer goes.
	var state atomic.Int32
	go func() {
		defer ccancel()
		b, err := m.cfg.Bus.Call(cctx, owner, &cluster.Message{Kind: KindTake, ID: id, To: user})
		if state.CompareAndSwap(0, 2) {
			ch <- res{b, err}
			return
		}
		if err == nil {
			m.keepLateTake(owner, id, b)
		}
	}()
	giveUp := func(cancel bool) (res, bool) {
		if cancel {
			ccancel()
		}
		if state.CompareAndSwap(0, 1) {
			return res{}, false
		}
		return <-ch, true // the answer raced the end of the wait: it wins
	}
	wait := time.NewTimer(takeWait)
	defer wait.Stop()
	t := time.NewTicker(takePoll)
	defer t.Stop()
	for {
		select {
		case r := <-ch:
			return r.body, false, r.err
		case <-wait.C:
			if r, ok := giveUp(false); ok {
				return r.body, false, r.err
			}
			return nil, false, fmt.Errorf("cluster: call %s on %s: %w", KindTake, owner, context.DeadlineExceeded)
		case <-ctx.Done():
			if r, ok := giveUp(false); ok {
				return r.body, false, r.err
			}
			return nil, false, ctx.Err()
		case <-t.C:
			if !watch {
				continue
			}
			if cur, ok := m.cfg.Peers()[owner]; !ok || (inc != 0 && cur != inc) {
				// An answer that raced the cancellation still wins: the holder
				// handed the session over and no longer has it.
				if r, ok := giveUp(true); ok && r.err == nil {
					return r.body, false, nil
				}
				return nil, true, nil
			}
		}
	}
}

// takeWait is how long a resumption waits for the holder's handover;
// lateTakeWait how long the handover's answer is still taken after that.
const (
	takeWait     = 3 * time.Second
	lateTakeWait = 30 * time.Second
)

// keepLateTake keeps a session handed over by owner after the node that asked
// for it stopped waiting: the holder no longer has it, so it is this node's to
// keep, as a resumable copy whose owner is gone (Fetch resumes it here, a peer
// asking for it gets it handed over, and it is rerouted from here if nobody
// resumes it within the timeout).
func (m *Manager) keepLateTake(owner, id string, body []byte) {
	var w wireState
	if err := json.Unmarshal(body, &w); err != nil {
		m.log.Warn("a late handover unreadable", "node", owner, "err", err)
		return
	}
	w.Copy = false
	cp := &copyOf{owner: cluster.Peer{Node: owner, Incarnation: m.cfg.Peers()[owner]}, st: w, late: true}
	m.mu.Lock()
	cp.orphan, cp.deadline, cp.responsible = true, time.Now().Add(m.cfg.Timeout), true
	m.copies[id] = cp
	m.mu.Unlock()
	m.log.Info("a session handed over after the resumption stopped waiting for it: kept here, resumable", "jid", w.JID, "node", owner, "queued", len(w.Queue), "for", m.cfg.Timeout)
}

func userOf(full, user string) bool {
	j, err := jid.Parse(full)
	return err == nil && j.Local == user
}

// askAll asks every live peer for session id; the one that holds it (or a
// copy of a gone node's) hands it over. Every peer holding a copy of a gone
// node's session hands it over (and drops it): their queues are merged, those
// answering within tailWait of the first into the resumed queue, later ones
// delivered to the session once it is here (lateTail).
func (m *Manager) askAll(ctx context.Context, id, user string) (*c2s.SMState, error) {
	peers := m.cfg.Peers()
	if len(peers) == 0 {
		return nil, c2s.ErrNoSession
	}
	type res struct {
		body []byte
		node string
		err  error
	}
	ch := make(chan res, len(peers))
	// The calls outlive this function when a peer is slow: their own bound.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	lateCalls := false // the calls left are waited for by a goroutine
	defer func() {
		if !lateCalls {
			cancel()
		}
	}()
	for p := range peers {
		go func() {
			b, err := m.cfg.Bus.Call(cctx, p, &cluster.Message{Kind: KindTake, ID: id, To: user})
			ch <- res{b, p, err}
		}()
	}
	var found *wireState
	var from string
	var tm *tailMerge
	var errs []error
	var tail <-chan time.Time
	got := 0
collect:
	for got < len(peers) {
		var r res
		select {
		case r = <-ch:
			got++
		case <-tail:
			break collect
		case <-ctx.Done():
			break collect
		}
		var w wireState
		if r.err == nil {
			if err := json.Unmarshal(r.body, &w); err == nil {
				_, err = jid.Parse(w.JID)
				r.err = err
			} else {
				r.err = err
			}
		}
		switch {
		case r.err == nil && found != nil && found.Copy && !w.Copy:
			// The node holding the session answered after a copy did (a copy
			// of a node declared gone by mistake, handed over by a peer that
			// did not know it was back): the session itself wins, the copies
			// are older than it.
			m.log.Warn("a peer handed over a copy of a session its node still held; the node's own state is used", "jid", w.JID, "copy_from", from, "node", r.node)
			m.adopting(id, w.Gen)
			found, from, tm = &w, r.node, nil
			break collect
		case r.err == nil && found == nil:
			m.adopting(id, w.Gen)
			found, from = &w, r.node
			if !w.Copy {
				break collect // a live session: only its node holds it
			}
			tm = newTailMerge(found)
			t := time.NewTimer(tailWait)
			defer t.Stop()
			tail = t.C
		case r.err == nil && w.Copy && tm != nil:
			tm.add(w.Queue)
		case r.err != nil && !strings.Contains(r.err.Error(), c2s.ErrNoSession.Error()):
			errs = append(errs, fmt.Errorf("%s: %w", r.node, r.err))
		}
	}
	late := len(peers) - got
	if found == nil {
		if len(errs) > 0 {
			return nil, fmt.Errorf("resume: asking the peers: %w", errors.Join(errs...))
		}
		return nil, c2s.ErrNoSession
	}
	added := 0
	if tm != nil {
		added = tm.finish()
		found.Copy = false
		if late > 0 {
			lateCalls = true
			go func() {
				defer cancel()
				var extra []qItem
				for range late {
					r := <-ch
					var w wireState
					if r.err == nil && json.Unmarshal(r.body, &w) == nil && w.Copy {
						extra = append(extra, tm.extra(w.Queue)...)
					}
				}
				if len(extra) > 0 {
					m.lateTail(id, found.JID, extra)
				}
			}()
		}
	} else {
		late = 0
	}
	m.log.Info("session handed over by a peer", "jid", found.JID, "node", from, "queued", len(found.Queue), "from_other_copies", added, "late_peers", late)
	return fromWire(found)
}

// onTake hands a session over to the calling node: a local one, or this
// node's copy of a gone node's session.
func (m *Manager) onTake(ctx context.Context, from cluster.Peer, msg *cluster.Message) ([]byte, error) {
	m.mu.Lock()
	var gen uint64
	if l := m.local[msg.ID]; l != nil {
		gen = l.Gen
	}
	m.mu.Unlock()
	st, err := m.ho.Handover(ctx, msg.ID, msg.To)
	if err == nil {
		w := toWire(st)
		w.Gen = gen
		return json.Marshal(&w)
	}
	if !errors.Is(err, c2s.ErrNoSession) {
		return nil, err
	}
	m.mu.Lock()
	cp := m.copies[msg.ID]
	if cp == nil || !cp.orphan || !userOf(cp.st.JID, msg.To) || m.ownerBackLocked(cp, m.cfg.Peers()) {
		// A copy whose owner is back (declared gone by mistake, the same
		// incarnation) is not the session: the owner holds it and answers
		// the asking node itself; this copy may have missed its updates.
		m.mu.Unlock()
		return nil, c2s.ErrNoSession
	}
	delete(m.copies, msg.ID)
	m.mu.Unlock()
	m.settled(cp, true)
	w := cp.st
	w.Copy = true
	return json.Marshal(&w)
}

// tailWait bounds how long a resumption from a copy waits for the other
// live peers' copies of the session before the client gets <resumed/>;
// lateTailWait is how long their answers are still taken after that.
const (
	tailWait     = 500 * time.Millisecond
	lateTailWait = 10 * time.Second
)

// mergeTails adds to cp (a gone node's session resumed here from this node's
// copy, or from the copy of peer skip) the stanzas the other live peers'
// copies hold and this one lacks. The gone node acknowledged a forwarded
// stanza to its sender once ONE peer had it (Sync): the sender's node may
// resume the session from a copy that missed the last stanzas (they were
// still on their way from the dead node), which the sender was told were
// received. Answers within tailWait are merged into the resumed queue; a peer
// that answers later (a loaded node) is not left out: what its copy adds is
// delivered to the resumed session once it is here (lateTail). It returns how
// many stanzas were merged and how many peers answer late.
func (m *Manager) mergeTails(ctx context.Context, id string, cp *copyOf, peers map[string]uint64, skip string) (added, late int) {
	// The calls outlive the resumption: their own bound.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lateTailWait)
	res := make(chan []qItem, len(peers))
	n := 0
	for p := range peers {
		if p == cp.owner.Node || p == m.cfg.Node || p == skip {
			continue
		}
		n++
		go func() {
			var q []qItem
			if b, err := m.cfg.Bus.Call(cctx, p, &cluster.Message{Kind: KindTail, ID: id}); err == nil && len(b) > 0 {
				_ = json.Unmarshal(b, &q)
			}
			res <- q
		}()
	}
	tm := newTailMerge(&cp.st)
	wait := time.NewTimer(tailWait)
	defer wait.Stop()
	got := 0
collect:
	for got < n {
		select {
		case q := <-res:
			got++
			tm.add(q)
		case <-wait.C:
			break collect
		case <-ctx.Done():
			break collect
		}
	}
	added = tm.finish()
	late = n - got
	if late == 0 {
		cancel()
		return added, 0
	}
	jidS := cp.st.JID
	go func() {
		defer cancel()
		var extra []qItem
		for range late {
			extra = append(extra, tm.extra(<-res)...)
		}
		if len(extra) > 0 {
			m.lateTail(id, jidS, extra)
		}
	}()
	return added, late
}

// tailMerge merges other copies' queues into a session's state resumed from
// one copy.
type tailMerge struct {
	st    *wireState
	have  map[uint32]bool
	floor uint32
	added int
	mu    sync.Mutex // extra runs after finish, from a goroutine
}

func newTailMerge(st *wireState) *tailMerge {
	t := &tailMerge{st: st, have: map[uint32]bool{}}
	for _, q := range st.Queue {
		t.have[q.Seq] = true
	}
	// Only what this copy lacks after its own start: a peer whose copy missed
	// an acknowledgement holds older stanzas the client has. (The client's h
	// at the resumption trims what it did get.)
	if len(st.Queue) > 0 {
		t.floor = st.Queue[0].Seq
	} else {
		t.floor = st.Out
	}
	return t
}

// add merges what q has and the state lacks.
func (t *tailMerge) add(q []qItem) {
	for _, it := range q {
		if t.have[it.Seq] || !after(it.Seq, t.floor) {
			continue
		}
		t.have[it.Seq] = true
		t.st.Queue = append(t.st.Queue, it)
		t.added++
	}
}

// finish orders the merged queue and its Out; it returns how many were added.
func (t *tailMerge) finish() int {
	if t.added > 0 {
		slices.SortFunc(t.st.Queue, func(a, b qItem) int {
			switch {
			case a.Seq == b.Seq:
				return 0
			case after(a.Seq, b.Seq):
				return 1
			}
			return -1
		})
		for _, q := range t.st.Queue {
			if after(q.Seq, t.st.Out) {
				t.st.Out = q.Seq
			}
		}
	}
	t.floor = t.st.Out
	return t.added
}

// extra returns what q has after the finished state (numbered after its Out)
// and no earlier answer brought: stanzas of a copy that answered late.
func (t *tailMerge) extra(q []qItem) []qItem {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []qItem
	for _, it := range q {
		if !t.have[it.Seq] && after(it.Seq, t.floor) {
			t.have[it.Seq] = true
			out = append(out, it)
		}
	}
	return out
}

// lateTail hands stanzas that a peer's copy of session id brought after the
// session was resumed here (numbered after the resumed queue) to the session:
// once it is here (its first Put), those the client had not acknowledged at its
// resumption (numbered after Base) are delivered to it; before, they wait for
// the Put. If the resumption came to nothing they are rerouted (offline storage).
func (m *Manager) lateTail(id, jidS string, q []qItem) {
	j, err := jid.Parse(jidS)
	if err != nil {
		return
	}
	m.mu.Lock()
	if l := m.local[id]; l != nil {
		base := l.Base
		m.mu.Unlock()
		m.deliverTail(j, q, base, m.cfg.Deliver)
		return
	}
	if _, resuming := m.gens[id]; resuming {
		if m.tails == nil {
			m.tails = map[string][]qItem{}
		}
		m.tails[id] = append(m.tails[id], q...)
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.deliverTail(j, q, 0, m.cfg.Reroute)
}

// deliverTail decodes the stanzas of q numbered after base (all for base 0)
// and hands them to fn, without the manager's lock.
func (m *Manager) deliverTail(j jid.JID, q []qItem, base uint32, fn func(context.Context, jid.JID, []*xmlstream.Element)) {
	if fn == nil {
		fn = m.cfg.Reroute
	}
	var out []*xmlstream.Element
	for _, it := range q {
		if base != 0 && !after(it.Seq, base) {
			continue // the client had it when it resumed
		}
		if e, err := decode(it.XML); err == nil {
			out = append(out, e)
		}
	}
	if len(out) == 0 || fn == nil {
		return
	}
	m.log.Info("stanzas another node's copy of a resumed session held, answered after the resumption: routed to it", "jid", j.String(), "stanzas", len(out))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fn(ctx, j, out)
	}()
}

// onTail answers a peer resuming a gone node's session from its own copy with
// this node's copy's queue.
func (m *Manager) onTail(_ context.Context, _ cluster.Peer, msg *cluster.Message) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := m.copies[msg.ID]
	if cp == nil || len(cp.st.Queue) == 0 {
		return nil, nil
	}
	if msg.To == tailUnheld && len(cp.held) > 0 {
		q := make([]qItem, 0, len(cp.st.Queue))
		for _, it := range cp.st.Queue {
			if !cp.held[it.Seq] {
				q = append(q, it)
			}
		}
		return json.Marshal(q)
	}
	return json.Marshal(cp.st.Queue)
}

// adopting records the Gen of session id being resumed here (one more move).
func (m *Manager) adopting(id string, gen uint64) {
	m.mu.Lock()
	m.gens[id] = gen + 1
	m.mu.Unlock()
}

// newerOwnerLocked reports whether w, sent by another node, says that node
// holds session id as a later owner than this node's local session: this node
// was declared gone while alive and the session was resumed there from a copy.
// This node then gives the session up (surrender), so one node holds it.
func (m *Manager) newerOwnerLocked(from cluster.Peer, w *wireState) bool {
	l := m.local[w.ID]
	return l != nil && from.Node != m.cfg.Node && w.Gen > l.Gen
}

// surrender gives up local session id, which another node resumed (as a newer
// owner) after this node was declared gone by mistake: it is unbound here
// without telling contacts it went away and its connection closed, and every
// stanza queued here after what the other node resumed (numbered after base) is
// routed again — to the session on the other node. Nothing is lost; a stanza
// may arrive twice.
func (m *Manager) surrender(id, jidS string, base uint32, to string) {
	j, err := jid.Parse(jidS)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := m.ho.Handover(ctx, id, j.Local)
	if err != nil {
		return // ended meanwhile
	}
	first := st.OutCount - uint32(len(st.Queue)) + 1
	var later []*xmlstream.Element
	for i, q := range st.Queue {
		if after(first+uint32(i), base) {
			later = append(later, q)
		}
	}
	m.log.Warn("a session held here was resumed on another node (this node was declared gone while alive): given up, stanzas queued since routed to it",
		"jid", j.String(), "node", to, "rerouted", len(later))
	if len(later) > 0 && m.cfg.Reroute != nil {
		m.cfg.Reroute(ctx, j, later)
	}
}

// rerouteLate hands stanzas the previous owner of a session resumed here
// queued after this node took its state to Config.Deliver (without the lock:
// the router delivers them to the session here, whose replication calls back
// into the manager). At worst a stanza arrives twice, never not at all.
func (m *Manager) rerouteLate(j jid.JID, q []*xmlstream.Element) {
	deliver := m.cfg.Deliver
	if deliver == nil {
		deliver = m.cfg.Reroute
	}
	if deliver == nil {
		return
	}
	m.log.Info("stanzas queued by the session's previous node after it was resumed here: routed to it", "jid", j.String(), "stanzas", len(q))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		deliver(ctx, j, q)
	}()
}

// settled tells Config.Settled that orphan copy cp left this node.
func (m *Manager) settled(cp *copyOf, resumed bool) {
	if m.cfg.Settled == nil || !cp.orphan || cp.late {
		return
	}
	if j, err := jid.Parse(cp.st.JID); err == nil {
		m.cfg.Settled(context.Background(), j, resumed)
	}
}

// CopiesOf returns the full JIDs of node's sessions this node holds copies of
// (resumable here once node is gone).
func (m *Manager) CopiesOf(node string) map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	for _, cp := range m.copies {
		if cp.owner.Node == node && cp.st.JID != "" {
			out[cp.st.JID] = true
		}
	}
	return out
}

func fromWire(w *wireState) (*c2s.SMState, error) {
	j, err := jid.Parse(w.JID)
	if err != nil {
		return nil, fmt.Errorf("resume: bad JID in state: %w", err)
	}
	st := &c2s.SMState{ID: w.ID, JID: j, HIn: w.HIn, OutCount: w.Out, Interested: w.Interested, Since: w.Since, Mech: w.Mech, TLS: w.TLS}
	if w.Presence != "" {
		if p, err := decode([]byte(w.Presence)); err == nil {
			st.Presence = p
		}
	}
	for _, q := range w.Queue {
		if after(q.Seq, st.OutCount) {
			st.OutCount = q.Seq
		}
	}
	for _, q := range w.Queue {
		e, err := decode(q.XML)
		if err != nil {
			return nil, fmt.Errorf("resume: bad stanza in state: %w", err)
		}
		st.Queue = append(st.Queue, e)
	}
	return st, nil
}

var streamHead = []byte("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

// decode parses one stanza serialized with xmlstream.AppendElement.
func decode(b []byte) (*xmlstream.Element, error) {
	d := xmlstream.NewDecoder(io.MultiReader(bytes.NewReader(streamHead), bytes.NewReader(b)), xmlstream.DefaultLimits())
	if _, err := d.StreamHeader(); err != nil {
		return nil, err
	}
	return d.Next()
}

// after reports whether sequence number a comes after b (wrapping).
func after(a, b uint32) bool { return int32(a-b) > 0 }

// trim drops the items numbered h and below.
func trim(q []qItem, h uint32) []qItem {
	i := 0
	for i < len(q) && !after(q[i].Seq, h) {
		i++
	}
	if i == 0 {
		return q
	}
	return append(q[:0:0], q[i:]...)
}

// --- sending -------------------------------------------------------------

func (m *Manager) broadcastLocked(msg *cluster.Message) {
	for p := range m.peers {
		if !m.stale[p] {
			m.sendLocked(p, msg)
		}
	}
}

func (m *Manager) sendLocked(p string, msg *cluster.Message) {
	c := *msg
	m.cfg.Bus.Send(p, &c, func(_ *cluster.Message, err error) {
		m.mu.Lock()
		if _, ok := m.peers[p]; ok && !m.stale[p] {
			m.stale[p] = true
			m.log.Debug("peer missed a resumption update; a full copy follows", "peer", p, "err", err)
		}
		m.mu.Unlock()
	})
}

// fullLocked sends peer p a full copy of this node's sessions.
func (m *Manager) fullLocked(p string) {
	all := make([]wireState, 0, len(m.local))
	for _, l := range m.local {
		all = append(all, *l)
	}
	body, _ := json.Marshal(all)
	delete(m.stale, p)
	m.sendLocked(p, &cluster.Message{Kind: KindFull, Body: body})
}

// --- receiving -----------------------------------------------------------

func (m *Manager) copyLocked(from cluster.Peer, id string) *copyOf {
	cp := m.copies[id]
	if cp == nil || cp.owner != from {
		if _, mine := m.local[id]; mine {
			return nil // resumed here since: the sender's copy is out of date
		}
		if cp != nil && cp.orphan && cp.owner.Node != from.Node {
			// Resumed on the sender. Settled only forgets (no callback into
			// the manager), so it may run under the lock.
			m.settled(cp, true)
		}
		cp = &copyOf{owner: from, st: wireState{ID: id}}
		m.copies[id] = cp
	}
	return cp
}

func (m *Manager) onPut(_ context.Context, from cluster.Peer, msg *cluster.Message) ([]byte, error) {
	var w wireState
	if err := json.Unmarshal(msg.Body, &w); err != nil {
		return nil, fmt.Errorf("resume: bad state: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.newerOwnerLocked(from, &w) {
		go m.surrender(w.ID, w.JID, w.Base, from.Node)
		return nil, nil
	}
	if cp := m.copyLocked(from, w.ID); cp != nil {
		q, out := cp.st.Queue, cp.st.Out
		cp.st = w
		cp.st.Queue = q
		if after(out, cp.st.Out) {
			cp.st.Out = out
		}
	}
	return nil, nil
}

func (m *Manager) onQueue(_ context.Context, from cluster.Peer, msg *cluster.Message) ([]byte, error) {
	var seq uint32
	if _, err := fmt.Sscan(msg.To, &seq); err != nil {
		return nil, fmt.Errorf("resume: bad sequence number %q", msg.To)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if from.Node != m.cfg.Node {
		// The previous owner (a draining node whose sessions were left to the
		// cluster, or one that handed the session over) queued a stanza after
		// this node took the session's state: it is in no copy and the old
		// owner's client is gone, so it is routed to the session here.
		// (Gen 0: never moved here; its sender is the newer owner.)
		if l := m.local[msg.ID]; l != nil && l.Gen > 0 {
			if j, err := jid.Parse(l.JID); err == nil {
				if st, err := decode(msg.Body); err == nil {
					m.rerouteLate(j, []*xmlstream.Element{st})
				}
			}
			return nil, nil
		}
		if _, resuming := m.gens[msg.ID]; resuming {
			if st, err := decode(msg.Body); err == nil {
				if m.late == nil {
					m.late = map[string][]*xmlstream.Element{}
				}
				m.late[msg.ID] = append(m.late[msg.ID], st)
			}
			return nil, nil
		}
	}
	if cp := m.copyLocked(from, msg.ID); cp != nil {
		cp.st.Queue = append(cp.st.Queue, qItem{Seq: seq, XML: msg.Body})
		if after(seq, cp.st.Out) {
			cp.st.Out = seq
		}
	}
	return nil, nil
}

func (m *Manager) onAck(_ context.Context, from cluster.Peer, msg *cluster.Message) ([]byte, error) {
	var h uint32
	if _, err := fmt.Sscan(msg.To, &h); err != nil {
		return nil, fmt.Errorf("resume: bad h %q", msg.To)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cp := m.copies[msg.ID]; cp != nil && cp.owner == from {
		cp.st.Queue = trim(cp.st.Queue, h)
	}
	return nil, nil
}

func (m *Manager) onEnd(_ context.Context, from cluster.Peer, msg *cluster.Message) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cp := m.copies[msg.ID]; cp != nil && cp.owner == from {
		delete(m.copies, msg.ID)
	}
	return nil, nil
}

func (m *Manager) onFull(_ context.Context, from cluster.Peer, msg *cluster.Message) ([]byte, error) {
	var all []wireState
	if err := json.Unmarshal(msg.Body, &all); err != nil {
		return nil, fmt.Errorf("resume: bad full copy: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, cp := range m.copies {
		switch {
		case cp.owner.Node != from.Node || cp.late:
			// (A late handover is the session itself, which its old holder
			// no longer has: not replaced by that holder's full copy.)
		case cp.owner.Incarnation != from.Incarnation:
			// The sender restarted before this node noticed: its earlier
			// incarnation's sessions are resumable from their copies.
			if !cp.orphan {
				m.orphanLocked(cp, m.cfg.Peers(), time.Now())
			}
		default:
			// Replaced by the full copy. An orphan here means the sender was
			// declared gone while alive: it still holds its sessions, so their
			// copies are copies again (settled: nothing to close or reroute).
			m.settled(cp, true)
			delete(m.copies, id)
		}
	}
	for _, w := range all {
		if m.newerOwnerLocked(from, &w) {
			go m.surrender(w.ID, w.JID, w.Base, from.Node)
			continue
		}
		if cp := m.copyLocked(from, w.ID); cp != nil {
			cp.st = w
		}
	}
	return nil, nil
}

func (m *Manager) onOrphan(_ context.Context, from cluster.Peer, _ *cluster.Message) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, cp := range m.copies {
		if cp.owner == from && !cp.orphan {
			m.orphanLocked(cp, m.cfg.Peers(), time.Now())
			n++
		}
	}
	if n > 0 {
		m.log.Info("a stopping node left its resumable sessions here", "node", from.Node, "sessions", n, "for", m.cfg.Timeout)
	}
	return nil, nil
}

// --- membership ----------------------------------------------------------

func (m *Manager) loop(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.check()
		}
	}
}

// check follows membership: full copies to new (or stale) peers, copies of
// gone nodes become resumable sessions, and expired ones are rerouted.
func (m *Manager) check() {
	live := m.cfg.Peers()
	now := time.Now()
	var expired []*copyOf
	m.mu.Lock()
	if !m.stopped {
		for p, inc := range live {
			if old, ok := m.peers[p]; !ok || old != inc || m.stale[p] {
				m.peers[p] = inc
				m.fullLocked(p)
			}
		}
	}
	if len(m.peers) > 0 {
		m.peeredAt = now
	}
	for p := range m.peers {
		if _, ok := live[p]; !ok {
			delete(m.peers, p)
			delete(m.stale, p)
		}
	}
	var resync, takeover []string
	var complete map[string]*copyOf
	for id, cp := range m.copies {
		if inc, ok := live[cp.owner.Node]; !cp.orphan && (!ok || inc != cp.owner.Incarnation) {
			m.orphanLocked(cp, live, now)
			m.log.Info("node gone: its resumable session stays resumable here", "node", cp.owner.Node, "jid", cp.st.JID, "queued", len(cp.st.Queue), "for", m.cfg.Timeout)
			if cp.responsible && m.cfg.Reroute != nil {
				if complete == nil {
					complete = map[string]*copyOf{}
				}
				complete[id] = cp
			}
		}
		if m.ownerBackLocked(cp, live) {
			// Declared gone by mistake: the owner still holds the session, so
			// the copy neither expires (its queue rerouted, contacts told the
			// session went away) nor is handed out; the owner is asked for a
			// full copy, which turns it back into a copy. Should the owner go
			// for good before that, the copy is resumable for the timeout.
			cp.deadline = now.Add(m.cfg.Timeout)
			if now.Sub(m.resyncAt[cp.owner.Node]) >= resyncEvery && !slices.Contains(resync, cp.owner.Node) {
				m.resyncAt[cp.owner.Node] = now
				resync = append(resync, cp.owner.Node)
			}
			continue
		}
		if respGoneLocked(cp, live) {
			gone := cp.resp
			m.pickResponsibleLocked(cp, live)
			if cp.responsible {
				// Its copy, and with it the duty to reroute the queue and to
				// tell the contacts, went with it: the next in line has both.
				m.log.Info("the survivor responsible for a gone node's session is gone too: this node takes over", "jid", cp.st.JID, "gone", gone)
				takeover = append(takeover, cp.st.JID)
				if m.cfg.Reroute != nil {
					if complete == nil {
						complete = map[string]*copyOf{}
					}
					complete[id] = cp
				}
			}
		}
		if cp.orphan && now.After(cp.deadline) {
			delete(m.copies, id)
			expired = append(expired, cp)
		}
	}
	for _, p := range resync {
		m.log.Info("a node declared gone is back as the same incarnation; asking it for a full copy of its sessions", "node", p)
		m.sendLocked(p, &cluster.Message{Kind: KindResync})
	}
	m.mu.Unlock()
	for _, j := range takeover {
		if m.cfg.TakeOver == nil {
			continue
		}
		if jj, err := jid.Parse(j); err == nil {
			m.cfg.TakeOver(jj)
		}
	}
	for id, cp := range complete {
		go m.completeOrphan(id, cp, live)
	}
	for _, cp := range expired {
		m.settled(cp, false)
		if m.cfg.Reroute == nil {
			continue
		}
		if !cp.responsible {
			m.rerouteHeld(cp)
			continue
		}
		st, err := fromWire(&cp.st)
		if err != nil {
			m.log.Warn("expired session copy unreadable", "jid", cp.st.JID, "err", err)
			continue
		}
		m.log.Info("session of a gone node not resumed in time; its unacknowledged stanzas are rerouted", "jid", cp.st.JID, "count", len(st.Queue))
		m.cfg.Reroute(context.Background(), st.JID, st.Queue)
	}
}

// completeOrphan adds to cp — the copy of a gone node's session that this node
// is responsible for, so the one whose queue goes to offline storage should the
// session not be resumed — the stanzas the other survivors' copies hold and it
// lacks. The gone node acknowledged a stanza to its sender once ONE peer had it
// (Sync): a stanza still on its way to this node when the owner died is only in
// another survivor's copy, whose expiry reroutes nothing of its queue but what
// its own node's bus left to it (held, rerouteHeld); the peers leave those out
// of their answer, so each is rerouted once. The answers are awaited for at
// most half the timeout; one that comes later, or not at all, leaves the copy
// as it was (its stanzas are what the copy held before).
func (m *Manager) completeOrphan(id string, cp *copyOf, live map[string]uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), min(lateTailWait, m.cfg.Timeout/2))
	defer cancel()
	res := make(chan []qItem, len(live))
	n := 0
	for p := range live {
		if p == cp.owner.Node || p == m.cfg.Node {
			continue
		}
		n++
		go func() {
			var q []qItem
			if b, err := m.cfg.Bus.Call(ctx, p, &cluster.Message{Kind: KindTail, ID: id, To: tailUnheld}); err == nil && len(b) > 0 {
				if err := json.Unmarshal(b, &q); err != nil {
					m.log.Warn("unreadable copy of a gone node's session from a peer", "peer", p, "jid", cp.st.JID, "err", err)
				}
			}
			res <- q
		}()
	}
	var qs [][]qItem
	for range n {
		qs = append(qs, <-res)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.copies[id] != cp || !cp.orphan {
		return // resumed (its resumption merged the copies itself), expired or replaced meanwhile
	}
	tm := newTailMerge(&cp.st)
	for _, q := range qs {
		tm.add(q)
	}
	if added := tm.finish(); added > 0 {
		m.log.Info("copy of a gone node's session completed from the other survivors' copies", "jid", cp.st.JID, "added", added, "queued", len(cp.st.Queue))
	}
}

// tailUnheld, as a KindTail request's To, asks for the copy's queue without
// the stanzas the answering node's copy holds for its own bus (see Holds).
const tailUnheld = "unheld"

// abandonedLocked ends, at the next membership check, the resumable copies
// of gone nodes' sessions bound to full JID j other than id, the new session
// j's client just enabled here: a client that starts a new session with the
// same resource no longer resumes the old one (its resumption was refused or
// timed out), so what the old one holds is rerouted now — to the new session
// — rather than when the timeout ends it (in qemu scenario (f), three
// sessions handed over late kept 270–435 stanzas for the 5-minute timeout
// while their clients were on new sessions).
func (m *Manager) abandonedLocked(j, id string) {
	now := time.Now()
	for cid, cp := range m.copies {
		if cid == id || !cp.orphan || cp.st.JID != j || m.ownerBackLocked(cp, m.cfg.Peers()) {
			continue
		}
		if now.Before(cp.deadline) {
			m.log.Info("a new session of a resource whose earlier session is resumable here: the earlier one ends now, its stanzas rerouted", "jid", j, "queued", len(cp.st.Queue))
			cp.deadline = now
		}
	}
}

// rerouteHeld reroutes, from an expired copy this node is not responsible
// for, the stanzas the bus left to it (Holds): the responsible node's copy
// may lack them. (Both may reroute one: at least once.)
func (m *Manager) rerouteHeld(cp *copyOf) {
	if len(cp.held) == 0 {
		return
	}
	j, err := jid.Parse(cp.st.JID)
	if err != nil {
		return
	}
	var out []*xmlstream.Element
	for _, q := range cp.st.Queue {
		if !cp.held[q.Seq] {
			continue
		}
		if e, err := decode(q.XML); err == nil {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return
	}
	m.log.Info("session of a gone node not resumed in time; the stanzas its sender's bus left to this copy are rerouted", "jid", cp.st.JID, "count", len(out))
	m.cfg.Reroute(context.Background(), j, out)
}

// resyncEvery bounds how often an owner back after a false loss is asked for
// a full copy.
const resyncEvery = time.Second

// ownerBackLocked reports whether cp is an orphan copy (not a late handover)
// whose owner is a live peer again as the same incarnation: it was declared
// gone by mistake and still holds its sessions.
func (m *Manager) ownerBackLocked(cp *copyOf, live map[string]uint64) bool {
	if !cp.orphan || cp.late {
		return false
	}
	inc, ok := live[cp.owner.Node]
	return ok && inc == cp.owner.Incarnation
}

// onResync answers a peer that holds orphaned copies of this node's sessions
// (it declared this node gone by mistake): it gets a full copy on the next
// membership check, which replaces them.
func (m *Manager) onResync(_ context.Context, from cluster.Peer, _ *cluster.Message) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.peers[from.Node]; ok && !m.stopped {
		m.stale[from.Node] = true
	}
	return nil, nil
}

// orphanLocked makes cp the session (its owner is gone), resumable until the
// timeout; this node is responsible for it if it is the live node with the
// smallest name apart from the owner.
func (m *Manager) orphanLocked(cp *copyOf, live map[string]uint64, now time.Time) {
	cp.orphan, cp.deadline = true, now.Add(m.cfg.Timeout)
	cp.survivors = map[string]uint64{}
	for p, inc := range live {
		if p != cp.owner.Node {
			cp.survivors[p] = inc
		}
	}
	m.pickResponsibleLocked(cp, live)
}

// pickResponsibleLocked makes the survivor with the smallest name that is
// still live as the same incarnation — this node included — responsible for
// cp. A node that joined since holds no copy of cp's session: never picked.
func (m *Manager) pickResponsibleLocked(cp *copyOf, live map[string]uint64) {
	cp.resp, cp.respInc = m.cfg.Node, 0
	for p, inc := range cp.survivors {
		if now, ok := live[p]; ok && now == inc && p < cp.resp {
			cp.resp, cp.respInc = p, inc
		}
	}
	cp.responsible = cp.resp == m.cfg.Node
}

// respGoneLocked reports whether cp's responsible node is another node that
// has gone (or restarted, its copy lost with it) since it was picked.
func respGoneLocked(cp *copyOf, live map[string]uint64) bool {
	if !cp.orphan || cp.late || cp.responsible || cp.resp == "" {
		return false
	}
	inc, ok := live[cp.resp]
	return !ok || inc != cp.respInc
}

// Stats describes the manager for the admin interface.
type Stats struct {
	Local   int `json:"local"`
	Copies  int `json:"copies"`
	Orphans int `json:"orphans"`
	Queued  int `json:"queued"` // unacknowledged stanzas in the copies
	Peers   int `json:"peers"`
}

// Stats returns counts of local sessions, copies and peers.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{Local: len(m.local), Copies: len(m.copies), Peers: len(m.peers)}
	for _, cp := range m.copies {
		if cp.orphan {
			s.Orphans++
		}
		s.Queued += len(cp.st.Queue)
	}
	return s
}

// Refused is c2s telling that the state of session id Fetch returned was not
// resumed (older than the client's, see c2s.Server.covers): nothing more is
// kept for it here, what other nodes' copies brought for it, or bring later,
// numbered after h (the client's), is rerouted, and Config.Refused is told (the
// old session is over: its contacts learn it).
func (m *Manager) Refused(id string, j jid.JID, h uint32) {
	m.mu.Lock()
	delete(m.gens, id)
	tail := m.tails[id]
	late := m.late[id]
	delete(m.tails, id)
	delete(m.late, id)
	m.mu.Unlock()
	m.log.Warn("a resumption from another node's state was refused; what arrives for it is rerouted", "jid", j.String())
	if m.cfg.Refused != nil {
		m.cfg.Refused(context.Background(), j)
	}
	if len(tail) > 0 {
		m.deliverTail(j, tail, h, m.cfg.Reroute)
	}
	if len(late) > 0 && m.cfg.Reroute != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			m.cfg.Reroute(ctx, j, late)
		}()
	}
}

// Holds reports whether this node's copy of owner's session bound to the full
// JID full holds stanza (serialized as the router forwards it): a stanza the
// owner queued for its client and replicated here, and that a resumption
// anywhere gets (a resumption from another copy merges this one's queue) or,
// if nobody resumes it, the copy's expiry reroutes. The cluster bus asks it
// (cluster.Bus.SetHeld) for the stanzas a node declared gone had not
// acknowledged: those held here are not routed again (to offline storage, or
// bounced when it is full) besides.
func (m *Manager) Holds(owner, full string, stanza []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, cp := range m.copies {
		if cp.owner.Node != owner || cp.st.JID != full {
			continue
		}
		for _, q := range cp.st.Queue {
			if bytes.Equal(q.XML, stanza) {
				if cp.held == nil {
					cp.held = map[uint32]bool{}
				}
				cp.held[q.Seq] = true
				return true
			}
		}
	}
	return false
}

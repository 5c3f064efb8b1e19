package replicated

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"xedge/storage"
	"xedge/storage/ephemeral"
)

// Ephemeral tables (DESIGN decision 7) never touch raft. Each node's rows live
// in a storage/ephemeral.Set tagged with the node's name and incarnation; a
// streamer sends this node's changes to every other member of the raft
// configuration over the cluster transport (RPC "eph"), a full copy of its rows
// first and after any failed send, and an empty batch as a keepalive every
// ReportInterval. A receiver that hears nothing from a node for
// EphemeralTimeout (default 4 × ReportInterval) drops that node's rows; a full copy from a newer
// incarnation replaces everything older. Of the survivors, the raft leader is
// the one told it is responsible for the non-idempotent cleanup.

// Ephemeral implements storage.Store.
func (s *Store) Ephemeral(name string) storage.Ephemeral { return s.eph.Table(name) }

// EphemeralDrop is called when a node's ephemeral rows are dropped because the
// node (that incarnation) is gone. responsible is true on exactly one
// survivor in normal operation (the raft leader): it does the non-idempotent
// cleanup (unavailable presence, bounced stanzas).
type EphemeralDrop func(node string, incarnation uint64, rows int, responsible bool)

// OnEphemeralDrop registers fn (additive to storage.Store; xmppd may
// type-assert *replicated.Store). Set it before Start.
func (s *Store) OnEphemeralDrop(fn EphemeralDrop) {
	s.ephMu.Lock()
	s.onDrop = fn
	s.ephMu.Unlock()
}

// ephBatch is one "eph" RPC.
type ephBatch struct {
	Node        string             `json:"node"`
	Incarnation uint64             `json:"inc"`
	Full        bool               `json:"full,omitempty"`
	Changes     []ephemeral.Change `json:"changes,omitempty"`
}

type ephPeer struct {
	addr     string
	needFull bool
	busy     bool // a send is in flight: a slow peer never holds up the others
}

// ephStream is the sending side.
type ephStream struct {
	wg      sync.WaitGroup // sends in flight
	mu      sync.Mutex
	pending []ephemeral.Change
	overrun bool
	peers   map[raft.ServerID]*ephPeer
	kick    chan struct{}
}

const maxEphPending = 100000

func (s *Store) ephLocalChange(c ephemeral.Change) {
	e := &s.ephOut
	e.mu.Lock()
	if len(e.pending) >= maxEphPending {
		e.pending, e.overrun = nil, true
	} else if !e.overrun {
		e.pending = append(e.pending, c)
	}
	e.mu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// ephLoop streams local changes to peers and expires silent peers' rows.
func (s *Store) ephLoop(ctx context.Context) {
	e := &s.ephOut
	t := time.NewTicker(s.cfg.ReportInterval)
	defer t.Stop()
	lastKeepalive := time.Time{}
	defer e.wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
			time.Sleep(2 * time.Millisecond) // gather a burst into one batch
		case <-t.C:
			s.expireEphemeral()
		}
		e.mu.Lock()
		batch, overrun := e.pending, e.overrun
		e.pending, e.overrun = nil, false
		e.mu.Unlock()
		keepalive := time.Since(lastKeepalive) >= s.cfg.ReportInterval
		if len(batch) == 0 && !keepalive && !overrun {
			continue
		}
		if keepalive {
			lastKeepalive = time.Now()
		}
		s.ephSend(ctx, batch, overrun)
	}
}

// ephSend sends batch to every peer in parallel (a full copy to peers that
// need one) without waiting for the sends to finish.
func (s *Store) ephSend(ctx context.Context, batch []ephemeral.Change, allFull bool) {
	e := &s.ephOut
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	current := map[raft.ServerID]bool{}
	e.mu.Lock()
	for _, srv := range f.Configuration().Servers {
		if srv.ID == s.id {
			continue
		}
		current[srv.ID] = true
		p, ok := e.peers[srv.ID]
		if !ok || p.addr != string(srv.Address) {
			p = &ephPeer{addr: string(srv.Address), needFull: true}
			e.peers[srv.ID] = p
		}
		if allFull {
			p.needFull = true
		}
	}
	for id := range e.peers {
		if !current[id] {
			delete(e.peers, id)
		}
	}
	type job struct {
		p    *ephPeer
		full bool
	}
	var jobs []job
	for _, p := range e.peers {
		if p.busy {
			p.needFull = true // it misses this batch: resend everything later
			continue
		}
		jobs = append(jobs, job{p, p.needFull})
		p.busy, p.needFull = true, false
	}
	e.mu.Unlock()
	var full []ephemeral.Change
	for _, j := range jobs {
		if j.full {
			full = s.eph.LocalRows()
			break
		}
	}
	for _, j := range jobs {
		b := &ephBatch{Node: s.cfg.NodeName, Incarnation: s.inc, Changes: batch}
		if j.full {
			b.Full, b.Changes = true, full
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			resp, err := s.rpc.call(cctx, j.p.addr, &rpcRequest{Op: "eph", Eph: b})
			e.mu.Lock()
			j.p.busy = false
			if err != nil || resp.Err != "" {
				j.p.needFull = true
			}
			e.mu.Unlock()
		}()
	}
}

// handleEph merges a peer's rows. It runs on any node (no forwarding).
func (s *Store) handleEph(b *ephBatch) *rpcResponse {
	if b == nil || b.Node == s.cfg.NodeName {
		return &rpcResponse{Err: "bad ephemeral batch"}
	}
	s.ephMu.Lock()
	prevInc, known := s.ephSeen[b.Node]
	if known && b.Incarnation < prevInc.inc {
		s.ephMu.Unlock()
		return &rpcResponse{} // a late batch from an older incarnation
	}
	if !known || prevInc.inc != b.Incarnation {
		if !b.Full {
			// A new incarnation must start with a full copy.
			s.ephMu.Unlock()
			return &rpcResponse{Err: "full copy needed", Kind: "retry"}
		}
	}
	s.ephSeen[b.Node] = ephSender{inc: b.Incarnation, last: time.Now()}
	s.ephMu.Unlock()
	if b.Full {
		var lost []ephemeral.Change
		if known && prevInc.inc < b.Incarnation {
			lost = s.nodeRows(b.Node, prevInc.inc)
		}
		n := s.eph.DropNode(b.Node, b.Incarnation)
		if known && prevInc.inc < b.Incarnation {
			s.notifyDrop(b.Node, prevInc.inc, n, lost)
		}
	}
	for _, c := range b.Changes {
		if c.Row.Node != b.Node {
			continue // a node only writes its own rows
		}
		s.eph.Merge(c)
	}
	return &rpcResponse{}
}

type ephSender struct {
	inc  uint64
	last time.Time
}

// expireEphemeral drops the rows of nodes not heard from for EphemeralTimeout.
func (s *Store) expireEphemeral() {
	dead := s.cfg.EphemeralTimeout
	s.ephMu.Lock()
	var gone []struct {
		node string
		inc  uint64
	}
	for node, snd := range s.ephSeen {
		if time.Since(snd.last) > dead {
			gone = append(gone, struct {
				node string
				inc  uint64
			}{node, snd.inc})
			delete(s.ephSeen, node)
		}
	}
	s.ephMu.Unlock()
	for _, g := range gone {
		lost := s.nodeRows(g.node, g.inc)
		n := s.eph.DropNode(g.node, g.inc)
		s.log.Info("node silent: dropped its ephemeral rows", "peer", g.node, "incarnation", g.inc, "rows", n)
		s.notifyDrop(g.node, g.inc, n, lost)
	}
}

func (s *Store) notifyDrop(node string, inc uint64, rows int, lost []ephemeral.Change) {
	s.ephMu.Lock()
	fn := s.onDrop
	s.ephMu.Unlock()
	fnRows := s.dropRowsFn()
	if fn != nil {
		fn(node, inc, rows, s.raft.State() == raft.Leader)
	}
	if fnRows != nil {
		fnRows(node, inc, lost, s.raft.State() == raft.Leader)
	}
}

package replicated

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// autopilotState is the leader's view of the nodes' reports.
type autopilotState struct {
	mu          sync.Mutex
	seen        map[raft.ServerID]time.Time
	reports     map[raft.ServerID]report
	leaderSince time.Time
	wasLeader   bool
	left        map[raft.ServerID]bool // removed by Leave: late reports are ignored
}

// maxPromoteLag is how far behind (in entries) a nonvoter may be and still be
// promoted; a voter far behind would slow commits while it catches up.
const maxPromoteLag = 1000

// autopilotLoop runs the voter policy on the leader every ReportInterval.
func (s *Store) autopilotLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.ap.mu.Lock()
		leader := s.raft.State() == raft.Leader
		if leader && !s.ap.wasLeader {
			s.ap.leaderSince = time.Now()
			s.ap.seen = map[raft.ServerID]time.Time{}
			s.ap.reports = map[raft.ServerID]report{}
		}
		s.ap.wasLeader = leader
		if leader {
			s.reconcile()
		}
		s.ap.mu.Unlock()
	}
}

// handleReport records a node's report on the leader: it adds unknown nodes as
// nonvoters (removing older incarnations at the same address), publishes
// storage state changes through the log and re-runs the voter policy.
func (s *Store) handleReport(rep *report) *rpcResponse {
	s.ap.mu.Lock()
	defer s.ap.mu.Unlock()
	if s.ap.seen == nil {
		s.ap.seen = map[raft.ServerID]time.Time{}
		s.ap.reports = map[raft.ServerID]report{}
	}
	if !s.ap.wasLeader {
		s.ap.wasLeader, s.ap.leaderSince = true, time.Now()
	}
	id := raft.ServerID(rep.ID)
	if s.ap.left[id] {
		return &rpcResponse{Err: "this node left the cluster", Kind: "left"}
	}
	if resp := s.refuseStaleRestart(id, rep); resp != nil {
		return resp
	}
	prev, had := s.ap.reports[id]
	s.ap.seen[id] = time.Now()
	s.ap.reports[id] = *rep
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return &rpcResponse{Err: err.Error(), Kind: "unavailable"}
	}
	found := false
	for _, srv := range f.Configuration().Servers {
		switch {
		case srv.ID == id:
			found = true
			if string(srv.Address) != rep.Addr {
				// Same incarnation, new address: re-adding updates it.
				var f raft.IndexFuture
				if srv.Suffrage == raft.Voter {
					f = s.raft.AddVoter(id, raft.ServerAddress(rep.Addr), 0, 5*time.Second)
				} else {
					f = s.raft.AddNonvoter(id, raft.ServerAddress(rep.Addr), 0, 5*time.Second)
				}
				if err := f.Error(); err != nil {
					return &rpcResponse{Err: err.Error(), Kind: "unavailable"}
				}
				s.log.Info("node address changed", "id", id, "addr", rep.Addr)
			}
		case string(srv.Address) == rep.Addr || nameOf(srv.ID) == rep.Name:
			s.log.Info("removing an old incarnation of a rejoining node", "old", srv.ID, "new", id)
			if err := s.waitFuture(s.raft.RemoveServer(srv.ID, 0, 5*time.Second)); err != nil {
				return &rpcResponse{Err: err.Error(), Kind: "unavailable"}
			}
		}
	}
	if !found {
		if err := s.waitFuture(s.raft.AddNonvoter(id, raft.ServerAddress(rep.Addr), 0, 5*time.Second)); err != nil {
			return &rpcResponse{Err: err.Error(), Kind: "unavailable"}
		}
		s.log.Info("node joined as nonvoter", "id", id, "addr", rep.Addr, "storage", rep.Storage)
	}
	s.publishMembers()
	if !had || prev.Storage != rep.Storage || !found {
		s.reconcile()
	}
	return &rpcResponse{Commit: s.raft.CommitIndex()}
}

// publishMembers commits the member list if it changed. Caller holds ap.mu.
func (s *Store) publishMembers() {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	cur := s.fsm.membersCopy()
	next := map[string]member{}
	for _, srv := range f.Configuration().Servers {
		m := cur[string(srv.ID)]
		m.Name, m.Addr = nameOf(srv.ID), string(srv.Address)
		if r, ok := s.ap.reports[srv.ID]; ok {
			m.Storage, m.Witness, m.RAM, m.Inc = r.Storage, r.Witness, r.RAM, r.Inc
		}
		if srv.ID == s.id {
			m.Witness = s.cfg.Witness
		}
		next[string(srv.ID)] = m
	}
	changed := len(next) != len(cur)
	for id, m := range next {
		if cur[id] != m {
			changed = true
		}
	}
	if !changed {
		return
	}
	b, err := encodeMembers(next)
	if err != nil {
		return
	}
	if err := s.waitFuture(s.raft.Apply(b, 5*time.Second)); err != nil {
		s.log.Warn("publish member list", "err", err)
	}
}

// reconcile applies the voter policy. Caller holds ap.mu and is the leader.
//
// Voters are the alive nodes with durable storage, at most 3 (5 when 5 or more
// qualify). If no node has durable storage (degraded-ram), the current voters
// stay voters and any gap is filled from the alive nodes, so the cluster keeps
// a quorum in RAM. A leader whose own storage is lost hands leadership to a
// healthy voter before it is demoted.
func (s *Store) reconcile() {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	now := time.Now()
	grace := now.Sub(s.ap.leaderSince) < 3*s.cfg.ReportInterval
	// Slow to call a node dead: a demotion costs a promotion elsewhere, and a
	// loaded machine delays reports (production: 3 s).
	deadAfter := max(5*s.cfg.ReportInterval, 3*s.cfg.HeartbeatTimeout)
	members := s.fsm.membersCopy()
	durable := func(id raft.ServerID) bool {
		if id == s.id {
			return s.storageState() == "durable"
		}
		if r, ok := s.ap.reports[id]; ok {
			return r.Storage == "durable"
		}
		return members[string(id)].Storage == "durable"
	}
	alive := func(id raft.ServerID) bool {
		if id == s.id || grace {
			return true
		}
		t, ok := s.ap.seen[id]
		return ok && now.Sub(t) < deadAfter
	}
	applied := s.raft.AppliedIndex()
	caughtUp := func(srv raft.Server) bool {
		if srv.Suffrage == raft.Voter || srv.ID == s.id {
			return true
		}
		r, ok := s.ap.reports[srv.ID]
		return ok && r.Applied+maxPromoteLag >= applied
	}
	var healthy, living []raft.Server
	voters := 0
	for _, srv := range servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
		if !alive(srv.ID) {
			continue
		}
		living = append(living, srv)
		if durable(srv.ID) {
			healthy = append(healthy, srv)
		}
	}
	pool := healthy
	if len(healthy) == 0 {
		pool = living
	}
	witness := func(id raft.ServerID) bool {
		if id == s.id {
			return s.cfg.Witness
		}
		if r, ok := s.ap.reports[id]; ok {
			return r.Witness
		}
		return members[string(id)].Witness
	}
	// Data nodes before witnesses, then current voters (no churn), then the
	// ID for stability.
	sort.SliceStable(pool, func(i, j int) bool {
		wi, wj := witness(pool[i].ID), witness(pool[j].ID)
		if wi != wj {
			return !wi
		}
		vi, vj := pool[i].Suffrage == raft.Voter, pool[j].Suffrage == raft.Voter
		if vi != vj {
			return vi
		}
		return pool[i].ID < pool[j].ID
	})
	target := 3
	if len(pool) >= 5 {
		target = 5
	}
	want := map[raft.ServerID]bool{}
	for _, srv := range pool {
		if len(want) == target {
			break
		}
		if caughtUp(srv) {
			want[srv.ID] = true
		}
	}
	if len(healthy) == 0 {
		// Degraded: never demote, only fill.
		for _, srv := range servers {
			if srv.Suffrage == raft.Voter {
				want[srv.ID] = true
			}
		}
	}
	for _, srv := range servers {
		if want[srv.ID] && srv.Suffrage != raft.Voter {
			if err := s.waitFuture(s.raft.AddVoter(srv.ID, srv.Address, 0, 5*time.Second)); err != nil {
				s.log.Warn("autopilot: promote failed", "id", srv.ID, "err", err)
				continue
			}
			voters++
			s.log.Info("autopilot: promoted to voter", "id", srv.ID)
		}
	}
	for _, srv := range servers {
		if srv.Suffrage != raft.Voter || want[srv.ID] || voters <= 1 {
			continue
		}
		if srv.ID == s.id {
			// Hand over first; the next leader demotes this node.
			s.stepDownAsync()
			continue
		}
		if err := s.waitFuture(s.raft.DemoteVoter(srv.ID, 0, 5*time.Second)); err != nil {
			s.log.Warn("autopilot: demote failed", "id", srv.ID, "err", err)
			continue
		}
		voters--
		s.log.Info("autopilot: demoted to nonvoter", "id", srv.ID, "durable", durable(srv.ID), "alive", alive(srv.ID))
	}
}

// maxFollowerLag is, on the leader, how far the slowest reporting node is behind.
func (s *Store) maxFollowerLag() uint64 {
	s.ap.mu.Lock()
	defer s.ap.mu.Unlock()
	applied := s.raft.AppliedIndex()
	var lag uint64
	for id, r := range s.ap.reports {
		if id != s.id && r.Applied < applied && applied-r.Applied > lag {
			lag = applied - r.Applied
		}
	}
	return lag
}

// stepDownAsync runs stepDown in the background, once at a time.
func (s *Store) stepDownAsync() {
	if !s.stepping.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		s.stepping.Store(false)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer s.stepping.Store(false)
		s.stepDown()
	}()
}

package replicated

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"xedge/storage"
)

// Membership rules that used to be recovered by callers from log text: the
// RAM-only marker (when a node's raft state must be discarded), typed join
// errors, and leaving the cluster on stop only when it is safe.

// markerName is the file in DataDir that says "discard this node's raft state
// at the next start and rejoin under a fresh raft ID". It is written when the
// node's storage is lost (its device state goes stale while it runs on RAM)
// and when it leaves the cluster; it is removed once the device holds the
// node's state again (re-persist, or the wipe at start). A device also
// carries the rule on its own while it is being rewritten: a re-persist
// stopped midway leaves a layout blocklog reports as partial, which is wiped
// the same way (docs/replication.md, "The RAM-only marker").
const markerName = "raft-ram-only"

var (
	// ErrStateDiscarded: this node's raft state is to be discarded (it ran
	// RAM-only or left the cluster) and it has no Join seeds to rejoin
	// through; starting would bootstrap a second cluster.
	ErrStateDiscarded = errors.New("this node's raft state is to be discarded")
	// ErrWrongKey: the peer completed TCP but not the TLS handshake with the
	// cluster identity — it holds another cluster key, or is not an xedge
	// cluster node.
	ErrWrongKey = errors.New("the peer does not hold this cluster key")
	// ErrUnreachable: no connection to the peer (nothing listens, no route,
	// timeout, connection reset).
	ErrUnreachable = errors.New("the peer cannot be reached")
	// ErrRefused: the peer was reached and authenticated but refused to add
	// this node (it left the cluster, or the peer cannot act on it now).
	ErrRefused = errors.New("the peer refused to add this node")
	// ErrRemoved: the cluster answered that this node's raft ID is no longer
	// a member (it left, or was removed as stale). The node has marked its
	// state to be discarded: a new Store on the same DataDir wipes it and
	// joins under a fresh raft ID at once; waiting longer cannot help.
	ErrRemoved = errors.New("the cluster removed this node")
)

// JoinError is what WaitJoined returns when the node did not join: which seed
// (or leader) address failed last, and why. errors.Is(err, ErrWrongKey /
// ErrUnreachable / ErrRefused) tells the kind; Cause also wraps the network
// error and the context's.
type JoinError struct {
	Node  string   // this node's name
	Seeds []string // the Join seeds
	Addr  string   // the address that failed last ("" if none answered wrongly)
	Cause error
}

func (e *JoinError) Error() string {
	if e.Addr == "" {
		return fmt.Sprintf("replicated: %s not joined (seeds %v): %v", e.Node, e.Seeds, e.Cause)
	}
	return fmt.Sprintf("replicated: %s not joined (seeds %v): %s: %v", e.Node, e.Seeds, e.Addr, e.Cause)
}

func (e *JoinError) Unwrap() error { return e.Cause }

// errPeerKey is returned by the TLS verification of a peer certificate that is
// not the cluster's.
var errPeerKey = errors.New("its certificate is not this cluster's")

// classifyHandshake says whether a failed TLS handshake means another key.
func classifyHandshake(err error) error {
	var alert tls.AlertError
	if errors.Is(err, errPeerKey) || errors.As(err, &alert) || strings.Contains(err.Error(), "tls:") {
		return ErrWrongKey
	}
	return ErrUnreachable
}

// noteJoinFailure remembers the last failure to reach a seed or the leader
// while not joined (for WaitJoined).
func (s *Store) noteJoinFailure(addr string, cause error) {
	s.joinMu.Lock()
	s.joinErr = &JoinError{Node: s.cfg.NodeName, Seeds: s.cfg.Join, Addr: addr, Cause: cause}
	s.joinMu.Unlock()
}

func (s *Store) lastJoinFailure() *JoinError {
	s.joinMu.Lock()
	defer s.joinMu.Unlock()
	return s.joinErr
}

// readMarker reports whether dir holds the marker, and what it says.
func readMarker(dir string) (string, bool) {
	if dir == "" {
		return "", false
	}
	b, err := os.ReadFile(filepath.Join(dir, markerName))
	if err != nil {
		return "", false
	}
	why := strings.TrimSpace(string(b))
	if why == "" {
		why = "marker present"
	}
	return why, true
}

func (s *Store) writeMarker(why string) {
	if s.cfg.DataDir == "" {
		return
	}
	f := filepath.Join(s.cfg.DataDir, markerName)
	if err := os.WriteFile(f, []byte(why+"\n"), 0o600); err != nil {
		s.log.Error("cannot write the RAM-only marker; the next start may trust stale device state", "file", f, "err", err)
	}
}

func removeMarker(dir string) {
	if dir != "" {
		_ = os.Remove(filepath.Join(dir, markerName))
	}
}

// The leave turn: nodes stopped at the same moment (a whole-cluster shutdown)
// must not all leave, each having checked leaveSafe before the others' removal.
// One node at a time holds the turn, a row of the durable table leaveTable
// written with CondAbsent; the turn ends when its holder is no longer a member,
// is this node (a previous run), or is older than leaveTurnMax. A stale turn is
// removed through the per-instance key leaveHeld+value with CondPresent, so two
// nodes removing the same stale turn cannot remove a fresh one (compare-and-swap).
const (
	leaveTable   = "leave_turn"
	leaveKey     = "turn"
	leaveHeld    = "held/"
	leaveTurnMax = time.Minute
)

// endOwnLeaveTurn removes a leave turn this node's previous run took (it left
// and is back under the same name), so that other nodes may leave again.
func (s *Store) endOwnLeaveTurn(ctx context.Context) {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// A write through raft returns once this node applied everything up to it
	// (even when it fails with ErrNoTable): a just-joined node has then caught
	// up with any turn taken before.
	_ = s.Apply(wctx, storage.Delete(leaveTable, "barrier"))
	tab, err := s.Durable(leaveTable)
	if err != nil {
		return // never declared: nobody ever left
	}
	v, ok, _ := tab.Get(leaveKey)
	if holder, _, _ := strings.Cut(string(v), " "); !ok || holder != s.cfg.NodeName {
		return
	}
	err = s.Apply(wctx, storage.Delete(leaveTable, leaveHeld+string(v)).If(storage.CondPresent), storage.Delete(leaveTable, leaveKey))
	if err != nil && !errors.Is(err, storage.ErrConflict) {
		s.log.Warn("cannot end this node's previous leave turn", "err", err)
	}
}

// takeLeaveTurn reports whether this node may leave now, and why not.
func (s *Store) takeLeaveTurn(ctx context.Context) (bool, string) {
	if ok, why := s.LeaveSafe(); !ok {
		return false, why
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.Declare(wctx, storage.TableSpec{Name: leaveTable, Copy: storage.Disc}); err != nil {
		return false, "cannot take the leave turn: " + err.Error()
	}
	tab, err := s.Durable(leaveTable)
	if err != nil {
		return false, "cannot take the leave turn: " + err.Error()
	}
	if v, ok, _ := tab.Get(leaveKey); ok {
		holder, at, _ := strings.Cut(string(v), " ")
		since, perr := time.Parse(time.RFC3339Nano, at)
		_, member := s.replicaStates(false)[holder]
		if member && holder != s.cfg.NodeName && perr == nil && time.Since(since) < leaveTurnMax {
			return false, "node " + holder + " is leaving the cluster (one node leaves at a time)"
		}
		err := s.Apply(wctx, storage.Delete(leaveTable, leaveHeld+string(v)).If(storage.CondPresent), storage.Delete(leaveTable, leaveKey))
		if err != nil && !errors.Is(err, storage.ErrConflict) {
			return false, "cannot clear a stale leave turn: " + err.Error()
		}
	}
	turn := s.cfg.NodeName + " " + time.Now().UTC().Format(time.RFC3339Nano)
	err = s.Apply(wctx, storage.Put(leaveTable, leaveKey, []byte(turn)).If(storage.CondAbsent), storage.Put(leaveTable, leaveHeld+turn, nil))
	if errors.Is(err, storage.ErrConflict) {
		return false, "another node is leaving the cluster (one node leaves at a time)"
	} else if err != nil {
		return false, "cannot take the leave turn: " + err.Error()
	}
	// Membership may have changed while another node held the turn.
	if ok, why := s.LeaveSafe(); !ok {
		_ = s.Apply(wctx, storage.Delete(leaveTable, leaveHeld+turn).If(storage.CondPresent), storage.Delete(leaveTable, leaveKey))
		return false, why
	}
	return true, ""
}

// LeaveSafe reports whether this node may leave the cluster now, and why not:
// only when at least two other voters remain (so a full-cluster shutdown keeps
// the state on two nodes, not one) and every other voter is alive (its
// ephemeral stream is fresh). Leaving while a voter is down would shrink the
// configuration to one that needs the dead voter for a quorum, and this node,
// no longer a member, could not restore it by restarting.
func (s *Store) LeaveSafe() (bool, string) {
	if s.raft == nil {
		return false, "not started"
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return false, "no raft configuration: " + err.Error()
	}
	s.ephMu.Lock()
	alive := make(map[string]bool, len(s.ephSeen))
	for node := range s.ephSeen {
		alive[node] = true
	}
	s.ephMu.Unlock()
	others := 0
	for _, srv := range f.Configuration().Servers {
		if srv.ID == s.id || srv.Suffrage != raft.Voter {
			continue
		}
		node := nameOf(srv.ID)
		if !alive[node] {
			return false, "voter " + node + " is not reachable: leaving now could leave the cluster without a quorum"
		}
		others++
	}
	if others < 2 {
		return false, fmt.Sprintf("only %d other voter(s): leaving would leave the cluster's state on fewer than 2 voters", others)
	}
	return true, ""
}

// leaveOnStop is Stop's first half with Config.LeaveOnStop: leave the cluster
// if it is safe and this node holds the leave turn, else say why not.
func (s *Store) leaveOnStop(ctx context.Context) {
	ok, why := s.takeLeaveTurn(ctx)
	if !ok {
		s.log.Info("stopping without leaving the cluster", "reason", why)
		return
	}
	// Bound the removal so that a cluster without quorum does not eat the
	// whole stop deadline.
	budget := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(d)/2)
	}
	lctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	if err := s.remove(lctx); err != nil {
		s.log.Warn("leave failed; stopping without leaving", "err", err)
		return
	}
	s.log.Info("left the cluster")
}

// remove asks the leader to remove this node (leadership handed over first),
// and marks the node so that its next start rejoins under a fresh raft ID:
// the leader refuses the ID of a node that left, and the old state is of no
// use to a non-member.
func (s *Store) remove(ctx context.Context) error {
	s.leaving.Store(true) // no more reports: they would add this node back
	if s.raft != nil && s.raft.State() == raft.Leader {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			s.log.Warn("leave: leadership transfer failed", "err", err)
		}
	}
	if _, err := s.submit(ctx, &rpcRequest{Op: "leave", ID: string(s.id)}); err != nil {
		s.leaving.Store(false)
		return fmt.Errorf("replicated: leave: %w", err)
	}
	s.writeMarker("left the cluster at " + time.Now().UTC().Format(time.RFC3339) + ": rejoin under a fresh ID")
	return nil
}

// refuseStaleRestart closes most of the gap the RAM-only marker leaves when
// DataDir does not survive a power cycle (the appliance keeps it in RAM): a
// node last reported "ram-only" by one process and now reporting under the
// same raft ID from another process restarted from device state that went
// stale while it ran on RAM (a restart after a wipe has a fresh ID). The
// leader removes that ID and refuses it; the node marks itself so that its
// next start wipes and rejoins under a fresh ID. Caller holds ap.mu and is
// the leader.
func (s *Store) refuseStaleRestart(id raft.ServerID, rep *report) *rpcResponse {
	if rep.Inc == 0 || id == s.id {
		return nil
	}
	storage, inc := "", uint64(0)
	if prev, ok := s.ap.reports[id]; ok {
		storage, inc = prev.Storage, prev.Inc
	} else if m, ok := s.fsm.membersCopy()[string(id)]; ok {
		storage, inc = m.Storage, m.Inc // a leader elected since: the published list
	}
	if storage != "ram-only" || inc == 0 || inc == rep.Inc || (rep.Storage != "durable") {
		return nil
	}
	if s.ap.left == nil {
		s.ap.left = map[raft.ServerID]bool{}
	}
	s.ap.left[id] = true
	s.log.Warn("refusing a node that restarted from stale storage under its old raft ID (it ran RAM-only; its marker is gone): removing it",
		"id", id, "addr", rep.Addr)
	if err := s.raft.RemoveServer(id, 0, 5*time.Second).Error(); err != nil {
		s.log.Warn("cannot remove the stale node", "id", id, "err", err)
	}
	s.publishMembers()
	return &rpcResponse{Err: "this node restarted from storage that went stale while it ran RAM-only; " +
		"it was removed and must rejoin under a fresh ID (restart it)", Kind: "stale"}
}

// removedByCluster handles the leader's answer that this node's raft ID is no
// longer a member: it marks the node (its next start wipes the device and
// rejoins under a fresh ID) and says so once, in the log and in Status.
func (s *Store) removedByCluster(why string) {
	if s.removed.Load() { // only reportLoop calls this: no race between Load and Store
		return
	}
	s.log.Error("the cluster removed this node; it must rejoin under a fresh ID", "reason", why)
	// The marker first: WaitJoined returns ErrRemoved once removed is set,
	// and its caller then restarts the Store, which must find the marker.
	s.writeMarker("removed by the cluster at " + time.Now().UTC().Format(time.RFC3339) + ": " + why)
	s.removed.Store(true)
}

// MarkRejoin marks the node whose raft data directory is dataDir so that its
// next start discards its raft state (and device) and joins its Join seeds
// under a fresh raft ID (`xmppctl cluster join`).
func MarkRejoin(dataDir, why string) error {
	if dataDir == "" {
		return errors.New("replicated: no data directory")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("replicated: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, markerName), []byte(why+"\n"), 0o600); err != nil {
		return fmt.Errorf("replicated: %w", err)
	}
	return nil
}

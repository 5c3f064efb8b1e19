// Package replicated is the raft-replicated implementation of storage.Store:
// durable tables replicated with hashicorp/raft across the cluster's nodes,
// writes forwarded to the leader, reads local, 3 or 5 voters chosen among the
// nodes whose storage is healthy (the rest are non-voters that replicate and
// serve reads), and the storage-loss rules of DESIGN.md decision 5: RAM-only on
// loss (leader steps down, node demoted), background re-persist into a new
// generation when storage returns, fresh raft ID after a RAM-only run, and a
// visible degraded-ram mode when no node has storage.
//
// It owns raft's stores (RAM copy + write-through to a storage.BlockDevice), the
// authenticated inter-node transport (TLS 1.3 with an identity derived from the
// cluster key), write forwarding, membership by join seeds, and the small
// autopilot that picks voters. It must not import xmppd, iscsi or init: a disk
// or LUN is only a storage.BlockDevice.
package replicated

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"xedge/internal/backoff"
	"xedge/internal/rounds"
	"xedge/storage"
	"xedge/storage/ephemeral"
	"xedge/storage/tables"
)

// Config configures a replicated Store.
type Config struct {
	// NodeName names this node (stable across restarts; the raft ID adds an
	// incarnation suffix).
	NodeName string
	// ClusterAddr is host:port to listen on for raft and RPC (port 0 picks one).
	ClusterAddr string
	// AdvertiseAddr is the address peers dial; default: the listener's address.
	AdvertiseAddr string
	// Join lists seed cluster addresses. Empty: bootstrap a new cluster if this
	// node has no raft state yet.
	Join []string
	// DataDir holds the local marker that says "this node ran RAM-only", so a
	// restart wipes stale device state and rejoins under a fresh ID. Empty: no
	// marker; required when Device is set.
	DataDir string
	// Device is the block device for raft's log and snapshots; nil runs RAM-only.
	Device storage.BlockDevice
	// ClusterKey authenticates and encrypts inter-node traffic (>= 16 bytes).
	ClusterKey []byte
	// Witness marks a node that exists to vote (DESIGN decision 4: two-node
	// sites; an xmppd serving no XMPP, e.g. on the storage or PXE host). It
	// replicates like any node but autopilot makes it a voter only while there
	// are fewer than 3 data nodes with working storage.
	Witness bool
	// LeaveOnStop makes Stop leave the cluster first when that is safe
	// (LeaveSafe: at least two other voters, all alive) and no other node is
	// leaving at the same moment (one node leaves at a time); the next start
	// then rejoins under a fresh raft ID. Otherwise Stop logs why it stays a
	// member.
	LeaveOnStop bool
	// ReadOnlyOnLoss refuses writes (storage.ErrUnavailable) while no node has
	// working storage, instead of committing them to RAM (degraded-ram).
	ReadOnlyOnLoss bool
	// Logger receives the store's and raft's logs; default slog.Default().
	Logger *slog.Logger

	// Tuning; zero values take production defaults.
	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms
	CommitTimeout      time.Duration // default 5ms
	ReportInterval     time.Duration // membership/health report period, default 250ms
	SnapshotThreshold  uint64        // default 8192
	TrailingLogs       uint64        // default 10240
	// EphemeralTimeout is how long a node may stay silent before its
	// ephemeral rows are dropped (default 4 × ReportInterval).
	EphemeralTimeout time.Duration
	// StorageProbe is how often a lost device is probed at first (backoff to 2s).
	StorageProbe time.Duration // default 200ms
}

// Store is a storage.Store replicated with raft.
type Store struct {
	cfg  Config
	log  *slog.Logger
	id   raft.ServerID
	addr string
	inc  uint64

	fsm   *fsm
	st    *stores
	mux   *mux
	rpc   *rpcClient
	trans *raft.NetworkTransport
	raft  *raft.Raft

	roomLogAt atomic.Int64          // last "writes wait for compaction" log (unix ns)
	barriers  *rounds.Group[uint64] // ReadBarrier's rounds (barrierRound)

	hasState bool
	cancel   context.CancelFunc
	stopCh   chan struct{} // closed by Stop
	raftDown chan struct{} // closed by Stop once raft has shut down (waitFuture)
	wg       sync.WaitGroup
	kickRep  chan struct{}
	snapKick chan struct{}

	joinMu  sync.Mutex
	joinErr *JoinError
	ownTurn atomic.Bool // endOwnLeaveTurn done
	removed atomic.Bool // the leader refused this raft ID (stale restart, or left)
	// admitted: the leader accepted a report from this Store, so this raft ID
	// is a member and not one that left. Knowing a leader and finding itself
	// in its own configuration is not enough: a node that left and restarts
	// from its device under the old ID still lists itself in its log, and the
	// leader's replication to it can outlive the removal and reach the new
	// process at the same address (it then knows a leader).
	admitted     atomic.Bool
	mu           sync.Mutex
	leaderCommit uint64
	started      bool
	stopped      bool

	eph      *ephemeral.Set
	ephOut   ephStream
	ephMu    sync.Mutex
	ephSeen  map[string]ephSender
	onDrop   EphemeralDrop
	ap       autopilotState
	stepping atomic.Bool
	leaving  atomic.Bool
	// holdResync keeps ramLoop from acting (tests: an unsynced leader).
	holdResync atomic.Bool
	// dropApplyReplies > 0 makes the next peer "apply" RPCs lose their
	// reply after the batch was committed (tests).
	dropApplyReplies atomic.Int32
	// leaderAddr is the leader's cluster address as last seen by reportLoop
	// (read on raft's FSM goroutine, which must not call into raft).
	leaderAddr atomic.Value
}

var _ storage.Store = (*Store)(nil)

// New checks cfg and prepares a Store. It does no I/O: the device is opened,
// the RAM-only marker read and the cluster address listened on by Start, so a
// Store can be built before the data directory is locked or the device is
// reachable.
func New(cfg Config) (*Store, error) {
	if cfg.NodeName == "" || strings.Contains(cfg.NodeName, "#") {
		return nil, fmt.Errorf("replicated: invalid node name %q", cfg.NodeName)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Device != nil && cfg.DataDir == "" {
		return nil, errors.New("replicated: a storage device needs DataDir (the local RAM-only marker lives there)")
	}
	setDefault(&cfg.HeartbeatTimeout, time.Second)
	setDefault(&cfg.ElectionTimeout, time.Second)
	setDefault(&cfg.LeaderLeaseTimeout, 500*time.Millisecond)
	setDefault(&cfg.CommitTimeout, 5*time.Millisecond)
	setDefault(&cfg.ReportInterval, 250*time.Millisecond)
	setDefault(&cfg.StorageProbe, 200*time.Millisecond)
	setDefault(&cfg.EphemeralTimeout, 4*cfg.ReportInterval)
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 8192
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = 10240
	}
	log := cfg.Logger.With("component", "replicated", "node", cfg.NodeName)
	tc, err := clusterTLS(cfg.ClusterKey)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, log: log, fsm: newFSM(), kickRep: make(chan struct{}, 1), stopCh: make(chan struct{}), raftDown: make(chan struct{}),
		snapKick: make(chan struct{}, 1), inc: uint64(time.Now().UnixNano())}
	s.barriers = rounds.New(s.barrierRound)
	s.eph = ephemeral.New(cfg.NodeName, s.inc)
	s.eph.OnLocalChange(s.ephLocalChange)
	s.ephOut.peers = map[raft.ServerID]*ephPeer{}
	s.ephOut.kick = make(chan struct{}, 1)
	s.ephSeen = map[string]ephSender{}
	s.fsm.log = log
	s.fsm.fetch, s.fsm.snapshotNeeded = s.fetchRAM, s.requestSnapshot
	s.mux = newMux(tc, log)
	s.addr = cfg.AdvertiseAddr
	if s.addr == "" {
		s.addr = cfg.ClusterAddr
	}
	s.rpc = &rpcClient{tls: tc, idle: map[string][]*rpcConn{}}
	s.mux.rpc = func(c net.Conn) { serveRPC(c, s.handlePeerRPC) }
	return s, nil
}

// open does Start's I/O before raft starts: the RAM-only marker, the cluster
// listener, the device (wiped if the marker says so), the raft ID.
func (s *Store) open() error {
	cfg := s.cfg
	wipe := false
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("replicated: data dir: %w", err)
		}
		if why, ok := readMarker(cfg.DataDir); ok {
			if len(cfg.Join) == 0 {
				return fmt.Errorf("replicated: %w (%s: %s) and it has no Join seeds: it would bootstrap a new cluster of its own; "+
					"give the cluster's addresses as Join seeds to rejoin, or remove %s to really start a new cluster",
					ErrStateDiscarded, filepath.Join(cfg.DataDir, markerName), why, cfg.DataDir)
			}
			wipe = cfg.Device != nil
			if !wipe {
				removeMarker(cfg.DataDir) // no device: the state is fresh anyway
			}
			s.log.Warn("this node's raft state is to be discarded: wiping it and rejoining under a fresh ID", "why", why)
		}
	}
	// Listen before touching the device: an address in use fails the start
	// with the device untouched.
	if err := s.mux.listen(cfg.ClusterAddr); err != nil {
		return err
	}
	if cfg.AdvertiseAddr == "" {
		s.addr = s.mux.ln.Addr().String()
	}
	st, err := openStores(cfg.Device, wipe, len(cfg.Join) > 0, s.log)
	if err != nil {
		return err
	}
	st.probe = cfg.StorageProbe
	if (wipe || st.wiped()) && st.durable() {
		removeMarker(cfg.DataDir)
	}
	hasState, err := raft.HasExistingState(st, st, st)
	if err != nil {
		return fmt.Errorf("replicated: inspect raft state: %w", err)
	}
	if id, err := st.Get([]byte(keyNodeID)); err == nil && hasState {
		s.id = raft.ServerID(id)
	} else {
		hasState = false
		s.id = raft.ServerID(cfg.NodeName + "#" + randomHex(4))
		_ = st.Set([]byte(keyNodeID), []byte(s.id))
	}
	s.hasState = hasState
	// Sync markers name the raft ID and this process's incarnation: markers
	// an earlier run of this node proposed are not fetched for on replay.
	s.fsm.self = fmt.Sprintf("%s\x00%d", s.id, s.inc)
	if cfg.Device == nil {
		s.log.Info("no storage device: this node keeps raft state in RAM only")
	}
	st.onChange = s.storageChanged
	st.onFull = s.requestSnapshot
	s.st = st
	return nil
}

const keyNodeID = "xedge/node-id"

func setDefault(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// nameOf returns the node name of a raft server ID ("name#incarnation").
func nameOf(id raft.ServerID) string {
	s := string(id)
	if i := strings.LastIndexByte(s, '#'); i >= 0 {
		return s[:i]
	}
	return s
}

// ID is this node's raft server ID (node name + incarnation).
func (s *Store) ID() string { return string(s.id) }

// Addr is the cluster address peers reach this node on.
func (s *Store) Addr() string { return s.addr }

// Start starts raft and the background loops; a node without state either
// bootstraps (no Join) or asks the seeds to add it.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("replicated: already started")
	}
	s.started = true
	s.mu.Unlock()
	if err := s.open(); err != nil {
		s.mux.close()
		return err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = s.id
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.CommitTimeout
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.TrailingLogs = s.cfg.TrailingLogs
	if capacity := s.st.logCapacity(); capacity > 0 && s.cfg.Device != nil {
		// The log retained between snapshots must fit half the device's log
		// region even as single-entry frames of one block each (raft writes
		// one frame per batch); a small device gets smaller figures instead
		// of running its region full (which would latch storage loss).
		budget := uint64(capacity / int64(max(512, s.cfg.Device.BlockSize())) / 2)
		if rc.TrailingLogs+rc.SnapshotThreshold > budget && budget >= 64 {
			rc.TrailingLogs, rc.SnapshotThreshold = budget/2, budget/4
			s.log.Info("small storage device: raft keeps a shorter log", "log_region_bytes", capacity,
				"trailing_logs", rc.TrailingLogs, "snapshot_threshold", rc.SnapshotThreshold)
		}
	}
	rc.Logger = newHCLog(s.log.With("component", "raft"))
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &streamLayer{m: s.mux},
		MaxPool: 3,
		// No pipelining: it barely helps with batching (raft#541), and its
		// send path can block forever when the decode side stops after a
		// step-down, which hangs Shutdown (seen under storage-loss tests).
		MaxRPCsInFlight: 1,
		Timeout:         5 * time.Second,
		Logger:          rc.Logger,
	})
	r, err := raft.NewRaft(rc, s.fsm, s.st, s.st, s.st, s.trans)
	if err != nil {
		_ = s.trans.Close()
		s.mux.close()
		return fmt.Errorf("replicated: start raft: %w", err)
	}
	s.raft = r
	// Serve peers only now: an RPC handled before s.raft was set dereferenced
	// nil (seen when a whole cluster restarted at once). Connections that
	// arrive earlier wait in the listener's backlog.
	s.mux.serve()
	if !s.hasState && len(s.cfg.Join) == 0 {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{
			{Suffrage: raft.Voter, ID: s.id, Address: raft.ServerAddress(s.addr)}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("replicated: bootstrap: %w", err)
		}
		s.log.Info("bootstrapped a new cluster", "id", s.id, "addr", s.addr)
		if err == nil {
			electAtOnce(r, s.cfg.LeaderLeaseTimeout, s.log)
		}
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(6)
	go func() { defer s.wg.Done(); s.ramLoop(lctx) }()
	go func() { defer s.wg.Done(); s.snapshotLoop(lctx) }()
	go func() { defer s.wg.Done(); s.ephLoop(lctx) }()
	go func() { defer s.wg.Done(); s.st.run(lctx) }()
	go func() { defer s.wg.Done(); s.reportLoop(lctx) }()
	go func() { defer s.wg.Done(); s.autopilotLoop(lctx) }()
	if !s.st.durable() {
		s.storageChanged(false)
	}
	return nil
}

// Stop shuts raft and the transport down; with Config.LeaveOnStop it first
// leaves the cluster when that is safe (leaveOnStop). It is safe to call more
// than once.
func (s *Store) Stop(ctx context.Context) error {
	s.mu.Lock()
	// A node the cluster removed has nothing to leave.
	leave := s.cfg.LeaveOnStop && s.started && !s.stopped && s.raft != nil && !s.removed.Load()
	s.mu.Unlock()
	if leave {
		s.leaveOnStop(ctx)
	}
	return s.stop(ctx)
}

func (s *Store) stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	started := s.started
	close(s.stopCh)
	s.mu.Unlock()
	if started && s.raft != nil && s.raft.State() == raft.Leader {
		// Hand leadership over so the others need not wait an election
		// timeout (bounded: at most 2 s or the caller's deadline).
		done := make(chan error, 1)
		go func() { done <- s.raft.LeadershipTransfer().Error() }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	var err error
	if started && s.raft != nil {
		done := make(chan error, 1)
		go func() { done <- s.raft.Shutdown().Error() }()
		select {
		case err = <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	close(s.raftDown)
	s.rpc.close()
	if s.trans != nil {
		_ = s.trans.Close()
	}
	s.mux.close()
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("replicated: stop: %w", err)
	}
	return nil
}

// Leave removes this node from the cluster (leadership is handed over first),
// marks it so that its next start rejoins under a fresh raft ID, then stops
// it. A failed removal is an error wrapping "replicated: leave"; the store is
// stopped either way.
func (s *Store) Leave(ctx context.Context) error {
	return errors.Join(s.remove(ctx), s.stop(ctx))
}

// storageChanged is called by the stores (outside their lock) when the device
// is lost or back.
func (s *Store) storageChanged(durable bool) {
	if durable {
		s.log.Info("storage back: durable again; asking for promotion", "generation", s.st.generation())
		removeMarker(s.cfg.DataDir)
		s.kickReport()
		return
	}
	if s.cfg.Device != nil {
		// The device state goes stale from now on: a restart must not trust it.
		s.writeMarker("storage lost at " + time.Now().UTC().Format(time.RFC3339) + ": this node ran RAM-only; wipe and rejoin under a fresh ID")
	}
	if s.raft == nil {
		return
	}
	if s.cfg.Device != nil {
		s.log.Warn("storage lost: node is RAM-only; stepping down if leader and asking to be demoted")
	}
	if s.raft.State() == raft.Leader {
		// Asynchronously: this may run on raft's own goroutine (inside StoreLogs).
		s.stepDownAsync()
	}
	s.kickReport()
}

// stepDown hands leadership to a voter with healthy storage, if there is one.
func (s *Store) stepDown() {
	// Give the other nodes a moment to report first: when one storage box
	// serving every node fails, they all lose storage at once, and handing
	// leadership to a node whose storage is gone too only bounces it around
	// (and every transfer is exposed to hashicorp/raft#696).
	select {
	case <-time.After(2 * s.cfg.ReportInterval):
	case <-s.stopCh:
		return
	}
	if s.raft.State() != raft.Leader || s.storageState() == "durable" {
		return
	}
	cfgF := s.raft.GetConfiguration()
	if cfgF.Error() != nil {
		return
	}
	var best raft.Server
	var bestApplied uint64
	found := false
	s.ap.mu.Lock()
	for _, srv := range cfgF.Configuration().Servers {
		if srv.ID == s.id || srv.Suffrage != raft.Voter {
			continue
		}
		r, ok := s.ap.reports[srv.ID]
		fresh := ok && time.Since(s.ap.seen[srv.ID]) < 3*s.cfg.ReportInterval
		if fresh && r.Storage == "durable" && (!found || r.Applied > bestApplied) {
			best, bestApplied, found = srv, r.Applied, true
		}
	}
	s.ap.mu.Unlock()
	if !found {
		s.log.Warn("storage lost on the leader and no voter with working storage reported: staying leader (degraded-ram if no node has storage)")
		return
	}
	start := time.Now()
	if err := s.raft.LeadershipTransferToServer(best.ID, best.Address).Error(); err != nil {
		s.log.Warn("leadership transfer failed", "to", best.ID, "err", err)
		return
	}
	s.log.Info("stepped down after storage loss", "new_leader", best.ID, "took", time.Since(start).Round(time.Millisecond))
}

func (s *Store) kickReport() {
	select {
	case s.kickRep <- struct{}{}:
	default:
	}
}

// storageState is this node's storage health as reported to the leader.
func (s *Store) storageState() string {
	if s.cfg.Device != nil && s.st != nil && s.st.durable() {
		return "durable"
	}
	return "ram-only"
}

// reportLoop tells the leader (or, before joining, the seeds) who this node is
// and how its storage is, every ReportInterval and on every change.
func (s *Store) reportLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReportInterval)
	defer t.Stop()
	seed := 0
	var lastJoinWarn time.Time
	for {
		rep := &report{ID: string(s.id), Name: s.cfg.NodeName, Addr: s.addr, Storage: s.storageState(), Inc: s.inc,
			Applied: s.fsm.appliedIndex(), Witness: s.cfg.Witness, RAM: s.ramState()}
		var resp *rpcResponse
		var err error
		to := ""
		if s.leaving.Load() {
			// Leave in progress: stay quiet.
		} else if s.raft.State() == raft.Leader {
			s.leaderAddr.Store(s.addr)
			resp = s.handleReport(rep)
		} else if addr, _ := s.raft.LeaderWithID(); addr != "" {
			s.leaderAddr.Store(string(addr))
			to = string(addr)
			resp, err = s.callTimeout(ctx, to, &rpcRequest{Op: "report", Report: rep})
		} else if len(s.cfg.Join) > 0 {
			to = s.cfg.Join[seed%len(s.cfg.Join)]
			seed++
			if to != s.addr {
				resp, err = s.callTimeout(ctx, to, &rpcRequest{Op: "report", Report: rep})
			}
		}
		if err != nil && ctx.Err() == nil {
			s.log.Debug("report to leader failed", "err", err)
			if !s.admitted.Load() {
				s.noteJoinFailure(to, err)
				if time.Since(lastJoinWarn) > 10*time.Second {
					lastJoinWarn = time.Now()
					s.log.Warn("join: cannot reach seed (retrying)", "err", err)
				}
			}
		}
		removal := resp != nil && (resp.Kind == "stale" || resp.Kind == "left")
		if resp != nil && resp.Err != "" && (!s.admitted.Load() || removal) {
			s.noteJoinFailure(to, fmt.Errorf("%w: %s", ErrRefused, resp.Err))
		}
		if removal && !s.leaving.Load() {
			s.removedByCluster(resp.Err)
		}
		if resp != nil && resp.Err == "" {
			s.admitted.Store(true)
			s.mu.Lock()
			s.leaderCommit = resp.Commit
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kickRep:
		}
	}
}

// WaitJoined blocks until this node is part of a cluster with a leader (it
// bootstrapped, or a seed added it) and the leader accepted its report, or
// ctx ends. xmppd calls it after Start and before declaring tables. On
// failure it returns a *JoinError naming the seeds, the address that failed
// last and why (errors.Is: ErrWrongKey, ErrUnreachable, ErrRefused; and the
// context's error). A node the cluster
// answers it removed (it left the cluster) fails at once with ErrRemoved (and
// ErrRefused): its state is marked to be discarded, so the caller stops this
// Store and starts a new one, which wipes it and joins under a fresh ID.
// Once joined, it ends a leave turn this node's previous run still holds.
func (s *Store) WaitJoined(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if s.removed.Load() {
			je := &JoinError{Node: s.cfg.NodeName, Seeds: s.cfg.Join, Cause: ErrRemoved}
			if last := s.lastJoinFailure(); last != nil {
				je.Addr, je.Cause = last.Addr, fmt.Errorf("%w: %w", ErrRemoved, last.Cause)
			}
			return je
		}
		if s.joined() {
			if !s.admitted.Load() {
				// Ask the leader now rather than at the next ReportInterval.
				s.kickReport()
			} else if f := s.raft.GetConfiguration(); f.Error() == nil {
				for _, srv := range f.Configuration().Servers {
					if srv.ID == s.id {
						if !s.ownTurn.Swap(true) {
							s.endOwnLeaveTurn(ctx)
						}
						return nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			if je := s.lastJoinFailure(); je != nil {
				je.Cause = fmt.Errorf("%w (%w)", je.Cause, ctx.Err())
				return je
			}
			return &JoinError{Node: s.cfg.NodeName, Seeds: s.cfg.Join, Cause: ctx.Err()}
		case <-t.C:
		}
	}
}

// joined reports whether this node knows a leader (is part of a cluster).
func (s *Store) joined() bool {
	addr, _ := s.raft.LeaderWithID()
	return addr != ""
}

func (s *Store) callTimeout(ctx context.Context, addr string, req *rpcRequest) (*rpcResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.rpc.call(ctx, addr, req)
}

// handlePeerRPC serves a request that came over the network. A nil answer
// closes the connection without replying.
func (s *Store) handlePeerRPC(req *rpcRequest) *rpcResponse {
	resp := s.handleRPC(req)
	if req.Op == "apply" && s.dropApplyReplies.Load() > 0 && s.dropApplyReplies.Add(-1) >= 0 {
		return nil // test: the reply of an applied batch is lost
	}
	return resp
}

// handleRPC serves a request from a peer, forwarding to the leader if needed.
func (s *Store) handleRPC(req *rpcRequest) *rpcResponse {
	if req.Op == "eph" {
		return s.handleEph(req.Eph)
	}
	if s.raft == nil {
		return &rpcResponse{Err: "raft not running on this node", Kind: "unavailable"}
	}
	if req.Op == "ramimage" { // answered by this node, never forwarded
		return s.handleRAMImage(req)
	}
	if s.raft.State() != raft.Leader {
		if req.Hops >= 3 {
			return &rpcResponse{Err: "too many forwarding hops", Kind: "unavailable"}
		}
		addr, _ := s.raft.LeaderWithID()
		if addr == "" {
			return &rpcResponse{Err: "no leader", Kind: "unavailable"}
		}
		fwd := *req
		fwd.Hops++
		resp, err := s.callTimeout(context.Background(), string(addr), &fwd)
		if err != nil {
			return &rpcResponse{Err: err.Error(), Kind: "unavailable"}
		}
		return resp
	}
	switch req.Op {
	case "apply":
		return s.leaderApply(req.Cmd, req.RAM, 10*time.Second)
	case "barrier":
		// The leader's last log index covers every committed write (and
		// perhaps some not yet committed, which the caller then waits for
		// too); VerifyLeader makes sure no newer leader committed more.
		if err := s.raft.VerifyLeader().Error(); err != nil {
			return &rpcResponse{Err: err.Error(), Kind: "retry"}
		}
		return &rpcResponse{Index: s.raft.LastIndex()}
	case "report":
		if req.Report == nil {
			return &rpcResponse{Err: "empty report"}
		}
		return s.handleReport(req.Report)
	case "leave":
		s.ap.mu.Lock()
		if s.ap.left == nil {
			s.ap.left = map[raft.ServerID]bool{}
		}
		s.ap.left[raft.ServerID(req.ID)] = true
		s.ap.mu.Unlock()
		f := s.raft.RemoveServer(raft.ServerID(req.ID), 0, 10*time.Second)
		if err := f.Error(); err != nil {
			return &rpcResponse{Err: err.Error(), Kind: "unavailable"}
		}
		s.log.Info("node left the cluster", "id", req.ID)
		return &rpcResponse{}
	}
	return &rpcResponse{Err: fmt.Sprintf("unknown rpc %q", req.Op)}
}

// waitFuture returns f's error, or raft.ErrRaftShutdown once raft has shut
// down: hashicorp/raft abandons, when it shuts down, the futures of entries
// still on their way to the FSM (its logFuture has no shutdown channel:
// hashicorp/raft#498, open), and a
// loop that Stop waits for must not wait on one forever (a CI run hung in Stop
// for 20 minutes on publishMembers' Apply). The goroutine waiting on an
// abandoned future stays blocked until the process exits.
func (s *Store) waitFuture(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-s.raftDown:
		select {
		case err := <-done:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

// leaderApply commits cmd through raft on the leader.
func (s *Store) leaderApply(cmd []byte, ram bool, timeout time.Duration) *rpcResponse {
	sync := len(cmd) > 0 && cmd[0] == entryRAMSync // writes no table: allowed read-only
	if s.cfg.ReadOnlyOnLoss && s.degraded() && !sync {
		return &rpcResponse{Err: "read-only: no node has working storage", Kind: "unavailable"}
	}
	if ram && !s.fsm.valid() {
		// The outcome of a RAM batch must be decided by a leader whose RAM
		// tables are valid: wait (the caller retries) for its resync or epoch.
		return &rpcResponse{Err: "the leader's RAM tables are being resynced", Kind: "retry"}
	}
	if waited := s.st.waitLogRoom(timeout); waited > 0 {
		s.logRoomWait(waited)
	}
	f := s.raft.Apply(cmd, timeout)
	if err := s.waitFuture(f); err != nil { // a write racing Stop gets ErrRaftShutdown (unavailable), not a hang
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return &rpcResponse{Err: err.Error(), Kind: "retry"} // not in the log: safe to resend
		case errors.Is(err, raft.ErrLeadershipLost) && f.Index() > 0:
			return s.resolveLost(f.Index(), cmd, err)
		}
		return &rpcResponse{Err: err.Error(), Kind: "unavailable"}
	}
	resp := &rpcResponse{Index: f.Index(), Commit: s.raft.CommitIndex()}
	if r, ok := f.Response().(applyResult); ok && r.err != nil {
		resp.Err = r.err.Error()
		resp.Kind = errKind(r.err)
	}
	return resp
}

// logRoomWait says, at most every 10 s, that writes waited for the log
// region to be compacted (waitLogRoom).
func (s *Store) logRoomWait(waited time.Duration) {
	now := time.Now().UnixNano()
	last := s.roomLogAt.Load()
	if now-last < int64(10*time.Second) || !s.roomLogAt.CompareAndSwap(last, now) {
		return
	}
	used, capacity := s.st.bl.LogUsage()
	s.log.Warn("storage log region over 3/4 full: writes wait for a snapshot to compact it",
		"waited", waited.Round(time.Millisecond), "log_used_bytes", used, "log_region_bytes", capacity)
}

// resolveLost finds out whether an entry this node appended as leader (at
// index) was committed after all, once the next leader's log reaches it: if
// the entry applied at index is ours, its outcome is returned; otherwise it was
// dropped and the caller may safely resend it.
func (s *Store) resolveLost(index uint64, cmd []byte, cause error) *rpcResponse {
	done := make(chan struct{})
	timer := time.AfterFunc(5*time.Second, func() { close(done) })
	defer timer.Stop()
	if !s.fsm.waitApplied(index, done) {
		return &rpcResponse{Err: cause.Error(), Kind: "unavailable"}
	}
	r, ok := s.fsm.result(index)
	if !ok || r.sum != checksum(cmd) {
		return &rpcResponse{Err: cause.Error(), Kind: "retry"}
	}
	resp := &rpcResponse{Index: index}
	if r.err != nil {
		resp.Err = r.err.Error()
		resp.Kind = errKind(r.err)
	}
	return resp
}

func errKind(err error) string {
	switch {
	case errors.Is(err, storage.ErrConflict):
		return "conflict"
	case errors.Is(err, storage.ErrNoTable):
		return "notable"
	case errors.Is(err, tables.ErrCopyMismatch):
		return "mismatch"
	case errors.Is(err, tables.ErrRAMCondition):
		return "ramcond"
	case errors.Is(err, errRAMUnsynced):
		return "unavailable"
	}
	return ""
}

// submit sends a request to the leader (locally if this node leads), retrying
// while there is no leader or it cannot be reached, until ctx ends or ~5s.
// leaderAttempt bounds one forwarded write's wait for the leader. A leader that
// died without closing its connections (power loss, a cut link, SIGKILL behind a
// dropped link) otherwise holds the writer for TCP's retransmission timeout —
// 70 s were seen in the VIP failover benchmark, with a user's offline-storage
// lock held meanwhile. Retrying is safe: request IDs make the FSM apply a batch
// once, and a new leader is elected within about one election timeout.
const leaderAttempt = time.Second

func (s *Store) submit(ctx context.Context, req *rpcRequest) (*rpcResponse, error) {
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok {
		deadline = d
	}
	bo := backoff.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond}
	for attempt := 0; ; attempt++ {
		var resp *rpcResponse
		var err error
		if s.isStopped() {
			return nil, fmt.Errorf("%w: store stopped", storage.ErrUnavailable)
		}
		if s.raft.State() == raft.Leader {
			resp = s.handleRPC(req)
		} else if addr, _ := s.raft.LeaderWithID(); addr != "" {
			resp, err = s.rpc.callWithin(ctx, string(addr), req, min(leaderAttempt, time.Until(deadline)))
		} else {
			err = errors.New("no leader")
		}
		retry := err != nil || resp.Kind == "retry" || (resp.Kind == "unavailable" && resp.Err == "no leader")
		if !retry {
			return resp, nil
		}
		if time.Now().Add(bo.Peek()).After(deadline) || attempt > 1000 {
			if err == nil {
				err = errors.New(resp.Err)
			}
			return nil, fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
		}
		if err := bo.Wait(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
		}
	}
}

func (s *Store) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped || !s.started
}

func respError(resp *rpcResponse) error {
	if resp.Err == "" {
		return nil
	}
	switch resp.Kind {
	case "conflict":
		return storage.ErrConflict
	case "notable":
		return fmt.Errorf("%w: %s", storage.ErrNoTable, resp.Err)
	case "mismatch":
		return fmt.Errorf("%w: %w: %s", storage.ErrUnavailable, tables.ErrCopyMismatch, resp.Err)
	case "ramcond":
		return fmt.Errorf("replicated: %w: %s", tables.ErrRAMCondition, resp.Err)
	case "unavailable", "retry":
		return fmt.Errorf("%w: %s", storage.ErrUnavailable, resp.Err)
	}
	return fmt.Errorf("replicated: %s", resp.Err)
}

// commit submits cmd and waits until this node's FSM has applied it, so a
// read after the call sees the write.
func (s *Store) commit(ctx context.Context, req *rpcRequest) (uint64, error) {
	resp, err := s.submit(ctx, req)
	if err != nil {
		return 0, err
	}
	if resp.Index > 0 && !s.fsm.waitApplied(resp.Index, ctx.Done()) {
		return 0, fmt.Errorf("%w: committed at %d but not yet applied here: %w", storage.ErrUnavailable, resp.Index, ctx.Err())
	}
	return resp.Index, respError(resp)
}

// Declare implements storage.Store.
func (s *Store) Declare(ctx context.Context, spec storage.TableSpec) error {
	if spec.Name == "" {
		return errors.New("replicated: empty table name")
	}
	if !s.fsm.state.NeedsDeclare(spec) {
		return nil
	}
	old, had := s.fsm.state.Spec(spec.Name)
	index, err := s.commit(ctx, &rpcRequest{Op: "apply", Cmd: encodeTables(tables.DeclareCommand(spec))})
	if err != nil || !had || old.Copy != storage.RAM || spec.Copy != storage.Disc || s.cfg.Device == nil {
		return err
	}
	// RAM -> disc: the rows reach this node's device before Declare returns
	// (every other node snapshots as it applies the change).
	return s.snapshotCovering(ctx, index)
}

// Durable implements storage.Store.
func (s *Store) Durable(name string) (storage.Table, error) {
	return s.fsm.state.Table(name)
}

// Apply implements storage.Store.
func (s *Store) Apply(ctx context.Context, ops ...storage.Op) error {
	if len(ops) == 0 {
		return nil
	}
	// Tables are checked in the FSM, not here: a lagging node may not have
	// applied a Declare that the leader already has. Ops are marked with the
	// copy type this node knows; if a Declare changed it meanwhile, the FSM
	// refuses the batch everywhere and it is marked again once (this node has
	// then applied the Declare).
	var err error
	for range 2 {
		cmd := s.markedCommand(ctx, ops)
		if err := tables.CheckMarks(cmd.Ops, cmd.Marks); err != nil {
			return fmt.Errorf("replicated: %w", err)
		}
		// One request ID for every resend of this proposal: a resend after
		// a lost reply gets the first outcome instead of applying twice.
		_, err = s.commit(ctx, &rpcRequest{Op: "apply", Cmd: withRequestID(encodeTables(cmd)), RAM: cmd.HasRAM()})
		if !errors.Is(err, tables.ErrCopyMismatch) {
			return err
		}
	}
	return err
}

// degraded reports whether no member of the cluster has working storage.
func (s *Store) degraded() bool {
	if s.storageState() == "durable" {
		return false
	}
	members := s.fsm.membersCopy()
	for _, m := range members {
		if m.Storage == "durable" {
			return false
		}
	}
	return true
}

// Status implements storage.Store.
func (s *Store) Status() storage.Status {
	st := storage.Status{Node: s.cfg.NodeName, AppliedIdx: s.fsm.appliedIndex()}
	if s.st != nil {
		st.Generation = s.st.generation()
	}
	st.Backend = "raft+ram"
	if s.cfg.Device != nil {
		st.Backend = "raft+blockdev"
	}
	durable := s.storageState() == "durable"
	switch {
	case durable:
		st.Mode = "durable"
	case s.degraded() && s.cfg.ReadOnlyOnLoss:
		st.Mode = "read-only"
	case s.degraded():
		st.Mode = "degraded-ram"
	default:
		st.Mode = "ram-only"
	}
	if s.raft == nil {
		st.Detail = "not started"
		return st
	}
	if addr, id := s.raft.LeaderWithID(); addr != "" {
		st.Leader = nameOf(id)
	}
	st.Role = "nonvoter"
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.ID == s.id && srv.Suffrage == raft.Voter {
				st.Role = "voter"
				if s.cfg.Witness {
					st.Role = "witness"
				}
			}
		}
	}
	if s.raft.State() == raft.Leader {
		st.LagEntries = s.maxFollowerLag()
	} else {
		s.mu.Lock()
		if s.leaderCommit > st.AppliedIdx {
			st.LagEntries = s.leaderCommit - st.AppliedIdx
		}
		s.mu.Unlock()
	}
	var detail []string
	detail = append(detail, "id "+string(s.id))
	if s.removed.Load() {
		detail = append(detail, "removed by the cluster: restart this node to rejoin under a fresh ID")
	}
	if !s.fsm.valid() {
		detail = append(detail, "RAM tables unsynced (being resynced from a peer, or emptied by a new RAM epoch)")
	}
	if since, err := s.st.lostSince(); !durable && s.cfg.Device != nil && !since.IsZero() {
		detail = append(detail, fmt.Sprintf("storage lost since %s (%v)", since.UTC().Format(time.RFC3339), err))
	}
	switch st.Mode {
	case "degraded-ram", "read-only":
		detail = append(detail, "no node has working storage: "+s.lossWindow())
	case "ram-only":
		detail = append(detail, "this node's storage is lost; it is a non-voter until storage returns and it re-persists")
	}
	st.Detail = strings.Join(detail, "; ")
	return st
}

// lossWindow states what is at risk while the cluster runs on RAM.
func (s *Store) lossWindow() string {
	voters := 0
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				voters++
			}
		}
	}
	if s.cfg.ReadOnlyOnLoss {
		return "writes are refused until storage returns (read-only option)"
	}
	return fmt.Sprintf("writes are committed in RAM only; if %d of %d voters crash before storage returns, writes since the loss are lost",
		voters/2+1, voters)
}

// Tables implements storage.Store.
func (s *Store) Tables() []storage.TableInfo {
	replicas := s.replicaStates(false)
	ramReplicas := s.replicaStates(true)
	out := s.fsm.state.Info()
	ram := s.ramState()
	for i := range out {
		out[i].Replicas = replicas
		if out[i].Copy == storage.RAM.String() {
			out[i].Replicas = ramReplicas
			out[i].RAM = ram
		}
	}
	eph := map[string]string{s.cfg.NodeName: "local"}
	s.ephMu.Lock()
	for node := range s.ephSeen {
		eph[node] = "streaming"
	}
	s.ephMu.Unlock()
	for _, t := range s.eph.Info() {
		t.Replicas = eph
		out = append(out, t)
	}
	return out
}

// replicaStates maps node name to "voter|nonvoter/durable|ram-only[/leader]";
// for a RAM table (ram) "/unsynced" is added for nodes whose RAM tables are
// not valid.
func (s *Store) replicaStates(ram bool) map[string]string {
	out := map[string]string{}
	if s.raft == nil {
		return out
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return out
	}
	members := s.fsm.membersCopy()
	_, leader := s.raft.LeaderWithID()
	for _, srv := range f.Configuration().Servers {
		role := "nonvoter"
		if srv.Suffrage == raft.Voter {
			role = "voter"
			if members[string(srv.ID)].Witness || (srv.ID == s.id && s.cfg.Witness) {
				role = "witness"
			}
		}
		stor := members[string(srv.ID)].Storage
		if srv.ID == s.id {
			stor = s.storageState()
		}
		if stor == "" {
			stor = "unknown"
		}
		v := role + "/" + stor
		if srv.ID == leader {
			v += "/leader"
		}
		if ram {
			r := members[string(srv.ID)].RAM
			if srv.ID == s.id {
				r = s.ramState()
			}
			if r == "unsynced" {
				v += "/unsynced"
			}
		}
		out[nameOf(srv.ID)] = v
	}
	return out
}

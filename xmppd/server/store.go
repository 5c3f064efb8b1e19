package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xedge/iscsi"
	"xedge/storage"
	"xedge/storage/blockdev"
	"xedge/storage/local"
	"xedge/storage/replicated"
	"xedge/xmppd/config"
	"xedge/xmppd/router"
)

// newStore builds the store the configuration asks for:
//
//   - single node, storage "dir": storage/local under <data>/db (as before);
//   - single node, storage file:/iscsi://: storage/local on that block device;
//   - cluster-addr set: storage/replicated on the block device (storage "dir"
//     means a file device at <data>/raft/device.img).
//
// Devices are opened, and the replicated store built (it listens on the cluster
// address), only in Start, i.e. after the data directory lock is taken.
func newStore(cfg *config.Config, log *slog.Logger) (StoreWithLifecycle, error) {
	if !cfg.Clustered() && cfg.StorageKind() == "dir" {
		return local.New(local.Config{Dir: filepath.Join(cfg.Data, "db"), Node: cfg.Node, OnLoss: cfg.OnStorageLoss, Logger: log}), nil
	}
	ls := &lazyStore{cfg: cfg, log: log}
	if !cfg.Clustered() {
		return ls, nil
	}
	key, err := cfg.LoadClusterKey()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	ls.key = key
	if fi, err := os.Stat(cfg.ClusterKeyFile); cfg.ClusterKeyFile != "" && err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the cluster key file is readable by other users: chmod 600 it", "component", "server",
			"file", cfg.ClusterKeyFile, "mode", fi.Mode().Perm().String())
	}
	if cfg.ClusterKey != "" {
		log.Warn("the cluster key was given with --cluster-key (visible in ps): prefer --cluster-key-file", "component", "server")
	}
	return ls, nil
}

// lazyStore is a StoreWithLifecycle whose real store (storage/local on a device,
// or storage/replicated) is built in Start. Before Start and after a failed Start
// its reads fail and writes return storage.ErrUnavailable.
type lazyStore struct {
	cfg *config.Config
	log *slog.Logger
	key []byte

	inner  atomic.Pointer[innerStore]
	mu     sync.Mutex // Start/Stop
	dev    io.Closer
	rep    *replicated.Store
	seeder seedErr
}

type innerStore struct{ StoreWithLifecycle }

var errNotStarted = fmt.Errorf("%w: storage not started", storage.ErrUnavailable)

func (l *lazyStore) get() StoreWithLifecycle {
	if p := l.inner.Load(); p != nil {
		return p.StoreWithLifecycle
	}
	return nil
}

// openDevice opens the block device of the storage setting.
func (l *lazyStore) openDevice(ctx context.Context) (storage.BlockDevice, io.Closer, error) {
	spec := l.cfg.Storage
	if l.cfg.StorageKind() == "dir" { // clustered on the data directory
		if err := os.MkdirAll(filepath.Join(l.cfg.Data, "raft"), 0o750); err != nil {
			return nil, nil, fmt.Errorf("storage: %w", err)
		}
		spec = "file:" + filepath.Join(l.cfg.Data, "raft", "device.img")
	}
	switch l.cfg.StorageKind() {
	case "iscsi":
		d, err := iscsi.DialURL(ctx, spec)
		if err != nil {
			return nil, nil, fmt.Errorf("storage: iSCSI LUN: %w", err)
		}
		return d, d, nil
	default:
		path, size, err := blockdev.ParseSpec(spec)
		if err != nil {
			return nil, nil, fmt.Errorf("storage: %w", err)
		}
		d, err := blockdev.OpenFile(path, size)
		if err != nil {
			return nil, nil, fmt.Errorf("storage: %w", err)
		}
		lk, err := lockDevice(path)
		if err != nil {
			d.Close()
			return nil, nil, fmt.Errorf("storage: %w", err)
		}
		return d, closeBoth{d, lk}, nil
	}
}

// Start opens the device and starts the store; a clustered node then waits until
// it is part of the cluster (join-timeout).
func (l *lazyStore) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.get() != nil {
		return errors.New("storage: already started")
	}
	if l.cfg.Clustered() {
		if err := l.checkRejoin(); err != nil {
			return err
		}
	}
	dev, closer, err := l.openDevice(ctx)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		if closer != nil {
			closer.Close()
		}
		return err
	}
	if !l.cfg.Clustered() {
		st := local.New(local.Config{Dir: filepath.Join(l.cfg.Data, "db"), Device: dev, Node: l.cfg.Node, OnLoss: l.cfg.OnStorageLoss, Logger: l.log})
		if err := st.Start(ctx); err != nil {
			return fail(err)
		}
		l.dev = closer
		l.inner.Store(&innerStore{st})
		return nil
	}
	rlog := slog.New(&seedErrHandler{Handler: l.log.Handler(), last: &l.seeder})
	rep, err := replicated.New(replicated.Config{
		NodeName:           l.cfg.Node,
		ClusterAddr:        l.cfg.ClusterAddr,
		AdvertiseAddr:      l.cfg.AdvertiseAddr,
		Join:               l.cfg.JoinList(),
		DataDir:            filepath.Join(l.cfg.Data, "raft"),
		Device:             dev,
		ClusterKey:         l.key,
		Witness:            l.cfg.Witness,
		ReadOnlyOnLoss:     l.cfg.OnStorageLoss == "read-only",
		Logger:             rlog,
		HeartbeatTimeout:   l.cfg.RaftHeartbeatTimeout,
		ElectionTimeout:    l.cfg.RaftElectionTimeout,
		LeaderLeaseTimeout: l.cfg.RaftLeaseTimeout,
		ReportInterval:     l.cfg.RaftReportInterval,
	})
	if err != nil {
		return fail(fmt.Errorf("storage: %w", err))
	}
	stopRep := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := rep.Stop(sctx); err != nil {
			l.log.Warn("stop after failed start", "component", "storage", "err", err)
			return // raft may still write to the device: leave it open
		}
		if closer != nil {
			closer.Close()
		}
	}
	if err := rep.Start(ctx); err != nil {
		stopRep()
		return fmt.Errorf("storage: %w", err)
	}
	jctx, cancel := context.WithTimeout(ctx, l.cfg.JoinTimeout)
	defer cancel()
	l.log.Info("joining the cluster", "component", "storage", "node", l.cfg.Node, "cluster_addr", rep.Addr(), "seeds", l.cfg.JoinList(), "timeout", l.cfg.JoinTimeout)
	if err := rep.WaitJoined(jctx); err != nil {
		stopRep()
		if last := l.seeder.get(); last != "" {
			return fmt.Errorf("storage: cannot join the cluster: %w; last error from the seeds: %s", err, last)
		}
		return fmt.Errorf("storage: cannot join the cluster (is a seed in --join up, and is this node's --cluster-addr reachable from it?): %w", err)
	}
	// The session table exists from the start, so that Tables() always lists an
	// ephemeral table whose replicas show which nodes are alive (leaveSafe).
	rep.Ephemeral(router.SessionTable)
	l.endOwnLeaveTurn(ctx, rep)
	st := rep.Status()
	l.log.Info("joined the cluster", "component", "storage", "id", rep.ID(), "leader", st.Leader, "role", st.Role, "mode", st.Mode)
	l.rep, l.dev = rep, closer
	l.inner.Store(&innerStore{rep})
	return nil
}

// Stop stops the store; a clustered node with leave-on-stop first leaves the
// cluster, unless it is the last voter (then the cluster's state stays with it).
func (l *lazyStore) Stop(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := l.get()
	if in == nil {
		return nil
	}
	var err error
	leave := false
	if l.rep != nil && l.cfg.LeaveOnStop {
		var why string
		if leave, why = l.takeLeaveTurn(ctx); !leave {
			l.log.Info("stopping without leaving the cluster", "component", "storage", "reason", why)
		}
	}
	if leave {
		// Leave = remove this node through the leader, then Stop. Bound the
		// removal so that a cluster without quorum does not eat the whole stop
		// deadline.
		budget := 5 * time.Second
		if d, ok := ctx.Deadline(); ok {
			budget = min(budget, time.Until(d)/2)
		}
		lctx, cancel := context.WithTimeout(ctx, budget)
		err = l.rep.Leave(lctx)
		cancel()
		if err != nil {
			// Leave also stops the store, under the same bounded context: it
			// may not have waited for raft to shut down, so the device stays
			// open (the process is exiting; the OS closes it).
			// Leave wraps a failed removal as "replicated: leave: ..."; any
			// other error is its Stop's, after the removal went through.
			if !strings.Contains(err.Error(), "replicated: leave:") {
				l.log.Warn("left the cluster, but the store did not stop cleanly", "component", "storage", "err", err)
				l.markLeft()
			} else {
				l.log.Warn("leave failed; stopped without leaving", "component", "storage", "err", err)
			}
			_ = l.rep.Stop(ctx) // a no-op: Leave stopped it
			l.inner.Store(nil)
			l.dev = nil
			return nil
		}
		l.log.Info("left the cluster", "component", "storage", "node", l.cfg.Node)
		l.markLeft()
	} else {
		err = in.Stop(ctx)
	}
	if err != nil {
		// raft may still be writing: do not close the device under it.
		return err
	}
	l.inner.Store(nil)
	if l.dev != nil {
		if cerr := l.dev.Close(); cerr != nil {
			return fmt.Errorf("storage: close device: %w", cerr)
		}
		l.dev = nil
	}
	return nil
}

// ramOnlyMarker is storage/replicated's documented marker file in its DataDir
// (docs/replication.md): when present at start, the node wipes its raft state
// and rejoins under a fresh raft ID.
const ramOnlyMarker = "raft-ram-only"

// markLeft makes the next start rejoin under a fresh raft ID: the leader refuses
// the ID of a node that left, and the old state is of no use to a non-member.
func (l *lazyStore) markLeft() {
	f := filepath.Join(l.cfg.Data, "raft", ramOnlyMarker)
	msg := "left the cluster at " + time.Now().UTC().Format(time.RFC3339) + " (xmppd leave-on-stop): rejoin under a fresh ID\n"
	if err := os.WriteFile(f, []byte(msg), 0o600); err != nil {
		l.log.Error("cannot mark this node as having left; its next start may not rejoin", "component", "storage", "file", f, "err", err)
	}
}

// checkRejoin refuses a start that would bootstrap a second cluster: a node whose
// state is to be wiped (it left, or ran RAM-only) and that has no --join would
// otherwise bootstrap a new one-node cluster of its own.
func (l *lazyStore) checkRejoin() error {
	f := filepath.Join(l.cfg.Data, "raft", ramOnlyMarker)
	if _, err := os.Stat(f); err != nil || len(l.cfg.JoinList()) > 0 {
		return nil
	}
	why, _ := os.ReadFile(f)
	return fmt.Errorf("storage: this node's raft state is to be discarded (%s: %s) and it has no --join: "+
		"it would bootstrap a new cluster of its own; give --join with the cluster's addresses to rejoin, "+
		"or remove %s to really start a new cluster", f, strings.TrimSpace(string(why)), filepath.Join(l.cfg.Data, "raft"))
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
func (l *lazyStore) endOwnLeaveTurn(ctx context.Context, rep *replicated.Store) {
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// A write through raft returns once this node applied everything up to it
	// (even when it fails with ErrNoTable): a just-joined node has then caught
	// up with any turn taken before.
	_ = rep.Apply(wctx, storage.Delete(leaveTable, "barrier"))
	tab, err := rep.Durable(leaveTable)
	if err != nil {
		return // never declared: nobody ever left
	}
	v, ok, _ := tab.Get(leaveKey)
	if holder, _, _ := strings.Cut(string(v), " "); !ok || holder != l.cfg.Node {
		return
	}
	err = rep.Apply(wctx, storage.Delete(leaveTable, leaveHeld+string(v)).If(storage.CondPresent), storage.Delete(leaveTable, leaveKey))
	if err != nil && !errors.Is(err, storage.ErrConflict) {
		l.log.Warn("cannot end this node's previous leave turn", "component", "storage", "err", err)
	}
}

// takeLeaveTurn reports whether this node may leave now, and why not.
func (l *lazyStore) takeLeaveTurn(ctx context.Context) (bool, string) {
	if ok, why := l.leaveSafe(); !ok {
		return false, why
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := l.rep.Declare(wctx, storage.TableSpec{Name: leaveTable, Copy: storage.Disc}); err != nil {
		return false, "cannot take the leave turn: " + err.Error()
	}
	tab, err := l.rep.Durable(leaveTable)
	if err != nil {
		return false, "cannot take the leave turn: " + err.Error()
	}
	if v, ok, _ := tab.Get(leaveKey); ok {
		holder, at, _ := strings.Cut(string(v), " ")
		since, perr := time.Parse(time.RFC3339Nano, at)
		_, member := replicas(l.rep)[holder]
		if member && holder != l.cfg.Node && perr == nil && time.Since(since) < leaveTurnMax {
			return false, "node " + holder + " is leaving the cluster (one node leaves at a time)"
		}
		err := l.rep.Apply(wctx, storage.Delete(leaveTable, leaveHeld+string(v)).If(storage.CondPresent), storage.Delete(leaveTable, leaveKey))
		if err != nil && !errors.Is(err, storage.ErrConflict) {
			return false, "cannot clear a stale leave turn: " + err.Error()
		}
	}
	turn := l.cfg.Node + " " + time.Now().UTC().Format(time.RFC3339Nano)
	err = l.rep.Apply(wctx, storage.Put(leaveTable, leaveKey, []byte(turn)).If(storage.CondAbsent), storage.Put(leaveTable, leaveHeld+turn, nil))
	if errors.Is(err, storage.ErrConflict) {
		return false, "another node is leaving the cluster (one node leaves at a time)"
	} else if err != nil {
		return false, "cannot take the leave turn: " + err.Error()
	}
	// Membership may have changed while another node held the turn.
	if ok, why := l.leaveSafe(); !ok {
		_ = l.rep.Apply(wctx, storage.Delete(leaveTable, leaveHeld+turn).If(storage.CondPresent), storage.Delete(leaveTable, leaveKey))
		return false, why
	}
	return true, ""
}

// leaveSafe reports whether this node may leave the cluster on stop: only when
// at least two other voters remain (so a full-cluster shutdown keeps the state on
// two nodes, not one) and every other voter is alive (its ephemeral stream is
// fresh). Leaving while a voter is down would shrink the configuration to one
// that needs the dead voter for a quorum, and this node, no longer a member,
// could not restore it by restarting.
func (l *lazyStore) leaveSafe() (bool, string) {
	if l.rep == nil {
		return false, "not clustered"
	}
	var alive map[string]string
	for _, t := range l.rep.Tables() {
		if t.Kind == "ephemeral" {
			alive = t.Replicas
			break
		}
	}
	others := 0
	for node, state := range replicas(l.rep) {
		if node == l.cfg.Node || !(strings.HasPrefix(state, "voter") || strings.HasPrefix(state, "witness")) {
			continue
		}
		if _, ok := alive[node]; !ok {
			return false, "voter " + node + " is not reachable: leaving now could leave the cluster without a quorum"
		}
		others++
	}
	if others < 2 {
		return false, fmt.Sprintf("only %d other voter(s): leaving would leave the cluster's state on fewer than 2 voters", others)
	}
	return true, ""
}

// replicas returns node -> replica state ("voter/durable/leader", ...) from the
// store's durable tables, or nil if it has none to show.
func replicas(st storage.Store) map[string]string {
	if st == nil {
		return nil
	}
	for _, t := range st.Tables() {
		if t.Kind == "durable" && len(t.Replicas) > 0 {
			return t.Replicas
		}
	}
	return nil
}

func (l *lazyStore) Declare(ctx context.Context, spec storage.TableSpec) error {
	if in := l.get(); in != nil {
		return in.Declare(ctx, spec)
	}
	return errNotStarted
}

func (l *lazyStore) Durable(name string) (storage.Table, error) {
	if in := l.get(); in != nil {
		return in.Durable(name)
	}
	return nil, errNotStarted
}

func (l *lazyStore) Apply(ctx context.Context, ops ...storage.Op) error {
	if in := l.get(); in != nil {
		return in.Apply(ctx, ops...)
	}
	return errNotStarted
}

func (l *lazyStore) Ephemeral(name string) storage.Ephemeral {
	if in := l.get(); in != nil {
		return in.Ephemeral(name)
	}
	return noEphemeral{}
}

func (l *lazyStore) Tables() []storage.TableInfo {
	if in := l.get(); in != nil {
		return in.Tables()
	}
	return []storage.TableInfo{}
}

func (l *lazyStore) Status() storage.Status {
	if in := l.get(); in != nil {
		return in.Status()
	}
	return storage.Status{Node: l.cfg.Node, Detail: "not started"}
}

// noEphemeral is the ephemeral table of a store that is not running.
type noEphemeral struct{}

func (noEphemeral) Put(string, []byte)                  {}
func (noEphemeral) Delete(string)                       {}
func (noEphemeral) Get(string) []storage.Row            { return nil }
func (noEphemeral) Scan(string, func(storage.Row) bool) {}

// seedErr keeps the last error storage/replicated logged while trying to reach a
// join seed, so that a failed join names its cause (a wrong cluster key, a refused
// connection) in xmppd's exit message, not only in the log.
type seedErr struct {
	mu   sync.Mutex
	last string
}

func (s *seedErr) set(v string) { s.mu.Lock(); s.last = v; s.mu.Unlock() }
func (s *seedErr) get() string  { s.mu.Lock(); defer s.mu.Unlock(); return s.last }

// seedJoinMsg is the message storage/replicated logs when a join seed cannot be
// reached (matched to capture its err attribute; if it changes, the exit message
// is only less specific).
const seedJoinMsg = "join: cannot reach seed (retrying)"

type seedErrHandler struct {
	slog.Handler
	last *seedErr
}

func (h *seedErrHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= slog.LevelWarn || h.Handler.Enabled(ctx, lv)
}

func (h *seedErrHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == seedJoinMsg {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				h.last.set(a.Value.String())
				return false
			}
			return true
		})
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h *seedErrHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &seedErrHandler{Handler: h.Handler.WithAttrs(as), last: h.last}
}

func (h *seedErrHandler) WithGroup(name string) slog.Handler {
	return &seedErrHandler{Handler: h.Handler.WithGroup(name), last: h.last}
}

// closeBoth closes a device and then its lock.
type closeBoth [2]io.Closer

func (c closeBoth) Close() error { return errors.Join(c[0].Close(), c[1].Close()) }

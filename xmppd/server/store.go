package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"xedge/internal/backoff"
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

	inner atomic.Pointer[innerStore]
	mu    sync.Mutex // Start/Stop
	dev   io.Closer
	rep   *replicated.Store
}

type innerStore struct{ StoreWithLifecycle }

// The optional interfaces of the stores inside pass through the wrapper.
var _ storage.ReadBarrier = (*lazyStore)(nil)

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
		// A target that does not answer yet (rebooting, or a TCG guest on a
		// loaded host missing the first connect's 500 ms) is waited for, up
		// to the join timeout: exiting here cost a restart of xmppd, from
		// init's small restart budget, for every such start. A login the
		// target refuses (credentials, unknown IQN) still fails at once.
		icfg, err := iscsi.ParseURL(spec)
		if err != nil {
			return nil, nil, fmt.Errorf("storage: iSCSI LUN: %w", err)
		}
		dctx, cancel := context.WithTimeout(ctx, max(l.cfg.JoinTimeout, 10*time.Second))
		defer cancel()
		d, err := iscsi.DialRetry(dctx, icfg, func(attempt int, err error) {
			if attempt == 1 || attempt%20 == 0 {
				l.log.Warn("iSCSI target not answering yet; waiting for it", "component", "storage", "portal", icfg.Portal, "attempt", attempt, "err", err)
			}
		})
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
	err := l.start(ctx)
	if errors.Is(err, replicated.ErrRemoved) {
		// The cluster says this node left it (a clean stop left the raft
		// configuration, and the marker did not survive the reboot): the
		// store marked its state to be discarded; a second start wipes it
		// and joins under a fresh raft ID now, not after the join timeout.
		l.log.Warn("the cluster removed this node: rejoining under a fresh raft ID", "component", "storage", "err", err)
		err = l.start(ctx)
	}
	return err
}

// start is one attempt of Start (caller holds l.mu).
func (l *lazyStore) start(ctx context.Context) error {
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
	if seeds := persistedJoin(l.cfg.Data); seeds != "" {
		// `xmppctl cluster join` asked for this (it also marked the raft
		// state to be discarded): join there under a fresh raft ID.
		l.log.Info("joining the cluster named by xmppctl cluster join", "component", "storage", "seeds", seeds)
		l.cfg.Join = seeds
	}
	rep, err := replicated.New(replicated.Config{
		NodeName:           l.cfg.Node,
		ClusterAddr:        l.cfg.ClusterAddr,
		AdvertiseAddr:      l.cfg.AdvertiseAddr,
		Join:               l.cfg.JoinList(),
		DataDir:            filepath.Join(l.cfg.Data, "raft"),
		Device:             dev,
		ClusterKey:         l.key,
		Witness:            l.cfg.Witness,
		LeaveOnStop:        l.cfg.LeaveOnStop,
		ReadOnlyOnLoss:     l.cfg.OnStorageLoss == "read-only",
		Logger:             l.log,
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
		var je *replicated.JoinError
		if errors.As(err, &je) && je.Addr != "" {
			return fmt.Errorf("storage: cannot join the cluster; last error from the seeds: %w", err)
		}
		return fmt.Errorf("storage: cannot join the cluster (is a seed in --join up, and is this node's --cluster-addr reachable from it?): %w", err)
	}
	// The session table exists from the start, so that Tables() always lists an
	// ephemeral table whose replicas show which nodes are alive (leaveSafe).
	rep.Ephemeral(router.SessionTable)
	st := rep.Status()
	l.log.Info("joined the cluster", "component", "storage", "id", rep.ID(), "leader", st.Leader, "role", st.Role, "mode", st.Mode)
	l.rep, l.dev = rep, closer
	l.inner.Store(&innerStore{rep})
	_ = os.Remove(filepath.Join(l.cfg.Data, JoinFile)) // joined: the next start is an ordinary one
	return nil
}

// Stop stops the store (a clustered node with leave-on-stop first leaves the
// cluster when storage/replicated finds that safe), then closes the device.
func (l *lazyStore) Stop(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := l.get()
	if in == nil {
		return nil
	}
	if err := in.Stop(ctx); err != nil {
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

// markLeft is kept for callers of the leave path: storage/replicated's Leave
// marks the node itself (its next start rejoins under a fresh raft ID).
func (l *lazyStore) markLeft() {}

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

// Declare declares a table. A clustered store may answer ErrUnavailable while
// raft settles (a leader lost while committing, an election at start on a busy
// host): Declare is idempotent, so it is retried with backoff for up to the
// join timeout instead of failing the start of xmppd (a node that exits there
// costs its peers their quorum and restarts into the same election).
func (l *lazyStore) Declare(ctx context.Context, spec storage.TableSpec) error {
	in := l.get()
	if in == nil {
		return errNotStarted
	}
	err := in.Declare(ctx, spec)
	if err == nil || !errors.Is(err, storage.ErrUnavailable) || !l.cfg.Clustered() {
		return err
	}
	l.log.Warn("declaring a table: storage unavailable, retrying", "component", "server", "table", spec.Name, "err", err)
	deadline := time.Now().Add(l.cfg.JoinTimeout)
	b := backoff.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for time.Now().Before(deadline) {
		if werr := b.Wait(ctx); werr != nil {
			return fmt.Errorf("%w (retrying after: %w)", werr, err)
		}
		if err = in.Declare(ctx, spec); err == nil || !errors.Is(err, storage.ErrUnavailable) {
			return err
		}
	}
	return err
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

// ReadBarrier passes storage.CatchUp on to the store inside (the replicated
// one waits until this node applied what the leader has; a local one is
// always current). Without it the late looks of the offline and roster
// modules would not catch up behind this wrapper.
func (l *lazyStore) ReadBarrier(ctx context.Context) error {
	if in := l.get(); in != nil {
		return storage.CatchUp(ctx, in)
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

// closeBoth closes a device and then its lock.
type closeBoth [2]io.Closer

func (c closeBoth) Close() error { return errors.Join(c[0].Close(), c[1].Close()) }

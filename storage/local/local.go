// Package local owns xedge's single-node storage.Store: every table in RAM
// (storage/tables for durable tables, storage/ephemeral for node-owned ones),
// with disc tables persisted under a data directory through an append-only log
// of committed batches plus periodic snapshots (see docs/storage.md for the
// layout and the recovery rules).
//
// Lifecycle: New(cfg) -> Start(ctx) (recovers from disk) -> use -> Stop(ctx).
// Open(ctx, cfg) does New and Start.
//
// Apply checks the batch (tables, Conds) against the current state plus the
// batches queued before it, queues it, and one caller at a time writes every
// queued batch's disc-table writes as records with one write and one fdatasync
// (group commit), then applies them in RAM in order and answers their callers.
// RAM tables are never written to disk. If the disk fails, the store latches
// "storage lost", reports it on Lost(), and then either keeps committing in RAM
// (Config.OnLoss "ram", Status.Mode "degraded-ram") or refuses writes with
// storage.ErrUnavailable ("read-only"); Repersist brings it back to durable.
//
// Persistence goes to a data directory (Config.Dir: log segments and a
// snapshot file) or to a BlockDevice (Config.Device: the blocklog layout).
//
// local must not import xmppd, iscsi or init.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	gometrics "github.com/hashicorp/go-metrics"

	"xedge/internal/backoff"
	"xedge/storage"
	"xedge/storage/ephemeral"
	"xedge/storage/tables"
)

// Config configures a single-node store.
type Config struct {
	// Dir is the data directory (--data). With neither Dir nor Device there
	// is no persistence at all: every table behaves as a RAM table
	// (Status.Mode "ram-only").
	Dir string
	// Device, when set, holds the log and snapshots instead of Dir (the
	// blocklog layout: --storage file:PATH, or the iSCSI LUN). Dir then only
	// holds the incarnation counter, if set.
	Device storage.BlockDevice
	// Node is this node's name, used to tag ephemeral rows.
	Node string
	// SnapshotBytes is how many log bytes trigger a snapshot and log
	// truncation (default 16 MiB).
	SnapshotBytes int64
	// OnLoss is what happens when the disk fails: "ram" (default) keeps
	// committing in RAM, "read-only" refuses writes.
	OnLoss string
	// RetryEvery is how often the store tries Repersist by itself while the
	// storage is lost (default 5 s, doubling up to 1 min; negative: never,
	// the caller calls Repersist).
	RetryEvery time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (s *Store) where() string {
	if s.cfg.Device != nil {
		return fmt.Sprintf("device (%d bytes)", s.cfg.Device.Size())
	}
	return "data " + s.cfg.Dir
}

// Store is the single-node storage.Store.
type Store struct {
	cfg   Config
	log   *slog.Logger
	state *tables.State
	eph   *ephemeral.Set
	inc   uint64

	// Lock order: jmu, then wmu. jmu is held by whoever writes the journal
	// (the group committer, Declare, a snapshot's rotation); wmu guards the
	// fields below and is never held during journal I/O except by Declare.
	jmu      sync.Mutex
	wmu      sync.Mutex
	queue    []*batch // checked batches waiting for the group commit, in order
	running  bool
	quitOnce sync.Once // closes quit in Stop
	j        journal
	seq      uint64 // last committed record
	since    int64  // log bytes since the last snapshot
	gen      uint64 // snapshots taken since start + 1
	lost     error
	lostCh   chan error
	// While Repersist runs, commits during storage loss keep their records
	// here, to be written after the new snapshot (the log suffix).
	repersisting bool
	suffix       []record
	repMu        sync.Mutex
	kick         chan struct{} // storage lost: wake the retry loop
	quit         chan struct{} // closed by Stop
	rec          Recovery
	snapMu       sync.Mutex // one snapshot at a time
	bg           sync.WaitGroup
	snapPending  bool
}

var _ storage.Store = (*Store)(nil)

// New returns a store; call Start before use.
func New(cfg Config) *Store {
	if cfg.SnapshotBytes <= 0 {
		cfg.SnapshotBytes = 16 << 20
	}
	if cfg.OnLoss == "" {
		cfg.OnLoss = "ram"
	}
	if cfg.RetryEvery == 0 {
		cfg.RetryEvery = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Store{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "storage"),
		state:  tables.New(),
		lostCh: make(chan error, 1),
		kick:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
	}
}

// Open is New followed by Start.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s := New(cfg)
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Start recovers the state from Dir (snapshot, then the log up to the first bad
// record) and opens the log for appending.
func (s *Store) Start(ctx context.Context) error {
	if s.cfg.OnLoss != "ram" && s.cfg.OnLoss != "read-only" {
		return fmt.Errorf("storage: unknown OnLoss %q (want ram or read-only)", s.cfg.OnLoss)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.running {
		return errors.New("storage: already started")
	}
	s.inc = uint64(time.Now().UnixNano())
	j, err := s.openJournal()
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if j != nil {
		if err := s.nextIncarnation(j); err != nil {
			j.close()
			return fmt.Errorf("storage: %w", err)
		}
	}
	if j != nil {
		var since int64
		rec, err := j.recover(s.state.Restore, func(seq uint64, p []byte) error {
			cmd, err := tables.DecodeCommand(p)
			if err != nil {
				return err
			}
			since += int64(len(p) + recHeader)
			return s.state.Apply(cmd)
		})
		if err != nil {
			j.close()
			return fmt.Errorf("storage: recover %s: %w", s.where(), err)
		}
		s.state.ClearRAM()
		s.j, s.seq, s.rec, s.since = j, rec.LastSeq, rec, since
		if rec.Stopped != "" {
			s.log.Error("log corrupt: recovery stopped before its end",
				"where", s.where(), "stopped", rec.Stopped, "dropped_bytes", rec.DroppedBytes, "last_seq", rec.LastSeq)
		} else if rec.DroppedBytes > 0 {
			s.log.Warn("dropped a torn last log record", "where", s.where(), "bytes", rec.DroppedBytes)
		}
		s.log.Info("storage recovered", "where", s.where(), "snapshot_seq", rec.SnapshotSeq,
			"records", rec.Records, "last_seq", rec.LastSeq, "tables", len(s.state.Specs()))
	}
	s.gen = 1
	if s.eph == nil {
		s.eph = ephemeral.New(s.cfg.Node, s.inc)
	} else { // Ephemeral was used before Start
		s.eph.SetIncarnation(s.inc)
	}
	s.running = true
	if s.j != nil && s.cfg.RetryEvery > 0 {
		s.bg.Add(1)
		go s.retryLoop()
	}
	return nil
}

// retryLoop tries Repersist while the storage is lost, backing off from
// RetryEvery to a minute.
func (s *Store) retryLoop() {
	defer s.bg.Done()
	for {
		select {
		case <-s.quit:
			return
		case <-s.kick:
		}
		bo := backoff.Backoff{Min: s.cfg.RetryEvery, Max: time.Minute}
		for attempt := 0; ; attempt++ {
			t := time.NewTimer(bo.Next())
			select {
			case <-s.quit:
				t.Stop()
				return
			case <-t.C:
			}
			err := s.Repersist(context.Background())
			if err == nil {
				break
			}
			if attempt == 0 || attempt%10 == 0 {
				s.log.Warn("storage still unavailable; will retry", "err", err, "next_in", bo.Peek())
			}
		}
	}
}

// openJournal opens the configured journal (nil: none).
func (s *Store) openJournal() (journal, error) {
	switch {
	case s.cfg.Device != nil:
		bj, err := openBlockJournal(s.cfg.Device, s.log)
		if err != nil {
			return nil, fmt.Errorf("open device: %w", err)
		}
		return bj, nil
	case s.cfg.Dir != "":
		return openDirJournal(s.cfg.Dir, s.log)
	}
	return nil, nil
}

// nextIncarnation sets s.inc from a counter kept with the journal.
func (s *Store) nextIncarnation(j journal) error {
	if bj, ok := j.(*blockJournal); ok {
		inc, _ := bj.bl.GetUint64([]byte("incarnation"))
		s.inc = max(inc+1, uint64(time.Now().UnixNano()))
		if err := bj.bl.SetUint64([]byte("incarnation"), s.inc); err != nil {
			return err
		}
		if err := bj.bl.Err(); err != nil {
			return fmt.Errorf("device: %w", err)
		}
		return nil
	}
	inc, err := nextIncarnation(s.cfg.Dir)
	s.inc = inc
	return err
}

// nextIncarnation bumps the counter kept in DIR/incarnation.
func nextIncarnation(dir string) (uint64, error) {
	p := filepath.Join(dir, "incarnation")
	var n uint64
	if b, err := os.ReadFile(p); err == nil {
		n, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("read incarnation: %w", err)
	}
	// Larger than every earlier one here, and than any before a wipe of the
	// directory (peers may still hold rows of those): the clock, in ns.
	n = max(n+1, uint64(time.Now().UnixNano()))
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(n, 10)+"\n"), 0o640); err != nil {
		return 0, fmt.Errorf("write incarnation: %w", err)
	}
	if f, err := os.Open(tmp); err == nil {
		f.Sync()
		f.Close()
	}
	if err := os.Rename(tmp, p); err != nil {
		return 0, fmt.Errorf("write incarnation: %w", err)
	}
	return n, syncDir(dir)
}

// Stop waits for a running snapshot and closes the log. Writes after Stop fail
// with storage.ErrUnavailable; reads keep working from RAM.
func (s *Store) Stop(ctx context.Context) error {
	s.wmu.Lock()
	s.running = false
	s.wmu.Unlock()
	// Background loops are released whatever state the store is in, exactly once.
	s.quitOnce.Do(func() { close(s.quit) })
	done := make(chan struct{})
	go func() { s.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("storage: stop: %w", ctx.Err())
	}
	s.jmu.Lock() // let an in-flight group commit finish
	defer s.jmu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.j != nil {
		if err := s.j.close(); err != nil {
			return fmt.Errorf("storage: close log: %w", err)
		}
	}
	return nil
}

// Lost delivers the error that made the store lose its disk, once.
func (s *Store) Lost() <-chan error { return s.lostCh }

// Recovery returns what Start found on disk.
func (s *Store) Recovery() Recovery {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.rec
}

// Incarnation is this run's incarnation (tags ephemeral rows).
func (s *Store) Incarnation() uint64 { return s.inc }

// State exposes the table state (read-only use).
func (s *Store) State() *tables.State { return s.state }

// EphemeralSet exposes the ephemeral tables, for a layer that streams rows.
func (s *Store) EphemeralSet() *ephemeral.Set { return s.eph }

// loseLocked latches storage loss. wmu held.
func (s *Store) loseLocked(err error) {
	if s.lost != nil {
		return
	}
	s.lost = err
	s.log.Error("storage lost; continuing without disk", "err", err, "on_loss", s.cfg.OnLoss)
	select { // Lost has room for one report; a reader that missed one sees Status
	case s.lostCh <- err:
	default:
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// batch is one Apply waiting for the group commit.
type batch struct {
	ops  []storage.Op // conds cleared: they were checked against state+queue
	done chan error
	// set by the committer
	payload []byte
	seq     uint64
}

// maxGroup bounds how many payload bytes one group commit writes.
const maxGroup = 1 << 20

// commit writes every queued batch (up to maxGroup bytes) as one journal
// append with one fdatasync, then applies them to the state in order and
// answers their callers. jmu held, wmu not held.
func (s *Store) commit() {
	s.wmu.Lock()
	if !s.running { // stopped with batches still queued: refuse them
		for _, b := range s.queue {
			b.done <- fmt.Errorf("%w: store stopped", storage.ErrUnavailable)
		}
		s.queue = nil
		s.wmu.Unlock()
		return
	}
	n, size := 0, 0
	var recs []record
	for n < len(s.queue) && (n == 0 || size < maxGroup) {
		b := s.queue[n]
		if s.j != nil && (s.lost == nil || s.repersisting) {
			if disc := s.state.Filter(b.ops); len(disc) > 0 {
				b.payload = tables.ApplyCommand(disc...).Encode(nil)
				b.seq = s.seq + uint64(len(recs)) + 1
				recs = append(recs, record{seq: b.seq, payload: b.payload})
				size += len(b.payload)
			}
		}
		n++
	}
	if s.lost != nil { // storage lost: the records only go to a re-persist
		s.suffix = append(s.suffix, recs...)
		recs = nil
	}
	group := s.queue[:n:n]
	j := s.j
	s.wmu.Unlock()
	if n == 0 {
		return
	}
	var err error
	if len(recs) > 0 {
		err = j.appendBatch(recs)
	}
	s.wmu.Lock()
	var fail error
	if err != nil {
		s.loseLocked(err)
	}
	if s.lost != nil && s.cfg.OnLoss == "read-only" {
		fail = fmt.Errorf("%w: storage lost (read-only): %v", storage.ErrUnavailable, s.lost)
		// Later queued batches were checked assuming these would apply.
		group = s.queue
	}
	for _, b := range group {
		if fail != nil {
			b.done <- fail
			continue
		}
		if aerr := s.state.Apply(tables.ApplyCommand(b.ops...)); aerr != nil {
			// Checked against state+queue under wmu, so this is a bug.
			b.done <- fmt.Errorf("storage: apply after check: %w", aerr)
			continue
		}
		if err == nil && b.seq > 0 {
			s.seq = b.seq // during loss too: Repersist continues the sequence
			s.since += int64(len(b.payload) + recHeader)
		}
		b.done <- nil
	}
	s.queue = s.queue[len(group):]
	snap := s.j != nil && s.lost == nil && (s.since >= s.cfg.SnapshotBytes || s.j.pressure())
	s.wmu.Unlock()
	if snap {
		s.snapshotAsync()
	}
}

// checkLocked validates a batch against the state plus the queued batches
// (which will be applied before it). wmu held.
func (s *Store) checkLocked(ops []storage.Op) error {
	plain := ops
	var conds []storage.Op
	for i, op := range ops {
		if op.Cond != storage.CondNone {
			if conds == nil {
				plain = append([]storage.Op(nil), ops...)
			}
			conds = append(conds, op)
			plain[i].Cond = storage.CondNone
		}
	}
	if err := s.state.Check(plain); err != nil { // tables and kinds
		return err
	}
	for _, op := range conds {
		present, known := s.queuedPresence(op.Table, op.Key)
		if !known {
			if err := s.state.Check([]storage.Op{op}); err != nil {
				return err
			}
			continue
		}
		switch {
		case op.Cond == storage.CondAbsent && present:
			return fmt.Errorf("%w: %s/%q exists", storage.ErrConflict, op.Table, op.Key)
		case op.Cond == storage.CondPresent && !present:
			return fmt.Errorf("%w: %s/%q is absent", storage.ErrConflict, op.Table, op.Key)
		case op.Cond != storage.CondAbsent && op.Cond != storage.CondPresent:
			return fmt.Errorf("storage: unknown cond %d", op.Cond)
		}
	}
	return nil
}

// queuedPresence says whether the queued batches decide if table/key exists
// after them (known) and if so whether it does. wmu held.
func (s *Store) queuedPresence(table, key string) (present, known bool) {
	for i := len(s.queue) - 1; i >= 0; i-- {
		ops := s.queue[i].ops
		for k := len(ops) - 1; k >= 0; k-- {
			op := &ops[k]
			if op.Table != table {
				continue
			}
			switch op.Kind {
			case storage.OpPut:
				if op.Key == key {
					return true, true
				}
			case storage.OpDelete:
				if op.Key == key {
					return false, true
				}
			case storage.OpDeletePrefix:
				if strings.HasPrefix(key, op.Key) {
					return false, true
				}
			}
		}
	}
	return false, false
}

// Declare creates a table or changes its copy type. A change from ram to disc
// takes a snapshot before returning, so the table's rows are on disk.
func (s *Store) Declare(ctx context.Context, spec storage.TableSpec) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: declare: %w", err)
	}
	cmd := tables.DeclareCommand(spec)
	// Validate on a scratch state first so a bad spec is never logged.
	if err := tables.New().Apply(cmd); err != nil {
		return fmt.Errorf("storage: declare: %w", err)
	}
	s.jmu.Lock()
	s.commit() // everything checked before this Declare goes first
	s.wmu.Lock()
	if !s.running {
		s.wmu.Unlock()
		s.jmu.Unlock()
		return fmt.Errorf("%w: store not running", storage.ErrUnavailable)
	}
	old, existed := s.state.Spec(spec.Name)
	if existed && old.Copy == spec.Copy {
		s.wmu.Unlock()
		s.jmu.Unlock()
		return nil
	}
	if s.j != nil && s.lost == nil {
		p := cmd.Encode(nil)
		if err := s.j.appendBatch([]record{{seq: s.seq + 1, payload: p}}); err != nil {
			s.loseLocked(err)
		} else {
			s.seq++
			s.since += int64(len(p) + recHeader)
		}
	} else if s.j != nil && s.repersisting {
		s.seq++
		s.suffix = append(s.suffix, record{seq: s.seq, payload: cmd.Encode(nil)})
	}
	if s.lost != nil && s.cfg.OnLoss == "read-only" {
		s.wmu.Unlock()
		s.jmu.Unlock()
		return fmt.Errorf("%w: storage lost (read-only): %v", storage.ErrUnavailable, s.lost)
	}
	err := s.state.Apply(cmd)
	s.wmu.Unlock()
	s.jmu.Unlock()
	if err != nil {
		return fmt.Errorf("storage: declare: %w", err)
	}
	if existed && s.j != nil {
		if spec.Copy == storage.Disc {
			return s.Snapshot(ctx)
		}
		s.snapshotAsync() // drop the rows now kept only in RAM from disk
	}
	return nil
}

// Durable returns a read handle on a declared table.
func (s *Store) Durable(name string) (storage.Table, error) { return s.state.Table(name) }

// commitMetric is the go-metrics key of Apply's latency.
var commitMetric = []string{"storage", "local", "commit"}

// Apply commits a batch atomically: persisted (fdatasync) before it returns.
// Concurrent Applies share one write and one fdatasync (group commit); each
// is checked against the state plus the batches queued before it.
func (s *Store) Apply(ctx context.Context, ops ...storage.Op) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: apply: %w", err)
	}
	if len(ops) == 0 {
		return nil
	}
	// Commit latency as callers see it (xmppd exports it as
	// xmppd_storage_commit_seconds; a no-op unless a go-metrics sink is set).
	defer gometrics.MeasureSince(commitMetric, time.Now())
	s.wmu.Lock()
	if !s.running {
		s.wmu.Unlock()
		return fmt.Errorf("%w: store not running", storage.ErrUnavailable)
	}
	if err := s.checkLocked(ops); err != nil {
		s.wmu.Unlock()
		return err
	}
	if s.lost != nil && s.cfg.OnLoss == "read-only" {
		s.wmu.Unlock()
		return fmt.Errorf("%w: storage lost (read-only): %v", storage.ErrUnavailable, s.lost)
	}
	b := &batch{ops: make([]storage.Op, len(ops)), done: make(chan error, 1)}
	for i, op := range ops {
		op.Cond = storage.CondNone
		b.ops[i] = op
	}
	s.queue = append(s.queue, b)
	s.wmu.Unlock()
	s.jmu.Lock()
	defer s.jmu.Unlock()
	for { // each commit takes at least the oldest queued batch; b is queued
		select {
		case err := <-b.done: // committed by us or by an earlier committer
			return err
		default:
		}
		s.commit()
	}
}

func (s *Store) snapshotAsync() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.running || s.snapPending {
		return
	}
	s.snapPending = true
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		if err := s.Snapshot(context.Background()); err != nil {
			s.log.Error("snapshot failed", "err", err)
		}
		s.wmu.Lock()
		s.snapPending = false
		s.wmu.Unlock()
	}()
}

// Snapshot writes a snapshot of the disc tables and truncates the log. It runs
// without blocking Apply except for a log rotation.
func (s *Store) Snapshot(ctx context.Context) error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.jmu.Lock() // no group commit in flight: state and seq agree
	s.wmu.Lock()
	if s.j == nil || s.lost != nil || !s.running {
		s.wmu.Unlock()
		s.jmu.Unlock()
		return nil
	}
	seq := s.seq
	view := s.state.View()
	if err := s.j.rotate(seq + 1); err != nil {
		s.loseLocked(err)
		s.wmu.Unlock()
		s.jmu.Unlock()
		return fmt.Errorf("storage: snapshot: %w", err)
	}
	s.since = 0
	s.wmu.Unlock()
	s.jmu.Unlock()
	err := s.j.writeSnapshot(seq, func(w io.Writer) error {
		_, err := view.WriteTo(w, tables.DiscData)
		return err
	})
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err != nil {
		s.loseLocked(err)
		return fmt.Errorf("storage: snapshot: %w", err)
	}
	s.gen++
	return nil
}

// Ephemeral returns this node's view of a node-owned table.
func (s *Store) Ephemeral(name string) storage.Ephemeral {
	s.wmu.Lock()
	e := s.eph
	if e == nil { // used before Start: keep working, in RAM
		s.eph = ephemeral.New(s.cfg.Node, s.inc)
		e = s.eph
	}
	s.wmu.Unlock()
	return e.Table(name)
}

// Tables describes every table.
func (s *Store) Tables() []storage.TableInfo {
	out := s.state.Info()
	s.wmu.Lock()
	e := s.eph
	s.wmu.Unlock()
	if e != nil {
		out = append(out, e.Info()...)
	}
	return out
}

// Status describes the store. Generation counts snapshots since start (+1);
// AppliedIdx is the last committed log record.
func (s *Store) Status() storage.Status {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	st := storage.Status{
		Mode:       "durable",
		Backend:    "local",
		Generation: s.gen,
		Node:       s.cfg.Node,
		Leader:     s.cfg.Node,
		Role:       "voter",
		AppliedIdx: s.seq,
	}
	switch {
	case s.j == nil:
		st.Mode = "ram-only"
		st.Detail = "no data directory: nothing is persisted"
	case s.lost != nil && s.cfg.OnLoss == "read-only":
		st.Mode = "read-only"
		st.Detail = "storage lost: " + s.lost.Error()
	case s.lost != nil:
		st.Mode = "degraded-ram"
		st.Detail = "storage lost, committing in RAM only: " + s.lost.Error()
	default:
		st.Detail = s.where()
		if s.rec.Stopped != "" {
			st.Detail += fmt.Sprintf("; recovery stopped early (%s); %d bytes saved as *.corrupt", s.rec.Stopped, s.rec.DroppedBytes)
		}
	}
	if !s.running {
		st.Detail = strings.TrimSpace("stopped " + st.Detail)
	}
	return st
}

var _ storage.Service = (*Store)(nil)

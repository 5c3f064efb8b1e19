package replicated

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"xedge/internal/backoff"
	"xedge/storage"
	"xedge/storage/blocklog"
	"xedge/storage/tables"
)

// stores is raft's LogStore, StableStore and SnapshotStore. With a device it
// is a storage/blocklog Store — xedge's one crash-tested on-device layout
// (docs/storage.md): a RAM copy that raft reads plus write-through to the
// device, whose errors never reach raft (raft panics on a StableStore error)
// but latch "storage lost". Without a device it is raft's in-memory stores.
//
// Around the block log, stores tells the Store when the node's storage is
// lost or back (onChange: RAM-only, step down, demotion; promotion), probes an
// idle device so a loss is noticed without writes, re-persists the RAM state
// into a new generation once the device answers again (blocklog.Repersist:
// the bulk copy and most of the catch-up run outside the store's locks), and
// asks raft for a snapshot when the log region fills.
//
// What reaches the device never carries a RAM table's rows: the block log
// writes entries through redactLog and snapshots through redactSnapshot, while
// raft reads the full entries and snapshots from RAM (a leader replicates RAM
// ops to lagging followers and sends RAM rows in InstallSnapshot).
type stores struct {
	raft.LogStore
	raft.StableStore
	raft.SnapshotStore
	bl  *blocklog.Store // nil: no device, RAM-only for good
	log *slog.Logger

	mu        sync.Mutex
	reported  bool // the durable state onChange was last told (or started with)
	lossAt    time.Time
	lastProbe time.Time

	kick     chan struct{} // wake the background loop
	onChange func(bool)    // called with durable=true/false on transitions
	onFull   func()        // asks raft for a snapshot: the log region is filling (set before run)
	filling  atomic.Value  // func(): onFull, for the block log's Filling callback
	probe    time.Duration // first probe interval while lost
	now      func() time.Time
}

// openStores loads raft's state from dev (nil: RAM only). wipe discards what
// the device holds (the node ran RAM-only, or left the cluster) and starts a
// new, empty generation. A device holding a half re-persisted layout (a
// re-persist stopped midway) is wiped too: it is not a past state of this
// node. A device that does not answer gives RAM-only stores whose background
// loop takes the device over once it answers; a device holding foreign data or
// a corrupt layout is an error (nothing is guessed or overwritten). canRejoin
// false (no Join seeds) refuses to wipe a partial layout: the node would
// bootstrap a cluster of its own (ErrStateDiscarded).
func openStores(dev storage.BlockDevice, wipe, canRejoin bool, log *slog.Logger) (*stores, error) {
	s := &stores{log: log, kick: make(chan struct{}, 1), probe: 100 * time.Millisecond, now: time.Now}
	if dev == nil {
		ls := raft.NewInmemStore()
		s.LogStore, s.StableStore, s.SnapshotStore = ls, ls, raft.NewInmemSnapshotStore()
		return s, nil
	}
	opts := blocklog.Options{Logger: log, Wipe: wipe, DeviceLog: redactLog, DeviceSnapshot: redactSnapshot}
	opts.Filling = func() {
		if f, _ := s.filling.Load().(func()); f != nil {
			f()
		}
	}
	bl, err := blocklog.OpenOrLost(dev, opts)
	if err != nil {
		return nil, fmt.Errorf("replicated: storage device: %w", err)
	}
	if !wipe && bl.Err() == nil && bl.Recovery().Partial {
		if !canRejoin {
			return nil, fmt.Errorf("replicated: %w (the device holds a half re-persisted layout: this node crashed while re-persisting after a storage loss) "+
				"and it has no Join seeds: give the cluster's addresses as Join seeds to rejoin", ErrStateDiscarded)
		}
		log.Warn("the device holds a half re-persisted layout (this node crashed while re-persisting after a storage loss): wiping it; the node rejoins under a fresh ID")
		opts.Wipe = true
		if bl, err = blocklog.OpenOrLost(dev, opts); err != nil {
			return nil, fmt.Errorf("replicated: storage device: %w", err)
		}
	}
	s.bl = bl
	s.LogStore, s.StableStore, s.SnapshotStore = bl, bl, bl
	s.reported = bl.Err() == nil
	if !s.reported {
		<-bl.Lost() // reported here, once
		s.lossAt = s.now()
		log.Warn("storage unreadable at start; running RAM-only until it answers", "err", bl.Err())
	}
	return s, nil
}

// wiped reports whether the device state was discarded at open.
func (s *stores) wiped() bool { return s.bl != nil && s.bl.Recovery().Wiped }

// durable reports whether writes currently reach the device.
func (s *stores) durable() bool { return s.bl != nil && s.bl.Err() == nil }

// generation is the device layout's generation (blocklog.Store.Generation).
func (s *stores) generation() uint64 {
	if s.bl == nil {
		return 0
	}
	return s.bl.Generation()
}

// logCapacity is the size of the device's log region (0: no device).
func (s *stores) logCapacity() int64 {
	if s.bl == nil {
		return 0
	}
	_, c := s.bl.LogUsage()
	return c
}

func (s *stores) lostSince() (time.Time, error) {
	if s.bl == nil {
		return time.Time{}, nil
	}
	err := s.bl.Err()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		return time.Time{}, nil
	}
	return s.lossAt, err
}

func (s *stores) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// transition tells onChange about a change of the durable state, once.
func (s *stores) transition(durable bool) {
	s.mu.Lock()
	changed := s.reported != durable
	s.reported = durable
	if changed && !durable {
		s.lossAt = s.now()
	}
	s.mu.Unlock()
	if changed && s.onChange != nil {
		s.onChange(durable)
	}
}

// run is the background loop: loss notification, idle probes, log-region
// watch, and re-persist with backoff while storage is lost. It returns when
// ctx is done.
func (s *stores) run(ctx context.Context) {
	if s.bl == nil {
		return
	}
	if s.onFull != nil {
		s.filling.Store(s.onFull)
	}
	// While lost: re-persist every 2*probe doubling to 2s at most (a frozen
	// target's reads also take long, and the node should be durable soon
	// after it thaws; a LUN that reads but refuses writes costs a read of its
	// layout per attempt). Otherwise every probe.
	bo := backoff.Backoff{Min: 2 * s.probe, Max: max(2*time.Second, 2*s.probe)}
	wait := s.probe
	timer := time.NewTimer(wait)
	defer timer.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.bl.Lost():
		case <-s.kick:
		case <-timer.C:
		}
		if s.bl.Err() != nil {
			s.transition(false)
			start := s.now()
			if err := s.bl.Repersist(); err != nil {
				if err.Error() != lastErr {
					lastErr = err.Error()
					s.log.Warn("storage still lost; re-persist failed (retrying)", "err", err)
				}
				wait = bo.Next()
			} else {
				lastErr, wait = "", s.probe
				bo.Reset()
				s.log.Info("storage re-persisted into a new generation", "generation", s.bl.Generation(),
					"took", s.now().Sub(start).Round(time.Millisecond))
				s.transition(true)
			}
		} else {
			wait = s.probe
			bo.Reset()
			now := s.now()
			if now.Sub(s.lastProbe) >= 5*s.probe {
				// A read every ~second: a device lost while nothing is
				// written is noticed (and the node demoted) all the same.
				s.lastProbe = now
				if s.bl.Probe() != nil {
					s.wake()
				}
			}
			if used, capacity := s.bl.LogUsage(); capacity > 0 && used > capacity/2 && s.onFull != nil {
				s.onFull() // also asked by the block log itself, at every frame (Filling)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// waitLogRoom is the write path's backpressure: while the device's log region
// is more than three quarters full it asks for a snapshot (whose compaction
// frees the region) and holds the caller back until there is room again, or
// bound has passed. Without it a writer faster than a CPU-starved snapshot ran
// the region full, and a full region latches storage loss (the node went
// RAM-only although its device was fine). What raft already has in flight
// fits in the last quarter. It returns how long the caller waited.
func (s *stores) waitLogRoom(bound time.Duration) time.Duration {
	if s == nil || s.bl == nil {
		return 0
	}
	used, capacity := s.bl.LogUsage()
	if capacity == 0 || used <= capacity/4*3 || s.bl.Err() != nil {
		return 0
	}
	start := time.Now()
	for {
		if s.onFull != nil {
			s.onFull()
		}
		used, capacity = s.bl.Reclaim()
		if used <= capacity/4*3 || s.bl.Err() != nil || time.Since(start) >= bound {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// snapshotIndex is the index of the snapshot kept (0: none).
func (s *stores) snapshotIndex() uint64 {
	metas, err := s.List()
	if err != nil || len(metas) == 0 {
		return 0
	}
	return metas[0].Index
}

// Redaction: what reaches the device never carries a RAM table's rows. The
// device gets entries whose RAM ops are replaced by stubs
// (tables.Command.Redacted, which needs no state: every op is marked with its
// copy type by the proposer) and snapshots without RAM rows (redactSnapshot).

// redactLog returns l, or a copy of it whose RAM ops are redacted.
func redactLog(l *raft.Log) *raft.Log {
	if l.Type != raft.LogCommand {
		return l
	}
	data, prefix := l.Data, []byte(nil)
	if len(data) > 1+requestIDLen && data[0] == entryRequest {
		data, prefix = data[1+requestIDLen:], data[:1+requestIDLen]
	}
	if len(data) < 3 || data[0] != entryTables || data[1] != byte(tables.CmdApply) || data[2] != 2 {
		return l // only version-2 (marked) apply commands carry RAM ops to remove
	}
	cmd, err := tables.DecodeCommand(data[1:])
	if err != nil {
		return l
	}
	red, changed := cmd.Redacted()
	if !changed {
		return l
	}
	c := *l
	c.Data = encodeTables(red)
	if prefix != nil {
		c.Data = append(append([]byte(nil), prefix...), c.Data...)
	}
	return &c
}

package blockdev

import (
	"fmt"
	"math/rand"
	"sync"

	"xedge/storage"
)

// FaultMode is how a Fault device fails at its FailAt-th write.
type FaultMode int

const (
	// Drop: the FailAt-th and every later write report success but never reach
	// the disk (a device that vanished behind a write cache); every later Sync
	// fails.
	Drop FaultMode = iota
	// Tear: power fails during the FailAt-th write: a prefix of its sectors
	// reaches the disk, and the sector after the prefix may hold garbage in its
	// tail; every later write is dropped and every later Sync fails.
	Tear
	// Error: the FailAt-th and every later write and Sync return ErrInjected
	// (a dead disk or a lost LUN).
	Error
	// LostSync: power fails during the FailAt-th Sync (FailAt counts Syncs in
	// this mode): it returns ErrInjected, any subset of the cached writes may
	// have reached the disk, every later write is dropped and Sync fails.
	LostSync
)

func (m FaultMode) String() string {
	switch m {
	case Drop:
		return "drop"
	case Tear:
		return "tear"
	case Error:
		return "error"
	case LostSync:
		return "lost-sync"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// FaultConfig configures a Fault device.
type FaultConfig struct {
	// FailAt is the 1-based number of the write (of the Sync, in mode
	// LostSync) that fails; 0 never fails.
	FailAt int
	Mode   FaultMode
	// Seed drives every random choice: which unsynced sectors survive a crash
	// and how the failing write tears.
	Seed int64
	// SectorSize is the unit a disk writes atomically (default 512).
	SectorSize int
}

type pendingWrite struct {
	off  int64
	p    []byte
	torn bool
}

// Fault wraps a device with a volatile write cache and a failure: writes
// stay in the cache until Sync copies them to the wrapped device; Crash models a
// power loss, after which the wrapped device holds what a real disk could hold:
// everything synced, plus any subset of the sectors written since the last
// successful Sync, plus a torn prefix of the failing write (Tear).
type Fault struct {
	base storage.BlockDevice
	cfg  FaultConfig
	rng  *rand.Rand

	mu      sync.Mutex
	writes  int
	syncs   int
	failed  bool
	pending []pendingWrite
}

var _ storage.BlockDevice = (*Fault)(nil)

// NewFault wraps base.
func NewFault(base storage.BlockDevice, cfg FaultConfig) *Fault {
	if cfg.SectorSize <= 0 {
		cfg.SectorSize = 512
	}
	if bs := base.BlockSize(); cfg.SectorSize > bs || bs%cfg.SectorSize != 0 {
		cfg.SectorSize = bs
	}
	return &Fault{base: base, cfg: cfg, rng: rand.New(rand.NewSource(cfg.Seed))}
}

// Syncs returns how many Sync calls the device has seen.
func (f *Fault) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// Writes returns how many WriteAt calls the device has seen.
func (f *Fault) Writes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writes
}

// Failed reports whether the fault has happened.
func (f *Fault) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *Fault) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed && f.cfg.Mode == Error {
		return 0, fmt.Errorf("read: %w", ErrInjected)
	}
	n, err := f.base.ReadAt(p, off)
	if err != nil {
		return n, err
	}
	for _, w := range f.pending { // the cache answers reads
		if w.torn {
			continue
		}
		lo, hi := max(off, w.off), min(off+int64(len(p)), w.off+int64(len(w.p)))
		if lo < hi {
			copy(p[lo-off:hi-off], w.p[lo-w.off:hi-w.off])
		}
	}
	return n, nil
}

func (f *Fault) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := checkWrite(p, off, f.base.Size(), f.base.BlockSize()); err != nil {
		return 0, err
	}
	f.writes++
	if f.cfg.Mode != LostSync && f.cfg.FailAt > 0 && f.writes == f.cfg.FailAt {
		f.failed = true
		switch f.cfg.Mode {
		case Tear:
			f.pending = append(f.pending, pendingWrite{off: off, p: append([]byte(nil), p...), torn: true})
			return len(p), nil
		case Error:
			return 0, fmt.Errorf("write %d: %w", f.writes, ErrInjected)
		}
		return len(p), nil
	}
	if f.failed {
		if f.cfg.Mode == Error {
			return 0, fmt.Errorf("write %d: %w", f.writes, ErrInjected)
		}
		return len(p), nil // dropped
	}
	f.pending = append(f.pending, pendingWrite{off: off, p: append([]byte(nil), p...)})
	return len(p), nil
}

// Sync makes the cached writes durable, or fails once the fault happened.
func (f *Fault) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	if f.cfg.Mode == LostSync && f.cfg.FailAt > 0 && f.syncs == f.cfg.FailAt {
		f.failed = true // the cache stays pending: Crash keeps a random subset
	}
	if f.failed {
		return fmt.Errorf("sync: %w", ErrInjected)
	}
	for _, w := range f.pending {
		if _, err := f.base.WriteAt(w.p, w.off); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
	}
	f.pending = f.pending[:0]
	return f.base.Sync()
}

// Crash simulates a power loss: it writes to the wrapped device a random
// subset of the sectors of every unsynced write (in write order) and the torn
// prefix of the failing write, then forgets the cache. The wrapped device then
// holds the surviving bytes; reopen a store on it to check recovery.
func (f *Fault) Crash() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ss := f.cfg.SectorSize
	bs := f.base.BlockSize()
	for _, w := range f.pending {
		n := len(w.p) / ss
		if w.torn {
			k := f.rng.Intn(n) // sectors [0,k) made it, sector k did not (fully)
			f.writeSectors(w, 0, k)
			if f.rng.Intn(2) == 0 {
				// Garbage in the tail of sector k: read-modify-write its block.
				blk := make([]byte, bs)
				boff := w.off + int64(k*ss) - (w.off+int64(k*ss))%int64(bs)
				if _, err := f.base.ReadAt(blk, boff); err != nil {
					return fmt.Errorf("crash: %w", err)
				}
				so := int(w.off + int64(k*ss) - boff)
				half := ss / 2
				copy(blk[so:so+half], w.p[k*ss:k*ss+half])
				f.rng.Read(blk[so+half : so+ss])
				if _, err := f.base.WriteAt(blk, boff); err != nil {
					return fmt.Errorf("crash: %w", err)
				}
			}
			continue
		}
		for s := 0; s < n; s++ {
			if f.rng.Intn(2) == 0 {
				f.writeSectors(w, s, s+1)
			}
		}
	}
	f.pending = nil
	return nil
}

// writeSectors persists sectors [from,to) of w, through whole blocks of the
// wrapped device (read-modify-write when a sector is smaller than a block).
func (f *Fault) writeSectors(w pendingWrite, from, to int) {
	ss := f.cfg.SectorSize
	bs := f.base.BlockSize()
	for s := from; s < to; s++ {
		off := w.off + int64(s*ss)
		boff := off - off%int64(bs)
		blk := make([]byte, bs)
		if _, err := f.base.ReadAt(blk, boff); err != nil {
			continue
		}
		copy(blk[off-boff:], w.p[s*ss:(s+1)*ss])
		f.base.WriteAt(blk, boff)
	}
}

func (f *Fault) Size() int64    { return f.base.Size() }
func (f *Fault) BlockSize() int { return f.base.BlockSize() }

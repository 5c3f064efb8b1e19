package local

import (
	"context"
	"errors"
	"fmt"
	"io"

	"xedge/storage/blocklog"
	"xedge/storage/tables"
)

// Repersist ends a storage loss (DESIGN decision 5): once the data directory
// or device works again, it opens the journal afresh, writes a snapshot of the
// current RAM state into it in the background (Applies keep committing in RAM
// meanwhile), then, briefly holding the write path, appends the batches
// committed since that snapshot and returns the store to durable mode. It
// fails, leaving the store as it was, if the storage still fails. Call it
// when the device reports it is back, or periodically while Status().Mode is
// degraded-ram or read-only.
func (s *Store) Repersist(ctx context.Context) error {
	s.repMu.Lock()
	defer s.repMu.Unlock()
	s.snapMu.Lock() // a snapshot begun before the loss must not share the files
	defer s.snapMu.Unlock()
	s.wmu.Lock()
	lost, running := s.lost, s.running
	s.wmu.Unlock()
	if !running {
		return fmt.Errorf("storage: repersist: store not running")
	}
	if lost == nil {
		return nil
	}
	nj, err := s.openJournal()
	if err != nil {
		return fmt.Errorf("storage: repersist: %w", err)
	}
	s.wmu.Lock()
	oldj := s.j
	s.wmu.Unlock()
	if ob, ok := oldj.(*blockJournal); ok {
		nb := nj.(*blockJournal)
		if !nb.bl.Recovery().Formatted && nb.bl.LayoutID() != ob.bl.LayoutID() {
			return fmt.Errorf("storage: repersist: %w: the device holds another layout; wipe it to re-persist onto it", blocklog.ErrForeign)
		}
	}
	// Find the end of what the storage holds (and cut torn tails); the
	// content itself is superseded by the snapshot below.
	scratch := tables.New()
	rec, err := nj.recover(scratch.Restore, func(uint64, []byte) error { return nil })
	if err != nil {
		nj.close()
		return fmt.Errorf("storage: repersist: %w", err)
	}

	// 1. A consistent view at seq X; from now on commits keep their records.
	s.jmu.Lock()
	s.wmu.Lock()
	s.seq = max(s.seq, rec.LastSeq)
	x := s.seq
	view := s.state.View()
	s.repersisting, s.suffix = true, nil
	s.wmu.Unlock()
	s.jmu.Unlock()
	abort := func(err error) error {
		s.wmu.Lock()
		s.repersisting, s.suffix = false, nil
		s.wmu.Unlock()
		nj.close()
		return fmt.Errorf("storage: repersist: %w", err)
	}

	// 2. The snapshot, without holding any store lock.
	if err := ctx.Err(); err != nil {
		return abort(err)
	}
	if err := nj.rotate(x + 1); err != nil {
		return abort(err)
	}
	err = nj.writeSnapshot(x, func(w io.Writer) error {
		_, err := view.WriteTo(w, tables.DiscData)
		return err
	})
	if err != nil {
		return abort(err)
	}

	// 3. The suffix, then switch over.
	s.jmu.Lock()
	defer s.jmu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(s.suffix) > 0 {
		if err := nj.appendBatch(s.suffix); err != nil {
			s.repersisting, s.suffix = false, nil
			nj.close()
			return fmt.Errorf("storage: repersist: %w", err)
		}
	}
	old := s.j
	s.j, s.lost, s.repersisting, s.suffix, s.since = nj, nil, false, nil, 0
	s.gen++
	if old != nil {
		if err := old.close(); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Debug("closing the old journal", "err", err)
		}
	}
	s.log.Info("storage back: state re-persisted", "snapshot_seq", x, "last_seq", s.seq)
	return nil
}

package blocklog

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/hashicorp/raft"
)

// Repersist ends a storage loss (DESIGN decision 5) once the device works
// again: it checks from the superblocks that the device is blank or holds
// this store's layout (any xedge layout if the store has not read the device
// since OpenOrLost), formats a fresh layout over it — next generation, new
// nonce, flagged partial — and, without holding the store's locks for the
// bulk copy, writes the RAM state into it — the current snapshot,
// exactly the stable keys, every log entry — and replays the changes made
// meanwhile, in rounds outside the locks while the backlog is large, the last
// few under them. Then it resumes write-through. It returns an error, changing
// nothing in RAM, while the device still fails. Raft keeps running on the RAM
// copy throughout.
//
// The rewrite is not atomic: its first superblock (the format) empties the
// layout and sets the partial flag, its last one clears the flag. A crash in between leaves a
// layout that Open reports as Recovery().Partial — neither the old state nor
// the new one — so that a caller whose device state must be a past state of
// its own (a raft voter) wipes it instead of trusting it.
func (s *Store) Repersist() error {
	s.repMu.Lock()
	defer s.repMu.Unlock()
	s.ioMu.Lock()
	if s.lost == nil {
		s.ioMu.Unlock()
		return nil
	}
	adopt := s.sb == nil
	var ourGen, ourNonce uint64
	if !adopt {
		ourGen, ourNonce = s.sb.gen, s.sb.nonce
	}
	s.ioMu.Unlock()

	if !adopt {
		// Judge what the device holds from its superblocks alone (its log
		// region is not read: everything is rewritten): blank, this store's
		// layout, or another one — never overwritten.
		bs := s.dev.BlockSize()
		if bs <= 0 || bs&(bs-1) != 0 {
			return fmt.Errorf("blocklog: repersist: %w", errNotReady)
		}
		probe := &Store{dev: s.dev, bs: bs, sbSize: max(sbMinSize, bs), log: s.log}
		sb, err := probe.readSuperblocks()
		switch {
		case errors.Is(err, errNoMagic): // a blank replacement
		case err != nil:
			return fmt.Errorf("blocklog: repersist: %w", err)
		case sb.nonce != ourNonce && !slices.Contains(s.repNonces, sb.nonce):
			// Another node's LUN, or a disk someone reformatted (not a
			// layout an earlier attempt here formatted and did not finish).
			return fmt.Errorf("blocklog: repersist: %w: the device holds another layout (nonce %016x, ours %016x); wipe it to re-persist onto it",
				ErrForeign, sb.nonce, ourNonce)
		}
	}
	// A fresh layout (new nonce, next generation) flagged partial from its
	// first superblock: the stale frames of the old one can never be read as
	// its own, so its log region need not be read.
	o := s.opts
	o.Wipe, o.partial = true, true
	// The nonce is chosen and remembered before the format writes it: if the
	// device fails again before this attempt ends, it holds (a part of) this
	// layout, which the next attempt must recognise as this store's own.
	nonce, err := newNonce()
	if err != nil {
		return fmt.Errorf("blocklog: repersist: %w", err)
	}
	o.nonce = nonce
	if s.repNonces = append(s.repNonces, nonce); len(s.repNonces) > maxRepNonces {
		// The device holds the layout of a recent attempt: older ones were
		// overwritten by the formats since.
		s.repNonces = s.repNonces[len(s.repNonces)-maxRepNonces:]
	}
	t, err := Open(s.dev, o)
	if err != nil {
		return fmt.Errorf("blocklog: repersist: %w", err)
	}

	// Capture: O(entries) pointer copies under the locks, no I/O.
	s.ioMu.Lock()
	s.mu.RLock()
	snap := s.snap
	kv := make(map[string][]byte, len(s.kv))
	for k, v := range s.kv {
		kv[k] = v
	}
	logs := make([]*raft.Log, 0, len(s.logs))
	for _, l := range s.logs {
		logs = append(logs, l)
	}
	s.mu.RUnlock()
	s.capturing, s.journal = true, nil
	s.ioMu.Unlock()
	stopCapture := func() {
		s.ioMu.Lock()
		s.capturing, s.journal = false, nil
		s.ioMu.Unlock()
	}
	sort.Slice(logs, func(i, j int) bool { return logs[i].Index < logs[j].Index })

	// Bulk copy onto the new generation, no store lock held.
	gen := max(ourGen+1, t.sb.gen)
	if err := t.copyFrom(gen, snap, kv, logs); err != nil {
		stopCapture()
		return fmt.Errorf("blocklog: repersist: %w", err)
	}
	// Catch up with what raft wrote meanwhile, outside the lock while the
	// backlog is big (a long copy must not end in a long stall).
	for range 16 {
		s.ioMu.Lock()
		j := s.journal
		if len(j) <= 64 {
			s.ioMu.Unlock()
			break
		}
		s.journal = nil
		s.ioMu.Unlock()
		if err := t.replayJournal(j); err != nil {
			stopCapture()
			return fmt.Errorf("blocklog: repersist: %w", err)
		}
	}

	// The rest under the lock, then adopt the new layout.
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	err = t.replayJournal(s.journal)
	if err == nil {
		err = t.finishCopy()
	}
	if err != nil {
		s.capturing, s.journal = false, nil
		return fmt.Errorf("blocklog: repersist: %w", err)
	}
	s.bs, s.sbSize = t.bs, t.sbSize
	s.sb, s.frames, s.tail, s.used, s.nextSeq = t.sb, t.frames, t.tail, t.used, t.nextSeq
	s.snapSeqRAM = max(s.snapSeqRAM, t.snapSeqRAM)
	s.lost, s.capturing, s.journal = nil, false, nil
	s.repNonces = nil
	s.log.Info("storage back: RAM state re-persisted", "entries", len(logs), "generation", s.sb.gen, "superblock", s.sb.seq)
	return nil
}

// maxRepNonces bounds the unfinished re-persist layouts remembered.
const maxRepNonces = 16

// replay applies changes captured during a Repersist to t.
func (t *Store) replayJournal(ops []func(*Store) error) error {
	for _, op := range ops {
		if err := op(t); err != nil {
			return err
		}
		if err := t.Err(); err != nil {
			return err
		}
	}
	return nil
}

// copyFrom makes t hold exactly snap, kv and logs, as generation gen, with the
// partial flag set (finishCopy clears it). Its first superblock empties the
// layout at once (ring, snapshot, stable keys), so a ring full of sparse
// frames is no obstacle: the copy is written densely.
func (t *Store) copyFrom(gen uint64, snap *snapshot, kv map[string][]byte, logs []*raft.Log) error {
	t.ioMu.Lock()
	nsb := t.sb.clone()
	nsb.seq++
	nsb.gen, nsb.flags = gen, nsb.flags|flagPartial
	nsb.headOff, nsb.headSeq = uint64(t.tail), t.nextSeq
	nsb.snapSlot = noSnapshot
	nsb.kv = make(map[string][]byte, len(kv))
	for k, v := range kv {
		nsb.kv[k] = v
	}
	err := t.writeSuperblock(nsb)
	if err == nil {
		t.sb, t.frames, t.used = nsb, nil, 0
		t.mu.Lock()
		t.logs, t.first, t.last, t.snap = make(map[uint64]*raft.Log), 0, 0, nil
		t.kv = make(map[string][]byte, len(kv))
		for k, v := range kv {
			t.kv[k] = v
		}
		t.mu.Unlock()
	}
	t.ioMu.Unlock()
	if err != nil {
		return err
	}
	if snap != nil {
		if err := t.writeSnapshot(snap.meta, snap.data); err != nil {
			return err
		}
	}
	// Frames of at most an eighth of the ring.
	limit := int64(t.sb.logLen) / 8
	for len(logs) > 0 {
		n, size := 0, int64(0)
		for n < len(logs) && (n == 0 || size+int64(len(logs[n].Data)+len(logs[n].Extensions)+40) <= limit) {
			size += int64(len(logs[n].Data) + len(logs[n].Extensions) + 40)
			n++
		}
		if err := t.StoreLogs(logs[:n]); err != nil {
			return err
		}
		if err := t.Err(); err != nil {
			return err
		}
		logs = logs[n:]
	}
	return t.Err()
}

// finishCopy clears the partial flag: the layout now holds the store's state.
func (t *Store) finishCopy() error {
	t.ioMu.Lock()
	defer t.ioMu.Unlock()
	if t.lost != nil {
		return t.lost
	}
	nsb := t.sb.clone()
	nsb.seq++
	nsb.flags &^= flagPartial
	if err := t.writeSuperblock(nsb); err != nil {
		return err
	}
	t.sb = nsb
	return nil
}

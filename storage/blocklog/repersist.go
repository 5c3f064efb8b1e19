package blocklog

import (
	"fmt"
	"sort"

	"github.com/hashicorp/raft"
)

// Repersist ends a storage loss (DESIGN decision 5) once the device works
// again: it opens the layout afresh (formatting a blank replacement device),
// copies the RAM state into it — the current snapshot, every stable key and
// every log entry, replacing whatever the device held — without holding the
// store's locks for the bulk copy, then replays the changes made meanwhile
// and resumes write-through. It returns an error, changing nothing, while the
// device still fails. Raft keeps running on the RAM copy throughout.
func (s *Store) Repersist() error {
	s.repMu.Lock()
	defer s.repMu.Unlock()
	s.ioMu.Lock()
	if s.lost == nil {
		s.ioMu.Unlock()
		return nil
	}
	s.ioMu.Unlock()

	t, err := Open(s.dev, s.opts)
	if err != nil {
		return fmt.Errorf("blocklog: repersist: %w", err)
	}
	if !t.rec.Formatted && t.sb.nonce != s.sb.nonce {
		// Not our layout and not blank: another node's LUN, or a disk someone
		// reformatted. Never overwrite it.
		return fmt.Errorf("blocklog: repersist: %w: the device holds another layout (nonce %016x, ours %016x); wipe it to re-persist onto it",
			ErrForeign, t.sb.nonce, s.sb.nonce)
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

	// Bulk copy onto the new layout, no store lock held.
	if err := t.copyFrom(snap, kv, logs); err != nil {
		stopCapture()
		return fmt.Errorf("blocklog: repersist: %w", err)
	}

	// Replay what changed meanwhile, then adopt the new layout.
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	for _, op := range s.journal {
		if err := op(t); err == nil {
			err = t.lost
		}
		if err != nil {
			s.capturing, s.journal = false, nil
			return fmt.Errorf("blocklog: repersist: %w", err)
		}
	}
	if t.lost != nil {
		s.capturing, s.journal = false, nil
		return fmt.Errorf("blocklog: repersist: %w", t.lost)
	}
	s.sb, s.frames, s.tail, s.used, s.nextSeq = t.sb, t.frames, t.tail, t.used, t.nextSeq
	s.snapSeqRAM = max(s.snapSeqRAM, t.snapSeqRAM)
	s.lost, s.capturing, s.journal = nil, false, nil
	s.log.Info("storage back: RAM state re-persisted", "entries", len(logs), "superblock", s.sb.seq)
	return nil
}

// copyFrom makes t hold exactly snap, kv and logs.
func (t *Store) copyFrom(snap *snapshot, kv map[string][]byte, logs []*raft.Log) error {
	if snap != nil {
		if err := t.writeSnapshot(snap.meta, snap.data); err != nil {
			return err
		}
	}
	if first, _ := t.FirstIndex(); first != 0 {
		last, _ := t.LastIndex()
		if err := t.DeleteRange(first, last); err != nil {
			return err
		}
	}
	for k, v := range kv {
		if err := t.Set([]byte(k), v); err != nil {
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
		if t.lost != nil {
			return t.lost
		}
		logs = logs[n:]
	}
	return t.lost
}

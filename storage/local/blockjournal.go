package local

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/raft"

	"xedge/storage"
	"xedge/storage/blocklog"
)

// journal is where the single-node store persists: a data directory
// (dirJournal) or a block device (blockJournal).
type journal interface {
	// recover restores the snapshot and replays the records after it.
	recover(restore func(io.Reader) error, replay func(seq uint64, payload []byte) error) (Recovery, error)
	// appendBatch writes records (consecutive seqs) durably, with one sync.
	appendBatch(recs []record) error
	// rotate prepares a snapshot covering every record before next.
	rotate(next uint64) error
	// writeSnapshot persists a snapshot covering records up to seq and drops them.
	writeSnapshot(seq uint64, write func(io.Writer) error) error
	// pressure reports whether the log should be compacted now regardless of
	// Config.SnapshotBytes (a ring filling up).
	pressure() bool
	close() error
}

var (
	_ journal = (*dirJournal)(nil)
	_ journal = (*blockJournal)(nil)
)

func (j *dirJournal) pressure() bool { return false }

// blockJournal keeps the single-node log on a BlockDevice through blocklog:
// each committed batch is one log entry (index = record seq), a snapshot is a
// blocklog snapshot at that index followed by DeleteRange of the log prefix.
type blockJournal struct {
	bl  *blocklog.Store
	log *slog.Logger
}

func openBlockJournal(dev storage.BlockDevice, log *slog.Logger) (*blockJournal, error) {
	bl, err := blocklog.Open(dev, blocklog.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	return &blockJournal{bl: bl, log: log}, nil
}

func (j *blockJournal) recover(restore func(io.Reader) error, replay func(uint64, []byte) error) (Recovery, error) {
	var rec Recovery
	list, _ := j.bl.List()
	if len(list) > 0 {
		_, rc, err := j.bl.Open(list[0].ID)
		if err != nil {
			return rec, fmt.Errorf("open snapshot: %w", err)
		}
		err = restore(rc)
		rc.Close()
		if err != nil {
			return rec, fmt.Errorf("snapshot %s: %w", list[0].ID, err)
		}
		rec.SnapshotSeq = list[0].Index
	}
	rec.LastSeq = rec.SnapshotSeq
	first, _ := j.bl.FirstIndex()
	last, _ := j.bl.LastIndex()
	if first > rec.SnapshotSeq+1 {
		rec.Stopped = fmt.Sprintf("log starts at record %d but the snapshot covers only up to %d", first, rec.SnapshotSeq)
		return rec, nil
	}
	for seq := rec.SnapshotSeq + 1; first != 0 && seq <= last; seq++ {
		var l raft.Log
		if err := j.bl.GetLog(seq, &l); err != nil {
			rec.Stopped = fmt.Sprintf("record %d missing from the log", seq)
			break
		}
		if err := replay(seq, l.Data); err != nil {
			rec.Stopped = fmt.Sprintf("record %d: %v", seq, err)
			break
		}
		rec.LastSeq = seq
		rec.Records++
	}
	if rec.LastSeq < last {
		// Drop what could not be replayed so new records continue cleanly.
		if err := j.bl.DeleteRange(rec.LastSeq+1, last); err != nil {
			return rec, err
		}
		if err := j.bl.Err(); err != nil {
			return rec, err
		}
	}
	if end := j.bl.Recovery().End; end != "end" {
		j.log.Warn("device log ended at a bad frame (a torn last write, or corruption)", "detail", end)
	}
	return rec, nil
}

// record is one journal record.
type record struct {
	seq     uint64
	payload []byte
}

func (j *blockJournal) appendBatch(recs []record) error {
	logs := make([]*raft.Log, len(recs))
	for i, r := range recs {
		logs[i] = &raft.Log{Index: r.seq, Term: 1, Type: raft.LogCommand, Data: r.payload}
	}
	// Keep each frame well inside the ring.
	_, capacity := j.bl.LogUsage()
	for len(logs) > 0 {
		n, size := 0, int64(0)
		for n < len(logs) && (n == 0 || size+int64(len(logs[n].Data)) <= capacity/8) {
			size += int64(len(logs[n].Data))
			n++
		}
		if err := j.bl.StoreLogs(logs[:n]); err != nil {
			return err
		}
		logs = logs[n:]
	}
	return j.bl.Err()
}

func (j *blockJournal) rotate(uint64) error { return nil }

func (j *blockJournal) writeSnapshot(seq uint64, write func(io.Writer) error) error {
	sink, err := j.bl.Create(raft.SnapshotVersionMax, seq, 1, raft.Configuration{}, 0, nil)
	if err != nil {
		return err
	}
	if err := write(sink); err != nil {
		sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	if first, _ := j.bl.FirstIndex(); first != 0 && first <= seq {
		if err := j.bl.DeleteRange(first, seq); err != nil {
			return err
		}
	}
	return j.bl.Err()
}

func (j *blockJournal) pressure() bool {
	used, capacity := j.bl.LogUsage()
	return used >= capacity/2
}

func (j *blockJournal) close() error { return nil }

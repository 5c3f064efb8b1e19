package local

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"xedge/storage/tables"
)

// Directory layout (see docs/storage.md):
//
//	DIR/snapshot                 header (magic "XLS1", seq u64 LE, crc32c u32 LE of
//	                             the 12 bytes before) + a tables snapshot
//	DIR/log-<20-digit seq>.wal   records, the first of which has that seq
//
// A record is: len u32 LE | crc32c u32 LE over (seq|payload) | seq u64 LE | payload.
const (
	recHeader    = 16
	maxRecord    = 256 << 20
	snapName     = "snapshot"
	snapHdrMagic = "XLS1"
	segPrefix    = "log-"
	segSuffix    = ".wal"
)

// Recovery reports what opening a journal found.
type Recovery struct {
	SnapshotSeq uint64 // seq covered by the snapshot (0: none)
	LastSeq     uint64 // last good record (or SnapshotSeq)
	Records     int    // records replayed
	// Stopped is empty when the log ended cleanly or with a torn last record; else
	// it says where and why recovery stopped before the end of the log.
	Stopped      string
	DroppedBytes int64 // bytes after the last good record (torn tail or corrupt rest)
}

// dirJournal is the directory-based journal: append-only segments plus one
// snapshot file.
type dirJournal struct {
	dir    string
	log    *slog.Logger
	f      *os.File // current segment
	fstart uint64   // first seq of the current segment
	size   int64    // bytes in the current segment
	buf    []byte
}

func segName(seq uint64) string { return fmt.Sprintf("%s%020d%s", segPrefix, seq, segSuffix) }

func openDirJournal(dir string, log *slog.Logger) (*dirJournal, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	return &dirJournal{dir: dir, log: log}, nil
}

type segment struct {
	start uint64
	path  string
}

func (j *dirJournal) segments() ([]segment, error) {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("read data dir: %w", err)
	}
	var segs []segment
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, segPrefix) || !strings.HasSuffix(n, segSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, segPrefix), segSuffix), 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, segment{start: seq, path: filepath.Join(j.dir, n)})
	}
	sort.Slice(segs, func(a, b int) bool { return segs[a].start < segs[b].start })
	return segs, nil
}

// recover restores the snapshot, replays every good record after it, truncates
// the log after the last good record and opens it for appending.
func (j *dirJournal) recover(restore func(io.Reader) error, replay func(seq uint64, payload []byte) error) (Recovery, error) {
	var rec Recovery
	if f, err := os.Open(filepath.Join(j.dir, snapName)); err == nil {
		seq, err := readSnapHeader(f)
		if err == nil {
			err = restore(f)
		}
		f.Close()
		if err != nil {
			return rec, fmt.Errorf("snapshot %s: %w", filepath.Join(j.dir, snapName), err)
		}
		rec.SnapshotSeq = seq
	} else if !errors.Is(err, os.ErrNotExist) {
		return rec, fmt.Errorf("open snapshot: %w", err)
	}
	rec.LastSeq = rec.SnapshotSeq
	os.Remove(filepath.Join(j.dir, snapName+".tmp"))

	segs, err := j.segments()
	if err != nil {
		return rec, err
	}
	stopped := -1 // index of the segment recovery stopped in
	var stopOff int64
	for i, sg := range segs {
		off, reason, torn, err := j.replaySegment(sg, &rec, replay)
		if err != nil {
			return rec, err
		}
		if reason != "" {
			stopped, stopOff = i, off
			if !torn || i != len(segs)-1 {
				rec.Stopped = fmt.Sprintf("%s at offset %d: %s", filepath.Base(sg.path), off, reason)
			}
			break
		}
	}
	if stopped >= 0 {
		// Cut the log at the last good record; keep a copy of anything that
		// was not just a torn tail, for forensics.
		for i := stopped; i < len(segs); i++ {
			st, err := os.Stat(segs[i].path)
			if err != nil {
				return rec, fmt.Errorf("stat log: %w", err)
			}
			from := int64(0)
			if i == stopped {
				from = stopOff
			}
			rec.DroppedBytes += st.Size() - from
			if rec.Stopped != "" {
				if err := copyTail(segs[i].path, from, segs[i].path+".corrupt"); err != nil {
					return rec, err
				}
			}
			if i == stopped {
				if err := os.Truncate(segs[i].path, from); err != nil {
					return rec, fmt.Errorf("truncate log: %w", err)
				}
			} else if err := os.Remove(segs[i].path); err != nil {
				return rec, fmt.Errorf("remove log: %w", err)
			}
		}
		segs = segs[:stopped+1]
		if err := syncDir(j.dir); err != nil {
			return rec, err
		}
	}
	if len(segs) > 0 {
		last := segs[len(segs)-1]
		f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return rec, fmt.Errorf("open log: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return rec, fmt.Errorf("stat log: %w", err)
		}
		j.f, j.fstart, j.size = f, last.start, st.Size()
		return rec, nil
	}
	return rec, j.rotate(rec.LastSeq + 1)
}

// replaySegment replays one segment; it returns the offset and reason where it
// stopped ("" when the segment ended cleanly) and whether the stop looks like a
// torn final write (the bad record reaches the end of the file).
func (j *dirJournal) replaySegment(sg segment, rec *Recovery, replay func(uint64, []byte) error) (int64, string, bool, error) {
	f, err := os.Open(sg.path)
	if err != nil {
		return 0, "", false, fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, "", false, fmt.Errorf("stat log: %w", err)
	}
	size := st.Size()
	r := bufio.NewReaderSize(f, 256<<10)
	var off int64
	var hdr [recHeader]byte
	for off < size {
		if size-off < recHeader {
			return off, "short record header", true, nil
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return off, "read: " + err.Error(), true, nil
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:]))
		sum := binary.LittleEndian.Uint32(hdr[4:])
		seq := binary.LittleEndian.Uint64(hdr[8:])
		if n > maxRecord {
			return off, fmt.Sprintf("record length %d over limit", n), off+recHeader+n >= size, nil
		}
		if off+recHeader+n > size {
			return off, "record runs past end of file", true, nil
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return off, "read: " + err.Error(), true, nil
		}
		c := crc32.Update(crc32.Checksum(hdr[8:], tables.Castagnoli), tables.Castagnoli, payload)
		if c != sum {
			return off, fmt.Sprintf("crc mismatch (seq field %d)", seq), off+recHeader+n == size, nil
		}
		if seq <= rec.SnapshotSeq {
			off += recHeader + n
			continue
		}
		if seq != rec.LastSeq+1 {
			return off, fmt.Sprintf("sequence gap: record %d after %d", seq, rec.LastSeq), false, nil
		}
		if err := replay(seq, payload); err != nil {
			return off, fmt.Sprintf("record %d: %v", seq, err), false, nil
		}
		rec.LastSeq = seq
		rec.Records++
		off += recHeader + n
	}
	return off, "", false, nil
}

// appendBatch writes the records with one write and one fdatasync.
func (j *dirJournal) appendBatch(recs []record) error {
	if j.f == nil {
		return errors.New("log closed")
	}
	j.buf = j.buf[:0]
	for _, r := range recs {
		j.buf = appendRecord(j.buf, r.seq, r.payload)
	}
	if _, err := j.f.Write(j.buf); err != nil {
		return fmt.Errorf("write log: %w", err)
	}
	if err := fdatasync(j.f); err != nil {
		return fmt.Errorf("sync log: %w", err)
	}
	j.size += int64(len(j.buf))
	return nil
}

func appendRecord(dst []byte, seq uint64, payload []byte) []byte {
	var hdr [recHeader]byte
	binary.LittleEndian.PutUint32(hdr[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(hdr[8:], seq)
	c := crc32.Update(crc32.Checksum(hdr[8:], tables.Castagnoli), tables.Castagnoli, payload)
	binary.LittleEndian.PutUint32(hdr[4:], c)
	dst = append(dst, hdr[:]...)
	return append(dst, payload...)
}

// rotate closes the current segment and starts a new one whose first record
// will have seq next.
func (j *dirJournal) rotate(next uint64) error {
	if j.f != nil && j.size == 0 && j.fstart == next {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(j.dir, segName(next)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create log segment: %w", err)
	}
	if err := syncDir(j.dir); err != nil {
		f.Close()
		return err
	}
	if j.f != nil {
		j.f.Close()
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log: %w", err)
	}
	j.f, j.fstart, j.size = f, next, st.Size()
	return nil
}

// writeSnapshot writes the snapshot covering every record up to seq (tmp,
// fsync, rename, fsync dir) and then deletes the segments it makes obsolete
// (every segment starting at or before seq). rotate(seq+1) must have run first.
func (j *dirJournal) writeSnapshot(seq uint64, write func(io.Writer) error) error {
	tmp := filepath.Join(j.dir, snapName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	var hdr [16]byte
	copy(hdr[:], snapHdrMagic)
	binary.LittleEndian.PutUint64(hdr[4:], seq)
	binary.LittleEndian.PutUint32(hdr[12:], crc32.Checksum(hdr[:12], tables.Castagnoli))
	_, err = bw.Write(hdr[:])
	if err == nil {
		err = write(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write snapshot: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(j.dir, snapName)); err != nil {
		return fmt.Errorf("install snapshot: %w", err)
	}
	if err := syncDir(j.dir); err != nil {
		return err
	}
	segs, err := j.segments()
	if err != nil {
		return err
	}
	for _, sg := range segs {
		// rotate(seq+1) ran before, so a segment starting at or before seq ends
		// before seq+1: the snapshot covers all of it.
		if sg.start <= seq {
			if err := os.Remove(sg.path); err != nil {
				return fmt.Errorf("remove old log: %w", err)
			}
		}
	}
	return syncDir(j.dir)
}

func readSnapHeader(r io.Reader) (uint64, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, fmt.Errorf("read header: %w", err)
	}
	if string(hdr[:4]) != snapHdrMagic {
		return 0, fmt.Errorf("bad magic %q", hdr[:4])
	}
	if crc32.Checksum(hdr[:12], tables.Castagnoli) != binary.LittleEndian.Uint32(hdr[12:]) {
		return 0, errors.New("header checksum mismatch")
	}
	return binary.LittleEndian.Uint64(hdr[4:]), nil
}

func (j *dirJournal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

func copyTail(path string, from int64, dst string) error {
	in, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("save corrupt log: %w", err)
	}
	defer in.Close()
	if _, err := in.Seek(from, io.SeekStart); err != nil {
		return fmt.Errorf("save corrupt log: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("save corrupt log: %w", err)
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save corrupt log: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	return nil
}

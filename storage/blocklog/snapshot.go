package blocklog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/hashicorp/raft"
)

// snapshot is the current snapshot, kept in RAM.
type snapshot struct {
	meta raft.SnapshotMeta
	data []byte
}

// Snapshot slot header (48 bytes, then the metadata, padded to blocks):
//
//	0  4 magic 0x4e534258     4  4 crc32c of [8, 48+metaLen)
//	8  8 nonce                16 8 snapshot sequence number
//	24 4 metadata length      28 4 zero
//	32 8 data length          40 4 data crc32c   44 4 zero
//	48   metadata (raft.SnapshotMeta as JSON)
//
// The data follows at the next block boundary (superblock: snapshot header
// length). The superblock names the slot, sequence, lengths and data CRC; the
// slot is only named after all of it was written and synced.
func (s *Store) slotOff(slot uint8) int64 {
	return int64(s.sb.snapOff) + int64(slot)*int64(s.sb.snapLen)
}

func (s *Store) loadSnapshot() error {
	sb := s.sb
	if sb.snapSlot == noSnapshot {
		return nil
	}
	if sb.snapSlot > 1 || sb.snapHdrLen+sb.snapDataLen > sb.snapLen || sb.snapHdrLen < snapHdr {
		return fmt.Errorf("%w: superblock %d names a bad snapshot (slot %d, %d+%d bytes)", ErrCorrupt, sb.seq, sb.snapSlot, sb.snapHdrLen, sb.snapDataLen)
	}
	bs := uint64(s.bs)
	buf := make([]byte, sb.snapHdrLen+(sb.snapDataLen+bs-1)/bs*bs)
	if _, err := s.dev.ReadAt(buf, s.slotOff(sb.snapSlot)); err != nil {
		return &ioError{fmt.Errorf("blocklog: read snapshot: %w", err)}
	}
	le := binary.LittleEndian
	metaLen := uint64(le.Uint32(buf[24:]))
	switch {
	case le.Uint32(buf) != snapMagic, le.Uint64(buf[8:]) != sb.nonce, le.Uint64(buf[16:]) != sb.snapSeq:
		return fmt.Errorf("%w: snapshot %d in slot %d: bad header", ErrCorrupt, sb.snapSeq, sb.snapSlot)
	case snapHdr+metaLen > sb.snapHdrLen:
		return fmt.Errorf("%w: snapshot %d: bad metadata length", ErrCorrupt, sb.snapSeq)
	case crc32.Checksum(buf[8:snapHdr+metaLen], castagnoli) != le.Uint32(buf[4:]):
		return fmt.Errorf("%w: snapshot %d: header checksum mismatch", ErrCorrupt, sb.snapSeq)
	case le.Uint64(buf[32:]) != sb.snapDataLen || le.Uint32(buf[40:]) != sb.snapDataCRC:
		return fmt.Errorf("%w: snapshot %d: header does not match the superblock", ErrCorrupt, sb.snapSeq)
	}
	data := buf[sb.snapHdrLen : sb.snapHdrLen+sb.snapDataLen]
	if crc32.Checksum(data, castagnoli) != sb.snapDataCRC {
		return fmt.Errorf("%w: snapshot %d: data checksum mismatch", ErrCorrupt, sb.snapSeq)
	}
	var meta raft.SnapshotMeta
	if err := json.Unmarshal(buf[snapHdr:snapHdr+metaLen], &meta); err != nil {
		return fmt.Errorf("%w: snapshot %d: metadata: %v", ErrCorrupt, sb.snapSeq, err)
	}
	meta.Size = int64(len(data))
	s.snap = &snapshot{meta: meta, data: data}
	s.snapSeqRAM = sb.snapSeq
	s.rec.SnapshotIdx = meta.Index
	return nil
}

var errSnapshotBusy = errors.New("blocklog: another snapshot is being written")

// Create starts a snapshot; it replaces the current one when its sink closes.
// One snapshot is written at a time (a second Create fails until the first
// sink is closed or cancelled).
func (s *Store) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if s.sinkOpen {
		return nil, errSnapshotBusy
	}
	var sbSeq, nonce uint64
	slotLen, curSlot := int64(math.MaxInt64), uint8(noSnapshot)
	if s.sb != nil { // nil: lost since OpenOrLost, RAM only
		sbSeq, slotLen, curSlot, nonce = s.sb.snapSeq, int64(s.sb.snapLen), s.sb.snapSlot, s.sb.nonce
	}
	seq := max(sbSeq, s.snapSeqRAM) + 1
	meta := raft.SnapshotMeta{
		Version: version, ID: fmt.Sprintf("%d-%d-%d", term, index, seq), Index: index, Term: term,
		Configuration: configuration, ConfigurationIndex: configurationIndex,
	}
	mj, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("blocklog: snapshot metadata: %w", err)
	}
	bs := int64(s.bs)
	hdrLen := (snapHdr + int64(len(mj)) + bs - 1) / bs * bs
	if hdrLen >= slotLen {
		return nil, fmt.Errorf("%w: snapshot metadata of %d bytes", ErrTooLarge, len(mj))
	}
	slot := uint8(0)
	if curSlot == 0 {
		slot = 1
	}
	s.sinkOpen = true
	return &sink{s: s, meta: meta, metaJSON: mj, slot: slot, seq: seq, hdrLen: hdrLen, slotLen: slotLen, nonce: nonce}, nil
}

// List returns the current snapshot, if any.
func (s *Store) List() ([]*raft.SnapshotMeta, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.snap == nil {
		return nil, nil
	}
	m := s.snap.meta
	return []*raft.SnapshotMeta{&m}, nil
}

// Open returns the current snapshot's reader (from RAM).
func (s *Store) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.snap == nil || s.snap.meta.ID != id {
		return nil, nil, fmt.Errorf("blocklog: snapshot %q not found", id)
	}
	m := s.snap.meta
	return &m, io.NopCloser(bytes.NewReader(s.snap.data)), nil
}

type sink struct {
	s        *Store
	meta     raft.SnapshotMeta
	metaJSON []byte
	slot     uint8
	seq      uint64
	hdrLen   int64
	slotLen  int64  // capacity of the slot
	nonce    uint64 // the layout the sink writes into (0: none yet)
	data     []byte
	out      []byte // what goes to the device: data, or Options.DeviceSnapshot(data) at Close
	flushed  int64  // bytes of out written to the device (block multiple)
	crc      uint32
	done     bool
	werr     error // a failed Write: Close refuses to install the snapshot
}

const flushChunk = 256 << 10

func (k *sink) ID() string { return k.meta.ID }

func (k *sink) Write(p []byte) (int, error) {
	if k.done {
		return 0, errors.New("blocklog: write to a closed snapshot")
	}
	if k.werr != nil {
		return 0, k.werr
	}
	if k.s.opts.DeviceSnapshot != nil {
		// The device copy is made from the whole data at Close.
		k.data = append(k.data, p...)
		return len(p), nil
	}
	if k.hdrLen+int64(len(k.data)+len(p)) > k.slotLen {
		k.werr = fmt.Errorf("%w: snapshot exceeds its %d-byte slot", ErrTooLarge, k.slotLen)
		return 0, k.werr
	}
	k.data = append(k.data, p...)
	k.out = k.data
	k.crc = crc32.Update(k.crc, castagnoli, p)
	if int64(len(k.out))-k.flushed >= flushChunk {
		k.s.ioMu.Lock()
		k.flush(false)
		k.s.ioMu.Unlock()
	}
	return len(p), nil
}

// flush writes the data not yet on the device: whole blocks, or everything
// (padded) when final. ioMu held; device errors latch loss.
func (k *sink) flush(final bool) {
	s := k.s
	if s.lost != nil {
		return
	}
	bs := int64(s.bs)
	if k.nonce != s.sb.nonce || k.slot == s.sb.snapSlot {
		// The layout changed under this sink (Repersist): never write into the
		// slot the superblock names; start over in the other one from RAM,
		// sized for the layout now in force.
		k.nonce, k.flushed, k.slotLen = s.sb.nonce, 0, int64(s.sb.snapLen)
		k.slot = 0
		if s.sb.snapSlot == 0 {
			k.slot = 1
		}
		k.hdrLen = (snapHdr + int64(len(k.metaJSON)) + bs - 1) / bs * bs
		if k.hdrLen+int64(len(k.out)) > k.slotLen {
			k.werr = fmt.Errorf("%w: snapshot exceeds its %d-byte slot", ErrTooLarge, k.slotLen)
			return
		}
	}
	end := int64(len(k.out)) / bs * bs
	var buf []byte
	if final && end < int64(len(k.out)) {
		end += bs
		buf = make([]byte, end-k.flushed)
		copy(buf, k.out[k.flushed:])
	} else {
		buf = k.out[k.flushed:end]
	}
	if len(buf) == 0 {
		return
	}
	if _, err := s.dev.WriteAt(buf, s.slotOff(k.slot)+k.hdrLen+k.flushed); err != nil {
		s.loseLocked(err)
		return
	}
	k.flushed = end
}

// Close writes the rest, the header, syncs, then switches the superblock to
// the new slot. With the device lost, the snapshot is kept in RAM only.
func (k *sink) Close() error {
	if k.done {
		return nil // idempotent: raft closes the sink after Persist did
	}
	k.done = true
	s := k.s
	var hookErr error
	if hook := s.opts.DeviceSnapshot; hook != nil && k.werr == nil {
		// The device copy is made outside the store's locks (it may take a
		// while for a large snapshot).
		out, err := hook(k.data)
		if err == nil && k.hdrLen+int64(len(out)) > k.slotLen {
			err = fmt.Errorf("%w: snapshot exceeds its %d-byte slot", ErrTooLarge, k.slotLen)
		}
		hookErr = err
		k.out, k.crc = out, crc32.Checksum(out, castagnoli)
	}
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	s.sinkOpen = false
	if k.werr != nil {
		return fmt.Errorf("blocklog: snapshot not installed: %w", k.werr)
	}
	if hookErr != nil {
		return fmt.Errorf("blocklog: snapshot not installed: %w", hookErr)
	}
	k.flush(true)
	if k.werr != nil {
		return fmt.Errorf("blocklog: snapshot not installed: %w", k.werr)
	}
	k.meta.Size = int64(len(k.data))
	if s.lost == nil {
		hdr := make([]byte, k.hdrLen)
		le := binary.LittleEndian
		le.PutUint32(hdr, snapMagic)
		le.PutUint64(hdr[8:], s.sb.nonce)
		le.PutUint64(hdr[16:], k.seq)
		le.PutUint32(hdr[24:], uint32(len(k.metaJSON)))
		le.PutUint64(hdr[32:], uint64(len(k.out)))
		le.PutUint32(hdr[40:], k.crc)
		copy(hdr[snapHdr:], k.metaJSON)
		le.PutUint32(hdr[4:], crc32.Checksum(hdr[8:snapHdr+len(k.metaJSON)], castagnoli))
		nsb := s.sb.clone()
		nsb.seq++
		nsb.snapSlot, nsb.snapSeq, nsb.snapHdrLen = k.slot, k.seq, uint64(k.hdrLen)
		nsb.snapDataLen, nsb.snapDataCRC = uint64(len(k.out)), k.crc
		if _, err := s.dev.WriteAt(hdr, s.slotOff(k.slot)); err != nil {
			s.loseLocked(err)
		} else if err := s.dev.Sync(); err != nil {
			s.loseLocked(err)
		} else if err := s.writeSuperblock(nsb); err != nil {
			s.loseLocked(err)
		} else {
			s.sb = nsb
		}
	}
	s.snapSeqRAM = k.seq
	meta, data := k.meta, k.data
	s.capture(func(t *Store) error { return t.writeSnapshot(meta, data) })
	s.mu.Lock()
	s.snap = &snapshot{meta: k.meta, data: k.data}
	s.mu.Unlock()
	return nil
}

// Cancel abandons the snapshot; the current one stays.
func (k *sink) Cancel() error {
	if k.done {
		return nil
	}
	k.done = true
	k.s.ioMu.Lock()
	k.s.sinkOpen = false
	k.s.ioMu.Unlock()
	return nil
}

// writeSnapshot installs meta+data as this store's snapshot (Repersist).
func (s *Store) writeSnapshot(meta raft.SnapshotMeta, data []byte) error {
	sink, err := s.Create(meta.Version, meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex, nil)
	if err != nil {
		return err
	}
	if _, err := sink.Write(data); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

package replicated

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/hashicorp/raft"

	"xedge/storage"
)

// This file is a small crash-consistent layout for raft's state on a
// storage.BlockDevice, used until (and unless) the storage engineer's block log
// replaces it behind the same persister role:
//
//	offset 0 and 4096: two superblocks (magic, generation, region, CRC). The
//	  one with the highest valid generation wins; generation g is written to
//	  slot g%2, so a torn superblock write leaves the previous one intact.
//	[8192, 8192+R) and [8192+R, 8192+2R): two regions. A generation's records
//	  live in one region; a new generation (re-persist after storage loss, or
//	  compaction when a region is half full) is written to the other region in
//	  full before its superblock is written.
//
// Each append (one raft call) is written from a block boundary and padded
// with zeros to whole blocks; no block is ever rewritten within a generation.
// A record is [magic u32][gen u64][type u8][len u32][crc u32 of everything
// before it and the payload][payload]. Reading stops at the first record whose
// magic, generation or CRC is wrong: that is the end of the log.

const (
	sbSlot      = 4096
	dataStart   = 2 * sbSlot
	sbMagic     = "XEDGERL1"
	recMagic    = uint32(0x58524543) // "XREC"
	recHdrLen   = 4 + 8 + 1 + 4 + 4
	recLogs     = byte(1)
	recDelRange = byte(2)
	recKV       = byte(3)
	recSnapshot = byte(4)
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errRegionFull means the current region has no room; the caller re-persists.
var errRegionFull = errors.New("replicated: disk region full")

// diskImage is everything a generation holds, replayed.
type diskImage struct {
	kv      map[string][]byte
	logs    map[uint64]*raft.Log
	snap    *snapshotFile
	gen     uint64
	region  int
	endOff  int64 // region-relative end of the valid records
	written bool  // a valid superblock was found
}

// disk writes records into one region of a block device.
type disk struct {
	dev        storage.BlockDevice
	bs         int64
	regionSize int64
}

func openDisk(dev storage.BlockDevice) (*disk, error) {
	bs := int64(dev.BlockSize())
	if bs <= 0 || sbSlot%bs != 0 {
		return nil, fmt.Errorf("replicated: unsupported block size %d", bs)
	}
	rs := (dev.Size() - dataStart) / 2
	rs -= rs % bs
	if rs < 1<<20 {
		return nil, fmt.Errorf("replicated: device too small (%d bytes, need at least 2 MiB)", dev.Size())
	}
	return &disk{dev: dev, bs: bs, regionSize: rs}, nil
}

func (d *disk) regionBase(r int) int64 { return dataStart + int64(r)*d.regionSize }

func encodeSuperblock(gen uint64, region int) []byte {
	b := make([]byte, sbSlot)
	copy(b, sbMagic)
	binary.LittleEndian.PutUint64(b[8:], gen)
	b[16] = byte(region)
	binary.LittleEndian.PutUint32(b[17:], crc32.Checksum(b[:17], crcTable))
	return b
}

func decodeSuperblock(b []byte) (gen uint64, region int, ok bool) {
	if string(b[:8]) != sbMagic || crc32.Checksum(b[:17], crcTable) != binary.LittleEndian.Uint32(b[17:]) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[8:]), int(b[16]), true
}

// load reads the newest generation. An unformatted device gives an empty image.
func (d *disk) load() (*diskImage, error) {
	img, err := d.loadSuperblocks()
	if err != nil || !img.written {
		return img, err
	}
	if err := d.replay(img); err != nil {
		return nil, err
	}
	return img, nil
}

// loadSuperblocks finds the newest generation without reading its records.
func (d *disk) loadSuperblocks() (*diskImage, error) {
	img := &diskImage{kv: map[string][]byte{}, logs: map[uint64]*raft.Log{}}
	buf := make([]byte, sbSlot)
	for slot := int64(0); slot < 2; slot++ {
		if _, err := d.dev.ReadAt(buf, slot*sbSlot); err != nil {
			return nil, fmt.Errorf("replicated: read superblock: %w", err)
		}
		if gen, region, ok := decodeSuperblock(buf); ok && (gen > img.gen || !img.written) && region < 2 {
			img.gen, img.region, img.written = gen, region, true
		}
	}
	return img, nil
}

func (d *disk) replay(img *diskImage) error {
	base := d.regionBase(img.region)
	const chunk = 1 << 20
	var buf []byte
	var bufOff int64 // region-relative offset of buf[0]
	read := func(off, n int64) ([]byte, error) {
		if off+n > d.regionSize {
			return nil, io.EOF
		}
		if off < bufOff || off+n > bufOff+int64(len(buf)) {
			size := max(n, chunk)
			size = min(size, d.regionSize-off)
			size = (size + d.bs - 1) / d.bs * d.bs
			start := off - off%d.bs
			size = min(size+d.bs, d.regionSize-start)
			nb := make([]byte, size)
			if _, err := d.dev.ReadAt(nb, base+start); err != nil {
				return nil, fmt.Errorf("replicated: read region: %w", err)
			}
			buf, bufOff = nb, start
		}
		return buf[off-bufOff : off-bufOff+n], nil
	}
	off := int64(0)
	for {
		hdr, err := read(off, recHdrLen)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if binary.LittleEndian.Uint32(hdr) != recMagic || binary.LittleEndian.Uint64(hdr[4:]) != img.gen {
			if off%d.bs != 0 {
				// Padding after the last record of an append: the next
				// append starts on the next block.
				off = (off + d.bs - 1) / d.bs * d.bs
				continue
			}
			break
		}
		typ := hdr[12]
		n := int64(binary.LittleEndian.Uint32(hdr[13:]))
		want := binary.LittleEndian.Uint32(hdr[17:])
		hdrCopy := append([]byte(nil), hdr[:17]...)
		payload, err := read(off+recHdrLen, n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		crc := crc32.Update(crc32.Checksum(hdrCopy, crcTable), crcTable, payload)
		if crc != want {
			break
		}
		if err := img.applyRecord(typ, append([]byte(nil), payload...)); err != nil {
			return err
		}
		off += recHdrLen + n
	}
	img.endOff = off
	return nil
}

func (img *diskImage) applyRecord(typ byte, p []byte) error {
	switch typ {
	case recLogs:
		for len(p) > 0 {
			l, rest, err := decodeLog(p)
			if err != nil {
				return err
			}
			img.logs[l.Index] = l
			p = rest
		}
	case recDelRange:
		if len(p) != 16 {
			return fmt.Errorf("replicated: bad delete-range record")
		}
		lo, hi := binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
		deleteRange(img.logs, lo, hi)
	case recKV:
		if len(p) < 4 {
			return fmt.Errorf("replicated: bad kv record")
		}
		kl := binary.LittleEndian.Uint32(p)
		if int(kl) > len(p)-4 {
			return fmt.Errorf("replicated: bad kv record")
		}
		img.kv[string(p[4:4+kl])] = p[4+kl:]
	case recSnapshot:
		s, err := decodeSnapshotFile(p)
		if err != nil {
			return err
		}
		img.snap = s
	default:
		return fmt.Errorf("replicated: unknown record type %d", typ)
	}
	return nil
}

// record is one encoded record's type and payload.
type record struct {
	typ     byte
	payload []byte
}

func (d *disk) encode(gen uint64, recs []record) []byte {
	var out bytes.Buffer
	for _, r := range recs {
		var hdr [recHdrLen]byte
		binary.LittleEndian.PutUint32(hdr[0:], recMagic)
		binary.LittleEndian.PutUint64(hdr[4:], gen)
		hdr[12] = r.typ
		binary.LittleEndian.PutUint32(hdr[13:], uint32(len(r.payload)))
		crc := crc32.Update(crc32.Checksum(hdr[:17], crcTable), crcTable, r.payload)
		binary.LittleEndian.PutUint32(hdr[17:], crc)
		out.Write(hdr[:])
		out.Write(r.payload)
	}
	return out.Bytes()
}

// writer appends to one region of one generation. Every append starts on a
// block boundary and is zero-padded to whole blocks, so a block holding
// acknowledged records is never written again (a torn rewrite could garble
// them).
type writer struct {
	d      *disk
	gen    uint64
	region int
	off    int64 // region-relative, block-aligned
}

func (w *writer) append(recs []record, sync bool) error {
	data := w.d.encode(w.gen, recs)
	n := (int64(len(data)) + w.d.bs - 1) / w.d.bs * w.d.bs
	if w.off+n+w.d.bs > w.d.regionSize {
		return errRegionFull
	}
	buf := make([]byte, n)
	copy(buf, data)
	if _, err := w.d.dev.WriteAt(buf, w.d.regionBase(w.region)+w.off); err != nil {
		return fmt.Errorf("replicated: write log: %w", err)
	}
	if sync {
		if err := w.d.dev.Sync(); err != nil {
			return fmt.Errorf("replicated: sync log: %w", err)
		}
	}
	w.off += n
	return nil
}

// commitSuperblock makes w's generation the current one.
func (w *writer) commitSuperblock() error {
	if err := w.d.dev.Sync(); err != nil {
		return fmt.Errorf("replicated: sync generation: %w", err)
	}
	sb := encodeSuperblock(w.gen, w.region)
	if _, err := w.d.dev.WriteAt(sb, int64(w.gen%2)*sbSlot); err != nil {
		return fmt.Errorf("replicated: write superblock: %w", err)
	}
	if err := w.d.dev.Sync(); err != nil {
		return fmt.Errorf("replicated: sync superblock: %w", err)
	}
	return nil
}

// resumeWriter continues appending to the loaded generation.
func (d *disk) resumeWriter(img *diskImage) *writer {
	return &writer{d: d, gen: img.gen, region: img.region, off: (img.endOff + d.bs - 1) / d.bs * d.bs}
}

// newWriter returns a writer for generation gen in region. Nothing it writes
// counts until its superblock is committed.
func (d *disk) newWriter(gen uint64, region int) *writer {
	return &writer{d: d, gen: gen, region: region}
}

func encodeLogs(logs []*raft.Log) []byte {
	var b bytes.Buffer
	var tmp [8]byte
	for _, l := range logs {
		binary.LittleEndian.PutUint64(tmp[:], l.Index)
		b.Write(tmp[:])
		binary.LittleEndian.PutUint64(tmp[:], l.Term)
		b.Write(tmp[:])
		b.WriteByte(byte(l.Type))
		binary.LittleEndian.PutUint64(tmp[:], uint64(l.AppendedAt.UnixNano()))
		b.Write(tmp[:])
		binary.LittleEndian.PutUint32(tmp[:4], uint32(len(l.Data)))
		b.Write(tmp[:4])
		b.Write(l.Data)
		binary.LittleEndian.PutUint32(tmp[:4], uint32(len(l.Extensions)))
		b.Write(tmp[:4])
		b.Write(l.Extensions)
	}
	return b.Bytes()
}

func decodeLog(p []byte) (*raft.Log, []byte, error) {
	bad := fmt.Errorf("replicated: bad log record")
	if len(p) < 8+8+1+8+4 {
		return nil, nil, bad
	}
	l := &raft.Log{
		Index: binary.LittleEndian.Uint64(p),
		Term:  binary.LittleEndian.Uint64(p[8:]),
		Type:  raft.LogType(p[16]),
	}
	l.AppendedAt = unixNano(int64(binary.LittleEndian.Uint64(p[17:])))
	p = p[25:]
	n := int(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if n > len(p) {
		return nil, nil, bad
	}
	l.Data = p[:n:n]
	p = p[n:]
	if len(p) < 4 {
		return nil, nil, bad
	}
	n = int(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if n > len(p) {
		return nil, nil, bad
	}
	if n > 0 {
		l.Extensions = p[:n:n]
	}
	return l, p[n:], nil
}

func encodeKV(k string, v []byte) []byte {
	b := make([]byte, 4+len(k)+len(v))
	binary.LittleEndian.PutUint32(b, uint32(len(k)))
	copy(b[4:], k)
	copy(b[4+len(k):], v)
	return b
}

func encodeDelRange(lo, hi uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, lo)
	binary.LittleEndian.PutUint64(b[8:], hi)
	return b
}

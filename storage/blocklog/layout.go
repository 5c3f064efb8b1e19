package blocklog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Device layout (see docs/storage.md for the byte-by-byte description):
//
//	[0, S)        superblock slot 0    S = max(4096, block size)
//	[S, 2S)       superblock slot 1
//	[2S, 2S+L)    log region: frames, used as a ring
//	then two snapshot slots of equal size
//
// Superblock with sequence number q lives in slot q%2; the valid one with the
// highest q wins, so a torn superblock write leaves the previous one in force.
const (
	sbMagic     = "XEDGEBL1"
	sbVersion   = 2
	sbMinSize   = 4096
	sbHdrLenV1  = 132 // version 1: fixed fields + CRC; the stable entries follow
	sbHdrLen    = 148 // version 2 adds the generation and the flags
	flagPartial = 1   // superblock flag: Repersist is rewriting the layout

	frameMagic = 0x464c4258 // "XBLF" little-endian
	frameHdr   = 32
	snapMagic  = 0x4e534258 // "XBSN" little-endian
	snapHdr    = 48

	frameLogs     = 1
	frameDelRange = 2
	frameSkip     = 3

	noSnapshot = 0xff
	maxFrame   = 64 << 20
)

// superblock is the root of the layout.
type superblock struct {
	seq     uint64
	nonce   uint64
	bs      uint32
	size    uint64 // bytes of the device the layout uses
	logOff  uint64
	logLen  uint64
	snapOff uint64 // slot i starts at snapOff + i*snapLen
	snapLen uint64
	headOff uint64 // region-relative offset of the first live frame
	headSeq uint64 // its sequence number

	snapSlot    uint8 // noSnapshot if none
	snapSeq     uint64
	snapHdrLen  uint64 // bytes (block multiple) before the data
	snapDataLen uint64
	snapDataCRC uint32

	gen   uint64 // generation: +1 on every wipe and re-persist, never reset
	flags uint64 // flagPartial

	kv map[string][]byte // the stable store
}

// off  size field
// 0    8    magic "XEDGEBL1"
// 8    4    version (1)
// 12   4    block size
// 16   8    sequence number
// 24   8    nonce (random per format; in every frame and snapshot header)
// 32   8    layout size
// 40   8    log region offset     48 8 log region length
// 56   8    snapshot slot 0 off   64 8 snapshot slot length
// 72   8    log head offset       80 8 log head frame sequence
// 88   1    snapshot slot (0, 1 or 0xff)  89..95 zero
// 96   8    snapshot sequence     104 8 snapshot header length
// 112  8    snapshot data length  120 4 snapshot data crc32c
// 124  4    stable store entry count
// 128  4    crc32c of the whole slot with these 4 bytes taken as zero
// 132  8    generation (version 2)
// 140  8    flags (version 2): 1 = partial (a re-persist was rewriting the layout)
// 148  ...  entries: u16 key length, key, u32 value length, value (keys sorted)
//
// Version 1 (no generation, no flags) has its entries at 132; it is read as
// generation 1 and rewritten as version 2 by the next superblock write.
//
// The CRC sits in the first sector, so a freshly formatted superblock (no
// entries) has data only in its first sector: a format cut short leaves a slot
// that is either all zeros or carries the magic, never unrecognizable bytes.
func (sb *superblock) encode(slotSize int) ([]byte, error) {
	b := make([]byte, slotSize)
	le := binary.LittleEndian
	copy(b, sbMagic)
	le.PutUint32(b[8:], sbVersion)
	le.PutUint32(b[12:], sb.bs)
	le.PutUint64(b[16:], sb.seq)
	le.PutUint64(b[24:], sb.nonce)
	le.PutUint64(b[32:], sb.size)
	le.PutUint64(b[40:], sb.logOff)
	le.PutUint64(b[48:], sb.logLen)
	le.PutUint64(b[56:], sb.snapOff)
	le.PutUint64(b[64:], sb.snapLen)
	le.PutUint64(b[72:], sb.headOff)
	le.PutUint64(b[80:], sb.headSeq)
	b[88] = sb.snapSlot
	le.PutUint64(b[96:], sb.snapSeq)
	le.PutUint64(b[104:], sb.snapHdrLen)
	le.PutUint64(b[112:], sb.snapDataLen)
	le.PutUint32(b[120:], sb.snapDataCRC)
	le.PutUint32(b[124:], uint32(len(sb.kv)))
	le.PutUint64(b[132:], sb.gen)
	le.PutUint64(b[140:], sb.flags)
	keys := make([]string, 0, len(sb.kv))
	for k := range sb.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	off := sbHdrLen
	for _, k := range keys {
		v := sb.kv[k]
		if off+2+len(k)+4+len(v) > slotSize || len(k) > 0xffff {
			return nil, fmt.Errorf("%w: stable store entries exceed %d bytes", ErrTooLarge, slotSize-sbHdrLen)
		}
		le.PutUint16(b[off:], uint16(len(k)))
		off += 2 + copy(b[off+2:], k)
		le.PutUint32(b[off:], uint32(len(v)))
		off += 4 + copy(b[off+4:], v)
	}
	le.PutUint32(b[128:], crc32.Checksum(b, castagnoli))
	return b, nil
}

var errNoMagic = errors.New("no superblock magic")

func decodeSuperblock(b []byte) (*superblock, error) {
	le := binary.LittleEndian
	if string(b[:8]) != sbMagic {
		return nil, errNoMagic
	}
	n := len(b)
	stored := le.Uint32(b[128:])
	c := crc32.Update(crc32.Checksum(b[:128], castagnoli), castagnoli, []byte{0, 0, 0, 0})
	if crc32.Update(c, castagnoli, b[132:]) != stored {
		return nil, errors.New("superblock checksum mismatch")
	}
	v := le.Uint32(b[8:])
	if v != 1 && v != sbVersion {
		return nil, fmt.Errorf("superblock version %d not supported", v)
	}
	sb := &superblock{
		bs: le.Uint32(b[12:]), seq: le.Uint64(b[16:]), nonce: le.Uint64(b[24:]), size: le.Uint64(b[32:]),
		logOff: le.Uint64(b[40:]), logLen: le.Uint64(b[48:]), snapOff: le.Uint64(b[56:]), snapLen: le.Uint64(b[64:]),
		headOff: le.Uint64(b[72:]), headSeq: le.Uint64(b[80:]), snapSlot: b[88], snapSeq: le.Uint64(b[96:]),
		snapHdrLen: le.Uint64(b[104:]), snapDataLen: le.Uint64(b[112:]), snapDataCRC: le.Uint32(b[120:]),
		kv: make(map[string][]byte),
	}
	cnt := int(le.Uint32(b[124:]))
	off := sbHdrLenV1
	sb.gen = 1
	if v == 2 {
		if n < sbHdrLen {
			return nil, errors.New("superblock truncated")
		}
		off = sbHdrLen
		sb.gen, sb.flags = le.Uint64(b[132:]), le.Uint64(b[140:])
	}
	for i := 0; i < cnt; i++ {
		if off+2 > n {
			return nil, errors.New("superblock stable entries truncated")
		}
		kl := int(le.Uint16(b[off:]))
		off += 2
		if off+kl+4 > n {
			return nil, errors.New("superblock stable entries truncated")
		}
		k := string(b[off : off+kl])
		off += kl
		vl := int(le.Uint32(b[off:]))
		off += 4
		if off+vl > n {
			return nil, errors.New("superblock stable entries truncated")
		}
		sb.kv[k] = append([]byte{}, b[off:off+vl]...)
		off += vl
	}
	return sb, nil
}

func (sb *superblock) clone() *superblock {
	c := *sb
	c.kv = make(map[string][]byte, len(sb.kv))
	for k, v := range sb.kv {
		c.kv[k] = v
	}
	return &c
}

// Frame header (32 bytes), at a block boundary of the log region:
//
//	0  4 magic 0x464c4258     4  4 crc32c of bytes [8,32) and the payload
//	8  8 nonce                16 8 sequence number
//	24 4 payload length       28 1 type (1 logs, 2 delete range, 3 skip)  29..31 zero
//
// The frame takes ceil((32+len)/blocksize) blocks. A skip frame says "the rest
// of the region is unused, continue at its start".
func encodeFrame(bs int, nonce, seq uint64, typ byte, payload []byte) []byte {
	n := frameHdr + len(payload)
	n = (n + bs - 1) / bs * bs
	b := make([]byte, n)
	le := binary.LittleEndian
	le.PutUint32(b[0:], frameMagic)
	le.PutUint64(b[8:], nonce)
	le.PutUint64(b[16:], seq)
	le.PutUint32(b[24:], uint32(len(payload)))
	b[28] = typ
	copy(b[frameHdr:], payload)
	c := crc32.Checksum(b[8:frameHdr+len(payload)], castagnoli)
	le.PutUint32(b[4:], c)
	return b
}

// Logs payload: uvarint count, then per log: index u64, term u64, type u8,
// uvarint len data, data, uvarint len extensions, extensions, appended-at
// (unix nanoseconds, i64; 0 for the zero time).
func encodeLogs(logs []*raft.Log) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(logs)))
	for _, l := range logs {
		b = binary.LittleEndian.AppendUint64(b, l.Index)
		b = binary.LittleEndian.AppendUint64(b, l.Term)
		b = append(b, byte(l.Type))
		b = binary.AppendUvarint(b, uint64(len(l.Data)))
		b = append(b, l.Data...)
		b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
		b = append(b, l.Extensions...)
		var at int64
		if !l.AppendedAt.IsZero() {
			at = l.AppendedAt.UnixNano()
		}
		b = binary.LittleEndian.AppendUint64(b, uint64(at))
	}
	return b
}

func decodeLogs(p []byte) ([]*raft.Log, error) {
	bad := errors.New("bad logs payload")
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) {
		return nil, bad
	}
	p = p[k:]
	out := make([]*raft.Log, 0, n)
	bytesField := func() ([]byte, bool) {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return nil, false
		}
		v := p[k : k+int(l) : k+int(l)]
		p = p[k+int(l):]
		if len(v) == 0 {
			v = nil
		}
		return v, true
	}
	for i := uint64(0); i < n; i++ {
		if len(p) < 17 {
			return nil, bad
		}
		l := &raft.Log{Index: binary.LittleEndian.Uint64(p), Term: binary.LittleEndian.Uint64(p[8:]), Type: raft.LogType(p[16])}
		p = p[17:]
		var ok bool
		if l.Data, ok = bytesField(); !ok {
			return nil, bad
		}
		if l.Extensions, ok = bytesField(); !ok {
			return nil, bad
		}
		if len(p) < 8 {
			return nil, bad
		}
		if at := int64(binary.LittleEndian.Uint64(p)); at != 0 {
			l.AppendedAt = time.Unix(0, at)
		}
		p = p[8:]
		out = append(out, l)
	}
	if len(p) != 0 {
		return nil, bad
	}
	return out, nil
}

// Package blocklog owns xedge's crash-consistent layout on a storage.BlockDevice
// (the iSCSI LUN in the appliance, a file on hosts and in tests): two alternating
// superblocks, a ring of CRC-checked, sequence-numbered log frames, and two
// alternating snapshot slots. On it, Store implements raft's LogStore,
// StableStore and SnapshotStore (github.com/hashicorp/raft), and the
// single-node store (storage/local) uses the same three roles as its journal.
//
// Store keeps a RAM copy of everything (log entries, stable keys, the current
// snapshot) and writes through to the device: every mutating call writes, then
// Syncs, then updates RAM, then returns. Reads never touch the device.
//
// Device errors never reach the caller (raft panics on a StableStore error):
// the first one latches "storage lost"; from then on the store serves and
// accepts everything in RAM only, Err reports the cause and Lost() delivers it
// once, so the node can go RAM-only and demote itself; Repersist copies the RAM
// state back once the device works again. Only logic errors (a stable value too large for the
// superblock, a snapshot larger than its slot, a batch larger than the log
// region) are returned.
//
// Recovery (Open) picks the valid superblock with the highest sequence number,
// verifies and loads the snapshot it names, and replays frames from the log
// head until the first frame whose magic, nonce, sequence number or CRC is
// wrong: that is the end of the log (a torn write or stale data from an
// earlier pass over the ring).
//
// blocklog imports the storage contract and raft; it must not import xmppd,
// iscsi or init.
package blocklog

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"

	"xedge/storage"
)

var (
	// ErrTooLarge is returned for a write that can never fit the layout.
	ErrTooLarge = errors.New("blocklog: too large")
	// ErrCorrupt is returned by Open when the layout is damaged beyond what
	// recovery may silently skip (both superblocks bad, or a bad snapshot).
	ErrCorrupt = errors.New("blocklog: corrupt layout")
	// ErrForeign is returned when the device holds data that is not this
	// store's: by Open for non-xedge data (it formats only a zeroed device), by
	// Repersist for another xedge layout.
	ErrForeign = errors.New("blocklog: foreign layout")
	// errNotFound is what raft expects from StableStore.Get for a missing key.
	errNotFound = errors.New("not found")
	errNotReady = errors.New("blocklog: device not ready (block size 0)")
)

// Options configures Open.
type Options struct {
	// LogBytes is the log region's size when formatting a blank device
	// (default: half the device). The rest is split into two snapshot slots.
	LogBytes int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Wipe discards what the device holds: an xedge layout (valid, damaged or
	// half re-persisted) is formatted afresh, with the next generation number,
	// a new nonce, no entries, no stable keys and no snapshot. Data that is not
	// an xedge layout is still refused (ErrForeign). A replicated node uses it
	// when its device state is stale (it ran RAM-only, or it left the cluster).
	Wipe bool
	// DeviceLog, if set, gives what is written to the device for an entry
	// (e.g. with rows that must never reach a disk removed); RAM keeps the
	// entry as given, so raft reads it back unchanged until a restart. It must
	// keep Index, Term and Type, and be deterministic.
	DeviceLog func(*raft.Log) *raft.Log
	// DeviceSnapshot, if set, gives the bytes written to the device for a
	// snapshot's data; RAM keeps the data as given. An error fails the
	// snapshot (Close returns it). The snapshot is then written in one piece at
	// Close instead of while raft streams it.
	DeviceSnapshot func([]byte) ([]byte, error)
	// Filling, if set, is called after every frame written while live frames
	// hold more than half the log region (dead frames at the front are
	// reclaimed first): time to snapshot and compact
	// (DeleteRange of the prefix) before the region is full, which would
	// latch storage loss. It is called with the store's I/O lock held and
	// must not block or call the store (e.g. a non-blocking channel send).
	Filling func()

	partial bool   // format with the partial flag set (Repersist)
	nonce   uint64 // the nonce a format gives the layout (0: a random one)
}

// Recovery reports what Open found.
type Recovery struct {
	Formatted   bool   // the device was blank (or wiped) and has been formatted
	Wiped       bool   // Options.Wipe discarded an existing layout
	Partial     bool   // a Repersist was rewriting the layout when it stopped: its content is not a past state of the store
	Generation  uint64 // the layout's generation (see Store.Generation)
	Superblock  uint64 // sequence number of the superblock in force
	Frames      int    // frames replayed
	Entries     int    // log entries in RAM after replay
	SnapshotIdx uint64 // raft index of the snapshot (0: none)
	// End says why the log scan stopped: "end" (stale or blank data after the
	// last frame, the normal case) or a description of a torn or corrupt frame.
	End string
}

type frameInfo struct {
	off      int64 // region-relative
	size     int64
	seq      uint64
	maxIndex uint64 // highest log index in the frame (0: none)
}

// Store is raft's LogStore, StableStore and SnapshotStore on a BlockDevice.
type Store struct {
	dev    storage.BlockDevice
	bs     int
	sbSize int
	log    *slog.Logger

	ioMu    sync.Mutex // device I/O and layout state below
	sb      *superblock
	frames  []frameInfo
	tail    int64 // region-relative next frame offset
	used    int64
	nextSeq uint64
	lost    error
	lostCh  chan error

	// While Repersist copies the RAM state, changes made during the loss are
	// also recorded here, to be replayed onto the new layout.
	capturing bool
	journal   []func(*Store) error
	repMu     sync.Mutex
	opts      Options
	// repNonces: the nonces of the layouts Repersist attempts formatted onto
	// the device and did not finish (the device failed again midway): the
	// device may hold one of them, and it is this store's own (repMu).
	repNonces []uint64

	sinkOpen   bool   // a snapshot sink is being written
	snapSeqRAM uint64 // sequence of the newest snapshot, even if only in RAM

	mu    sync.RWMutex // RAM copy
	logs  map[uint64]*raft.Log
	first uint64
	last  uint64
	kv    map[string][]byte
	snap  *snapshot

	rec Recovery
}

var (
	_ raft.LogStore      = (*Store)(nil)
	_ raft.StableStore   = (*Store)(nil)
	_ raft.SnapshotStore = (*Store)(nil)
)

// Open opens the layout on dev, formatting the device if it is blank (both
// superblock slots without magic), and recovers its state into RAM.
func Open(dev storage.BlockDevice, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	bs := dev.BlockSize()
	if bs == 0 {
		return nil, errNotReady
	}
	if bs < 0 || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("blocklog: block size %d is not a power of two", bs)
	}
	s := &Store{
		dev: dev, bs: bs, sbSize: max(sbMinSize, bs), opts: opts,
		log:    opts.Logger.With("component", "blocklog"),
		lostCh: make(chan error, 1),
		logs:   make(map[uint64]*raft.Log),
		kv:     make(map[string][]byte),
	}
	sb, err := s.readSuperblocks()
	switch {
	case errors.Is(err, errNoMagic):
		if sb, err = s.format(opts, 0, 1); err != nil {
			return nil, err
		}
		s.rec.Formatted = true
	case opts.Wipe && (err == nil || errors.Is(err, ErrCorrupt)):
		var seq, gen uint64
		if sb != nil {
			seq, gen = sb.seq, sb.gen
		}
		if sb, err = s.format(opts, seq, gen+1); err != nil {
			return nil, err
		}
		s.rec.Formatted, s.rec.Wiped = true, true
		if !opts.partial {
			s.log.Warn("wiped the device's layout on request", "generation", sb.gen)
		}
	case err != nil:
		return nil, err
	}
	s.sb = sb
	s.rec.Superblock = sb.seq
	s.rec.Generation = sb.gen
	s.rec.Partial = sb.flags&flagPartial != 0
	for k, v := range sb.kv {
		s.kv[k] = v
	}
	if err := s.loadSnapshot(); err != nil {
		return nil, err
	}
	if err := s.replay(); err != nil {
		return nil, err
	}
	s.rec.Entries = len(s.logs)
	if s.rec.Partial {
		s.log.Warn("the device holds a half re-persisted layout (a re-persist stopped midway): its content is not a consistent past state")
	}
	s.log.Info("blocklog opened", "formatted", s.rec.Formatted, "generation", sb.gen, "superblock", sb.seq, "frames", s.rec.Frames,
		"entries", s.rec.Entries, "first", s.first, "last", s.last, "snapshot_index", s.rec.SnapshotIdx, "end", s.rec.End)
	return s, nil
}

// ioError marks an error of the device itself (it did not answer), as
// opposed to what it holds (foreign data, corruption).
type ioError struct{ err error }

func (e *ioError) Error() string { return e.err.Error() }
func (e *ioError) Unwrap() error { return e.err }

// OpenOrLost is Open for a device that may not answer at start (an iSCSI LUN
// whose target is down). If the device cannot be read or written, it returns
// an empty store with storage loss latched (Err, Lost) instead of an error:
// everything is kept in RAM, and Repersist takes the device over once it
// answers — formatting it afresh (a wipe: a new generation holding exactly the
// RAM state), since what it held is older than the RAM state. What the device
// holds is still judged: foreign data, corruption and a block size it cannot
// use are errors, as with Open.
func OpenOrLost(dev storage.BlockDevice, opts Options) (*Store, error) {
	st, err := Open(dev, opts)
	var ioe *ioError
	if err == nil || (!errors.As(err, &ioe) && !errors.Is(err, errNotReady)) {
		return st, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		dev: dev, bs: dev.BlockSize(), opts: opts,
		log:    opts.Logger.With("component", "blocklog"),
		lostCh: make(chan error, 1),
		logs:   make(map[uint64]*raft.Log),
		kv:     make(map[string][]byte),
	}
	if s.bs <= 0 || s.bs&(s.bs-1) != 0 {
		s.bs = 512 // not ready: the real size is taken when Repersist adopts the device
	}
	s.sbSize = max(sbMinSize, s.bs)
	s.rec.End = "device unreadable at open"
	s.ioMu.Lock()
	s.loseLocked(fmt.Errorf("device unreadable at open: %w", err))
	s.ioMu.Unlock()
	return s, nil
}

// Generation is the layout's generation: 1 when a blank device was formatted,
// one more with every wipe and every Repersist, never reset, so it also grows
// when a device is taken over again after a loss (0: no layout adopted yet —
// the device has not answered since OpenOrLost).
func (s *Store) Generation() uint64 {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if s.sb == nil {
		return 0
	}
	return s.sb.gen
}

// Probe reads the first superblock slot, so that a device lost while nothing
// is written is noticed: a read error latches storage loss as a failed write
// would. It returns Err().
func (s *Store) Probe() error {
	s.ioMu.Lock()
	if s.lost != nil {
		defer s.ioMu.Unlock()
		return s.lost
	}
	b := make([]byte, s.sbSize)
	s.ioMu.Unlock()
	_, err := s.dev.ReadAt(b, 0) // not under the lock: a frozen LUN must not stall writers
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if err != nil {
		s.loseLocked(fmt.Errorf("probe: %w", err))
	}
	return s.lost
}

func (s *Store) readSuperblocks() (*superblock, error) {
	var best *superblock
	var errs []error
	blank := 0
	for slot := 0; slot < 2; slot++ {
		b := make([]byte, s.sbSize)
		if _, err := s.dev.ReadAt(b, int64(slot*s.sbSize)); err != nil {
			return nil, &ioError{fmt.Errorf("blocklog: read superblock %d: %w", slot, err)}
		}
		sb, err := decodeSuperblock(b)
		if errors.Is(err, errNoMagic) {
			if !allZero(b) {
				// A filesystem, another tool's data: never format over it.
				return nil, fmt.Errorf("%w: superblock slot %d holds data that is not an xedge layout; "+
					"zero the first %d bytes of the device to let xedge format it", ErrForeign, slot, 2*s.sbSize)
			}
			blank++
			continue
		}
		if err == nil && sb.seq%2 != uint64(slot) {
			err = fmt.Errorf("sequence %d in slot %d", sb.seq, slot)
		}
		if err == nil && (int(sb.bs) != s.bs || sb.size > uint64(s.dev.Size())) {
			err = fmt.Errorf("made for block size %d and %d bytes, device has %d and %d", sb.bs, sb.size, s.bs, s.dev.Size())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %d: %w", slot, err))
			continue
		}
		if best == nil || sb.seq > best.seq {
			best = sb
		}
	}
	if best != nil {
		for _, e := range errs {
			s.log.Warn("ignoring a bad superblock (torn write?)", "err", e)
		}
		return best, nil
	}
	if blank == 2 {
		return nil, errNoMagic
	}
	if blank == 1 {
		// Format writes slot 1 and then slot 0 before anything else, so one
		// blank slot and one bad slot can only be a format cut short.
		s.log.Warn("found an interrupted format; formatting again", "err", errors.Join(errs...))
		return nil, errNoMagic
	}
	return nil, fmt.Errorf("%w: no valid superblock: %w", ErrCorrupt, errors.Join(errs...))
}

// format writes a new, empty layout whose two superblocks have the sequence
// numbers after baseSeq (so they win over whatever the slots held) and
// generation gen.
func (s *Store) format(opts Options, baseSeq, gen uint64) (*superblock, error) {
	size := s.dev.Size() / int64(s.bs) * int64(s.bs)
	logOff := int64(2 * s.sbSize)
	rest := size - logOff
	logLen := opts.LogBytes
	if logLen <= 0 {
		logLen = rest / 2
	}
	logLen = logLen / int64(s.bs) * int64(s.bs)
	snapLen := (rest - logLen) / 2 / int64(s.bs) * int64(s.bs)
	if logLen < int64(4*s.bs) || snapLen < int64(4*s.bs) {
		return nil, fmt.Errorf("blocklog: device of %d bytes is too small for the layout", size)
	}
	nonce := opts.nonce
	if nonce == 0 {
		var err error
		if nonce, err = newNonce(); err != nil {
			return nil, err
		}
	}
	sb := &superblock{
		seq: baseSeq + 1, gen: gen, nonce: nonce, bs: uint32(s.bs), size: uint64(size),
		logOff: uint64(logOff), logLen: uint64(logLen), snapOff: uint64(logOff + logLen), snapLen: uint64(snapLen),
		headOff: 0, headSeq: 1, snapSlot: noSnapshot, kv: map[string][]byte{},
	}
	if opts.partial {
		sb.flags = flagPartial
	}
	// Both slots; on a blank device slot 1 first (see readSuperblocks).
	if err := s.writeSuperblock(sb); err != nil {
		return nil, &ioError{fmt.Errorf("blocklog: format: %w", err)}
	}
	sb.seq++
	if err := s.writeSuperblock(sb); err != nil {
		return nil, &ioError{fmt.Errorf("blocklog: format: %w", err)}
	}
	s.log.Info("formatted device", "size", size, "log_bytes", logLen, "snapshot_slot_bytes", snapLen)
	return sb, nil
}

// newNonce returns a random non-zero layout nonce.
func newNonce() (uint64, error) {
	for {
		var nb [8]byte
		if _, err := rand.Read(nb[:]); err != nil {
			return 0, fmt.Errorf("blocklog: nonce: %w", err)
		}
		if n := binary.LittleEndian.Uint64(nb[:]); n != 0 {
			return n, nil
		}
	}
}

// writeSuperblock writes sb to its slot and syncs. ioMu held (or opening).
func (s *Store) writeSuperblock(sb *superblock) error {
	b, err := sb.encode(s.sbSize)
	if err != nil {
		return err
	}
	if _, err := s.dev.WriteAt(b, int64(sb.seq%2)*int64(s.sbSize)); err != nil {
		return fmt.Errorf("write superblock: %w", err)
	}
	if err := s.dev.Sync(); err != nil {
		return fmt.Errorf("sync superblock: %w", err)
	}
	return nil
}

// replay scans the log from the head and rebuilds the RAM log.
func (s *Store) replay() error {
	L := int64(s.sb.logLen)
	off := int64(s.sb.headOff)
	seq := s.sb.headSeq
	s.rec.End = "end"
	rr := ringReader{dev: s.dev, base: int64(s.sb.logOff), L: L}
	for s.used < L {
		if off == L {
			off = 0
		}
		hdr, err := rr.read(off, int64(s.bs))
		if err != nil {
			return &ioError{fmt.Errorf("blocklog: read log at %d: %w", off, err)}
		}
		le := binary.LittleEndian
		if le.Uint32(hdr) != frameMagic || le.Uint64(hdr[8:]) != s.sb.nonce || le.Uint64(hdr[16:]) != seq {
			break // blank, stale or foreign: the end of the log
		}
		plen := int64(le.Uint32(hdr[24:]))
		size := (frameHdr + plen + int64(s.bs) - 1) / int64(s.bs) * int64(s.bs)
		typ := hdr[28]
		if typ == frameSkip {
			size = L - off
		}
		if plen > maxFrame || off+size > L || s.used+size > L {
			s.rec.End = fmt.Sprintf("frame %d at log offset %d: bad length %d", seq, off, plen)
			break
		}
		buf := hdr
		if typ != frameSkip && frameHdr+plen > int64(s.bs) {
			if buf, err = rr.read(off, size); err != nil {
				return &ioError{fmt.Errorf("blocklog: read log at %d: %w", off, err)}
			}
		}
		if typ == frameSkip {
			plen = 0
		}
		if crc32.Checksum(buf[8:frameHdr+plen], castagnoli) != le.Uint32(buf[4:]) {
			s.rec.End = fmt.Sprintf("frame %d at log offset %d: checksum mismatch (torn or corrupt)", seq, off)
			break
		}
		fi := frameInfo{off: off, size: size, seq: seq}
		payload := append([]byte(nil), buf[frameHdr:frameHdr+plen]...) // buf is reused
		switch typ {
		case frameLogs:
			logs, err := decodeLogs(payload)
			if err != nil {
				s.rec.End = fmt.Sprintf("frame %d at log offset %d: %v", seq, off, err)
				goto done
			}
			for _, l := range logs {
				fi.maxIndex = max(fi.maxIndex, l.Index)
			}
			s.putLogs(logs)
		case frameDelRange:
			if len(payload) != 16 {
				s.rec.End = fmt.Sprintf("frame %d at log offset %d: bad delete-range payload", seq, off)
				goto done
			}
			s.deleteRange(le.Uint64(payload), le.Uint64(payload[8:]))
		case frameSkip:
		default:
			s.rec.End = fmt.Sprintf("frame %d at log offset %d: unknown type %d", seq, off, typ)
			goto done
		}
		s.frames = append(s.frames, fi)
		s.used += size
		s.rec.Frames++
		seq++
		off += size
	}
done:
	if off == L {
		off = 0
	}
	s.tail = off
	s.nextSeq = seq
	if s.rec.End != "end" {
		s.log.Warn("log scan stopped at a bad frame; treating it as the end of the log", "detail", s.rec.End)
	}
	return nil
}

// ringReader reads the log region in large sequential pieces, so opening a
// LUN costs a few round trips per MiB instead of one or two per frame.
type ringReader struct {
	dev    storage.BlockDevice
	base   int64 // device offset of the region
	L      int64
	buf    []byte
	bufOff int64 // region-relative offset of buf
}

const readAhead = 1 << 20

// read returns n bytes at region offset off (valid until the next read).
func (r *ringReader) read(off, n int64) ([]byte, error) {
	if off >= r.bufOff && off+n <= r.bufOff+int64(len(r.buf)) {
		return r.buf[off-r.bufOff : off-r.bufOff+n], nil
	}
	size := min(max(n, readAhead), r.L-off)
	if int64(cap(r.buf)) < size {
		r.buf = make([]byte, size)
	}
	r.buf = r.buf[:size]
	if _, err := r.dev.ReadAt(r.buf, r.base+off); err != nil {
		r.buf = r.buf[:0]
		return nil, err
	}
	r.bufOff = off
	return r.buf[:n], nil
}

// Recovery returns what Open found.
func (s *Store) Recovery() Recovery { return s.rec }

// Lost delivers, once, the device error that switched the store to RAM only.
func (s *Store) Lost() <-chan error { return s.lostCh }

// Err returns the device error that switched the store to RAM only, or nil
// while writes still reach the device.
func (s *Store) Err() error {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	return s.lost
}

// loseLocked latches storage loss. ioMu held.
func (s *Store) loseLocked(err error) {
	if s.lost != nil {
		return
	}
	s.lost = fmt.Errorf("blocklog: storage lost: %w", err)
	s.log.Error("storage lost; continuing in RAM only", "err", err)
	select { // one buffered report; never block the write path
	case s.lostCh <- s.lost:
	default:
	}
}

// capture records a change made while the storage is lost, for Repersist.
// ioMu held.
func (s *Store) capture(op func(*Store) error) {
	if s.lost != nil && s.capturing {
		s.journal = append(s.journal, op)
	}
}

// ---- ring management (ioMu held) ----

// plan says whether a frame of n bytes fits at the tail (ok) and whether the
// rest of the region must be skipped first (skip: the frame then goes at 0).
func (s *Store) plan(n int64) (skip, ok bool) {
	L, t := int64(s.sb.logLen), s.tail
	if s.used == 0 { // empty ring
		if t+n <= L {
			return false, true
		}
		return true, n <= t
	}
	head := s.frames[0].off
	if head < t { // live frames in [head, t): free are [t, L) and [0, head)
		if t+n <= L {
			return false, true
		}
		return true, n <= head
	}
	return false, t+n <= head // live frames wrap; free is [t, head)
}

// advanceHead drops dead frames from the front of the ring, among the first
// eligible ones, and persists the new head. Returns whether anything was
// dropped. (A frame just written is not eligible: RAM does not hold its
// entries yet, so it would look dead.)
func (s *Store) advanceHead(eligible int) (bool, error) {
	s.mu.RLock()
	first, empty := s.first, len(s.logs) == 0
	s.mu.RUnlock()
	k := 0
	for k < eligible && (empty || s.frames[k].maxIndex < first) {
		k++
	}
	if k == 0 {
		return false, nil
	}
	nsb := s.sb.clone()
	nsb.seq++
	if k < len(s.frames) {
		nsb.headOff, nsb.headSeq = uint64(s.frames[k].off), s.frames[k].seq
	} else {
		nsb.headOff, nsb.headSeq = uint64(s.tail), s.nextSeq
	}
	if err := s.writeSuperblock(nsb); err != nil {
		return false, err
	}
	s.sb = nsb
	for _, f := range s.frames[:k] {
		s.used -= f.size
	}
	s.frames = append([]frameInfo(nil), s.frames[k:]...)
	return true, nil
}

// appendFrame writes one frame (after a skip frame if it must wrap) and syncs.
// A device error latches loss and returns nil; only ErrTooLarge is returned.
func (s *Store) appendFrame(typ byte, payload []byte, maxIndex uint64) error {
	if s.lost != nil {
		return nil
	}
	L := int64(s.sb.logLen)
	bs := int64(s.bs)
	n := (frameHdr + int64(len(payload)) + bs - 1) / bs * bs
	if n > L-bs || len(payload) > maxFrame {
		return fmt.Errorf("%w: a %d-byte frame does not fit a %d-byte log region", ErrTooLarge, n, L)
	}
	skip, ok := s.plan(n)
	if !ok {
		if _, err := s.advanceHead(len(s.frames)); err != nil {
			s.loseLocked(err)
			return nil
		}
		if skip, ok = s.plan(n); !ok {
			s.loseLocked(fmt.Errorf("log region full (%d of %d bytes hold live entries; compact the log)", s.used, L))
			return nil
		}
	}
	if skip {
		f := encodeFrame(s.bs, s.sb.nonce, s.nextSeq, frameSkip, nil)
		if _, err := s.dev.WriteAt(f, int64(s.sb.logOff)+s.tail); err != nil {
			s.loseLocked(err)
			return nil
		}
		s.frames = append(s.frames, frameInfo{off: s.tail, size: L - s.tail, seq: s.nextSeq})
		s.used += L - s.tail
		s.nextSeq++
		s.tail = 0
	}
	f := encodeFrame(s.bs, s.sb.nonce, s.nextSeq, typ, payload)
	if _, err := s.dev.WriteAt(f, int64(s.sb.logOff)+s.tail); err != nil {
		s.loseLocked(err)
		return nil
	}
	if err := s.dev.Sync(); err != nil {
		s.loseLocked(err)
		return nil
	}
	s.frames = append(s.frames, frameInfo{off: s.tail, size: n, seq: s.nextSeq, maxIndex: maxIndex})
	s.used += n
	s.nextSeq++
	s.tail += n
	if s.tail == L {
		s.tail = 0
	}
	if s.used > L/2 {
		// Reclaim dead frames at the front now (one superblock write after a
		// compaction), so that "more than half" counts live frames only.
		if _, err := s.advanceHead(len(s.frames) - 1); err != nil {
			s.loseLocked(err)
			return nil
		}
		if s.used > L/2 && s.opts.Filling != nil {
			s.opts.Filling()
		}
	}
	return nil
}

// ---- RAM log (mu held for writing) ----

func (s *Store) putLogs(logs []*raft.Log) {
	for _, l := range logs {
		s.logs[l.Index] = l
		if s.first == 0 || l.Index < s.first {
			s.first = l.Index
		}
		if l.Index > s.last {
			s.last = l.Index
		}
	}
}

func (s *Store) deleteRange(lo, hi uint64) {
	if lo > hi || len(s.logs) == 0 {
		return
	}
	lo, hi = max(lo, s.first), min(hi, s.last)
	if lo > hi {
		return
	}
	if hi-lo+1 > uint64(len(s.logs)) {
		for i := range s.logs {
			if i >= lo && i <= hi {
				delete(s.logs, i)
			}
		}
	} else {
		for i := lo; i <= hi; i++ {
			delete(s.logs, i)
		}
	}
	if len(s.logs) == 0 {
		s.first, s.last = 0, 0
		return
	}
	if lo <= s.first {
		s.first = s.scan(hi+1, s.last, true)
	}
	if hi >= s.last {
		s.last = s.scan(s.first, lo-1, false)
	}
}

// scan finds the lowest (up) or highest present index in [a,b].
func (s *Store) scan(a, b uint64, up bool) uint64 {
	if b-a+1 <= uint64(len(s.logs)) {
		if up {
			for i := a; i <= b; i++ {
				if _, ok := s.logs[i]; ok {
					return i
				}
			}
		} else {
			for i := b; i >= a; i-- {
				if _, ok := s.logs[i]; ok {
					return i
				}
			}
		}
	}
	var best uint64
	for i := range s.logs {
		if i < a || i > b {
			continue
		}
		if best == 0 || (up && i < best) || (!up && i > best) {
			best = i
		}
	}
	return best
}

// ---- raft.LogStore ----

// FirstIndex returns the first index in the log, 0 if empty.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.first, nil
}

// LastIndex returns the last index in the log, 0 if empty.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.last, nil
}

// GetLog reads an entry from RAM.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.logs[index]
	if !ok {
		return raft.ErrLogNotFound
	}
	*l = *v
	return nil
}

// StoreLog stores one entry.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs writes the entries as one frame, syncs, then makes them visible.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	cp := make([]*raft.Log, len(logs))
	var maxIdx uint64
	for i, l := range logs {
		c := *l
		c.Data = append([]byte(nil), l.Data...)
		c.Extensions = append([]byte(nil), l.Extensions...)
		cp[i] = &c
		maxIdx = max(maxIdx, l.Index)
	}
	dev := cp
	if s.opts.DeviceLog != nil {
		dev = make([]*raft.Log, len(cp))
		for i, l := range cp {
			dev[i] = s.opts.DeviceLog(l)
		}
	}
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if err := s.appendFrame(frameLogs, encodeLogs(dev), maxIdx); err != nil {
		return err
	}
	s.capture(func(t *Store) error { return t.StoreLogs(cp) })
	s.mu.Lock()
	s.putLogs(cp)
	s.mu.Unlock()
	return nil
}

// DeleteRange deletes entries min..max inclusive.
func (s *Store) DeleteRange(lo, hi uint64) error {
	var p [16]byte
	binary.LittleEndian.PutUint64(p[:], lo)
	binary.LittleEndian.PutUint64(p[8:], hi)
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if err := s.appendFrame(frameDelRange, p[:], 0); err != nil {
		return err
	}
	s.capture(func(t *Store) error { return t.DeleteRange(lo, hi) })
	s.mu.Lock()
	s.deleteRange(lo, hi)
	s.mu.Unlock()
	return nil
}

// ---- raft.StableStore ----

// Set stores a key in the superblock (written to the other slot, synced).
func (s *Store) Set(key, val []byte) error {
	v := append([]byte{}, val...)
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if s.lost == nil {
		nsb := s.sb.clone()
		nsb.seq++
		nsb.kv[string(key)] = v
		if _, err := nsb.encode(s.sbSize); err != nil {
			return err
		}
		if err := s.writeSuperblock(nsb); err != nil {
			s.loseLocked(err)
		} else {
			s.sb = nsb
		}
	}
	s.capture(func(t *Store) error { return t.Set(key, v) })
	s.mu.Lock()
	s.kv[string(key)] = v
	s.mu.Unlock()
	return nil
}

// Get returns a key's value, or an error "not found" (what raft expects).
func (s *Store) Get(key []byte) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.kv[string(key)]
	if !ok {
		return nil, errNotFound
	}
	return append([]byte{}, v...), nil
}

// SetUint64 stores a uint64 (8 bytes, big-endian, as raft-boltdb does).
func (s *Store) SetUint64(key []byte, val uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], val)
	return s.Set(key, b[:])
}

// GetUint64 returns a uint64, 0 if the key is missing.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("blocklog: key %q holds %d bytes, not a uint64", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// LogUsage returns the bytes of the log region held by live frames and the
// region's size; compact (snapshot + DeleteRange) well before it fills.
func (s *Store) LogUsage() (used, capacity int64) {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if s.sb == nil {
		return 0, 0
	}
	return s.used, int64(s.sb.logLen)
}

// Reclaim drops the dead frames at the front of the log region (entries a
// compaction deleted) now instead of at the next write, and returns LogUsage:
// a writer held back for room (replicated's backpressure) sees the room a
// compaction made without writing first.
func (s *Store) Reclaim() (used, capacity int64) {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if s.sb == nil {
		return 0, 0
	}
	if s.lost == nil && len(s.frames) > 0 {
		// Every frame written is in RAM by now (StoreLogs and DeleteRange
		// update RAM before they release ioMu): all are eligible.
		if _, err := s.advanceHead(len(s.frames)); err != nil {
			s.loseLocked(err)
		}
	}
	return s.used, int64(s.sb.logLen)
}

// LayoutID identifies the layout (the random nonce chosen when the device was
// formatted): a device showing another ID is not this store's.
func (s *Store) LayoutID() uint64 {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	if s.sb == nil {
		return 0
	}
	return s.sb.nonce
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

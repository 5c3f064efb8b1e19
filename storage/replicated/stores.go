package replicated

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"xedge/storage"
	"xedge/storage/tables"
)

// stores is raft's LogStore, StableStore and SnapshotStore in one: a RAM copy
// that raft reads, plus write-through to the block device that stops when the
// device fails. Errors never reach raft (raft panics on a StableStore error);
// they switch the node to RAM-only and notify the Store. When the device works
// again, a background re-persist copies the RAM state into a new generation —
// without holding mu for the bulk copy — and write-through resumes.
type stores struct {
	log *slog.Logger

	mu          sync.Mutex
	logs        map[uint64]*raft.Log
	first, last uint64
	kv          map[string][]byte
	snap        *snapshotFile

	d         *disk   // nil: no device, RAM-only for good
	w         *writer // nil while storage is lost
	gen       uint64  // newest generation known on the device
	lossAt    time.Time
	capturing bool     // a re-persist is running; journal collects new records
	journal   []record // records written since the re-persist captured the state
	lossErr   error
	lastIO    time.Time // last successful write-through or probe
	genSize   int64     // bytes the current generation started with

	kick     chan struct{} // wake the background loop (compaction, probe)
	onChange func(bool)    // called with durable=true/false on transitions, outside mu
	probe    time.Duration // first probe interval while lost
	now      func() time.Time
}

// snapshotFile is the one snapshot kept (raft keeps only the latest anyway).
type snapshotFile struct {
	meta raft.SnapshotMeta
	data []byte
}

func encodeSnapshotFile(s *snapshotFile) []byte {
	meta, _ := json.Marshal(&s.meta)
	b := make([]byte, 4, 4+len(meta)+len(s.data))
	binary.LittleEndian.PutUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	return append(b, s.data...)
}

func decodeSnapshotFile(p []byte) (*snapshotFile, error) {
	if len(p) < 4 || int(binary.LittleEndian.Uint32(p)) > len(p)-4 {
		return nil, fmt.Errorf("replicated: bad snapshot record")
	}
	n := binary.LittleEndian.Uint32(p)
	s := &snapshotFile{data: p[4+n:]}
	if err := json.Unmarshal(p[4:4+n], &s.meta); err != nil {
		return nil, fmt.Errorf("replicated: bad snapshot meta: %w", err)
	}
	return s, nil
}

func unixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// openStores loads raft's state from dev (nil: RAM only). wipe discards what the
// device holds (the node ran RAM-only before this start) and starts a new,
// empty generation. If the device cannot be read, the stores start RAM-only
// and the background loop re-persists once the device answers.
func openStores(dev storage.BlockDevice, wipe bool, log *slog.Logger) (*stores, error) {
	s := &stores{
		log:   log,
		logs:  map[uint64]*raft.Log{},
		kv:    map[string][]byte{},
		kick:  make(chan struct{}, 1),
		probe: 100 * time.Millisecond,
		now:   time.Now,
	}
	if dev == nil {
		return s, nil
	}
	d, err := openDisk(dev)
	if err != nil {
		return nil, err
	}
	s.d = d
	img, err := d.load()
	if err != nil {
		log.Warn("storage unreadable at start; running RAM-only until it answers", "err", err)
		s.lossAt, s.lossErr = s.now(), err
		return s, nil
	}
	s.gen = img.gen
	if wipe || !img.written {
		w := d.newWriter(img.gen+1, (img.region+1)%2)
		if !img.written {
			w.region = 0
		}
		if err := w.commitSuperblock(); err != nil {
			log.Warn("storage unwritable at start; running RAM-only until it answers", "err", err)
			s.lossAt, s.lossErr = s.now(), err
			return s, nil
		}
		s.w, s.gen = w, w.gen
		return s, nil
	}
	s.w = d.resumeWriter(img)
	s.kv = img.kv
	s.logs = img.logs
	s.snap = img.snap
	for i := range s.logs {
		if s.first == 0 || i < s.first {
			s.first = i
		}
		if i > s.last {
			s.last = i
		}
	}
	return s, nil
}

// durable reports whether writes currently reach the device.
func (s *stores) durable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w != nil
}

func (s *stores) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

func (s *stores) lostSince() (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lossAt, s.lossErr
}

// persist writes recs through to the device. Caller holds mu. It returns true
// if storage was just lost (the caller notifies outside mu).
func (s *stores) persist(recs ...record) (lost bool) {
	if s.capturing {
		s.journal = append(s.journal, recs...)
	}
	if s.w == nil {
		return false
	}
	err := s.w.append(recs, true)
	if err == nil {
		s.lastIO = s.now()
		if s.w.off > s.compactAt() && !s.capturing {
			s.wake()
		}
		return false
	}
	if errors.Is(err, errRegionFull) {
		err = fmt.Errorf("%w (compaction did not keep up)", err)
	}
	s.log.Error("storage lost: continuing from RAM", "err", err)
	s.w, s.lossAt, s.lossErr = nil, s.now(), err
	s.wake()
	return true
}

// compactAt is the region fill that triggers a compaction: half the region,
// or halfway between the last generation's starting size and the end when the
// live state alone is that big (so a device too small for the state does not
// compact in a loop). Caller holds mu.
func (s *stores) compactAt() int64 {
	return max(s.d.regionSize/2, (s.genSize+s.d.regionSize)/2)
}

func (s *stores) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *stores) notify(lost bool) {
	if lost && s.onChange != nil {
		s.onChange(false)
	}
}

// FirstIndex implements raft.LogStore.
func (s *stores) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, nil
}

// LastIndex implements raft.LogStore.
func (s *stores) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

// GetLog implements raft.LogStore.
func (s *stores) GetLog(index uint64, out *raft.Log) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.logs[index]
	if !ok {
		return raft.ErrLogNotFound
	}
	*out = *l
	return nil
}

// StoreLog implements raft.LogStore.
func (s *stores) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// throttle holds a writer back while a compaction is copying the log and the
// current region is nearly full, instead of running out of room (bounded: 5s).
func (s *stores) throttle() {
	for range 500 {
		s.mu.Lock()
		busy := s.w != nil && s.w.off > s.d.regionSize*9/10
		if busy {
			s.wake()
		}
		s.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StoreLogs implements raft.LogStore.
func (s *stores) StoreLogs(logs []*raft.Log) error {
	s.throttle()
	s.mu.Lock()
	for _, l := range logs {
		c := *l
		s.logs[l.Index] = &c
		if s.first == 0 || l.Index < s.first {
			s.first = l.Index
		}
		if l.Index > s.last {
			s.last = l.Index
		}
	}
	lost := s.persist(record{recLogs, encodeLogs(redactLogs(logs))})
	s.mu.Unlock()
	s.notify(lost)
	return nil
}

// DeleteRange implements raft.LogStore.
func (s *stores) DeleteRange(lo, hi uint64) error {
	s.mu.Lock()
	deleteRange(s.logs, lo, hi)
	if lo <= s.first {
		s.first = hi + 1
	}
	if hi >= s.last {
		s.last = lo - 1
	}
	if s.first > s.last {
		s.first, s.last = 0, 0
	}
	lost := s.persist(record{recDelRange, encodeDelRange(lo, hi)})
	s.mu.Unlock()
	s.notify(lost)
	return nil
}

// Set implements raft.StableStore.
func (s *stores) Set(key []byte, val []byte) error {
	s.mu.Lock()
	v := append([]byte(nil), val...)
	s.kv[string(key)] = v
	lost := s.persist(record{recKV, encodeKV(string(key), v)})
	s.mu.Unlock()
	s.notify(lost)
	return nil
}

// Get implements raft.StableStore.
func (s *stores) Get(key []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[string(key)]
	if !ok {
		return nil, errors.New("not found")
	}
	return v, nil
}

// SetUint64 implements raft.StableStore.
func (s *stores) SetUint64(key []byte, val uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], val)
	return s.Set(key, b[:])
}

// GetUint64 implements raft.StableStore.
func (s *stores) GetUint64(key []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[string(key)]
	if !ok || len(v) != 8 {
		return 0, nil
	}
	return binary.LittleEndian.Uint64(v), nil
}

// Create implements raft.SnapshotStore.
func (s *stores) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	id := fmt.Sprintf("%d-%d-%d", term, index, time.Now().UnixMilli())
	return &sink{s: s, meta: raft.SnapshotMeta{Version: version, ID: id, Index: index, Term: term,
		Configuration: configuration, ConfigurationIndex: configurationIndex}}, nil
}

// List implements raft.SnapshotStore.
func (s *stores) List() ([]*raft.SnapshotMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap == nil {
		return nil, nil
	}
	m := s.snap.meta
	return []*raft.SnapshotMeta{&m}, nil
}

// Open implements raft.SnapshotStore.
func (s *stores) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap == nil || s.snap.meta.ID != id {
		return nil, nil, fmt.Errorf("replicated: snapshot %q not found", id)
	}
	m := s.snap.meta
	return &m, io.NopCloser(bytes.NewReader(s.snap.data)), nil
}

type sink struct {
	s      *stores
	meta   raft.SnapshotMeta
	buf    bytes.Buffer
	closed bool
}

func (k *sink) Write(p []byte) (int, error) { return k.buf.Write(p) }
func (k *sink) ID() string                  { return k.meta.ID }
func (k *sink) Cancel() error               { k.closed = true; return nil }

func (k *sink) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	k.meta.Size = int64(k.buf.Len())
	f := &snapshotFile{meta: k.meta, data: k.buf.Bytes()}
	dev, err := redactedSnapshotFile(f)
	if err != nil {
		return err
	}
	s := k.s
	s.mu.Lock()
	if s.snap != nil && s.snap.meta.Index > f.meta.Index {
		s.mu.Unlock()
		return nil
	}
	s.snap = f
	lost := s.persist(record{recSnapshot, encodeSnapshotFile(dev)})
	s.mu.Unlock()
	s.notify(lost)
	return nil
}

// run is the background loop: compaction when a region is half full, and
// probing + re-persist while storage is lost. It returns when ctx is done.
func (s *stores) run(ctx context.Context) {
	if s.d == nil {
		return
	}
	wait := s.probe
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-timer.C:
		}
		s.mu.Lock()
		lost, full := s.w == nil, s.w != nil && s.w.off > s.compactAt()
		idle := s.w != nil && s.now().Sub(s.lastIO) > 5*s.probe
		s.mu.Unlock()
		if idle {
			s.probeIdle()
		}
		if lost || full {
			if err := s.repersist(ctx); err != nil {
				s.log.Debug("re-persist failed; will retry", "err", err)
				wait = min(wait*2, 2*time.Second)
			} else {
				wait = s.probe
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// probeIdle reads a superblock when nothing was written for a while, so a
// storage loss is noticed (and the node demoted) even without write traffic.
func (s *stores) probeIdle() {
	buf := make([]byte, sbSlot)
	_, err := s.d.dev.ReadAt(buf, 0)
	s.mu.Lock()
	if err == nil {
		s.lastIO = s.now()
		s.mu.Unlock()
		return
	}
	lost := false
	if s.w != nil {
		err = fmt.Errorf("replicated: idle probe: %w", err)
		s.log.Error("storage lost: continuing from RAM", "err", err)
		s.w, s.lossAt, s.lossErr = nil, s.now(), err
		lost = true
	}
	s.mu.Unlock()
	s.notify(lost)
}

// repersist writes the RAM state into a new generation in the other region.
// Only the capture and the final catch-up run under mu.
func (s *stores) repersist(ctx context.Context) error {
	s.mu.Lock()
	cur := s.w
	s.mu.Unlock()
	probe := &diskImage{}
	if cur == nil {
		// Learn the device's current generation (and whether it answers at all).
		var err error
		if probe, err = s.d.loadSuperblocks(); err != nil {
			return err
		}
	} else {
		probe.gen, probe.region, probe.written = cur.gen, cur.region, true
	}
	s.mu.Lock()
	if s.capturing {
		s.mu.Unlock()
		return nil
	}
	wasLost := s.w == nil
	gen := max(s.gen, probe.gen) + 1
	region := (probe.region + 1) % 2
	if !probe.written {
		region = 0
	}
	logs := make([]*raft.Log, 0, len(s.logs))
	for i := s.first; i <= s.last && s.first > 0; i++ {
		if l, ok := s.logs[i]; ok {
			logs = append(logs, l)
		}
	}
	kv := make([]record, 0, len(s.kv))
	for k, v := range s.kv {
		kv = append(kv, record{recKV, encodeKV(k, v)})
	}
	snap := s.snap
	s.capturing, s.journal = true, nil
	s.mu.Unlock()

	start := time.Now()
	nw := s.d.newWriter(gen, region)
	fail := func(err error) error {
		s.mu.Lock()
		s.capturing, s.journal = false, nil
		lost := false
		if !wasLost && s.w != nil {
			s.w, s.lossAt, s.lossErr = nil, s.now(), err
			lost = true
		}
		s.mu.Unlock()
		s.notify(lost)
		return err
	}
	recs := kv
	if snap != nil {
		dev, err := redactedSnapshotFile(snap)
		if err != nil {
			return fail(err)
		}
		recs = append(recs, record{recSnapshot, encodeSnapshotFile(dev)})
	}
	if err := nw.append(recs, false); err != nil {
		return fail(err)
	}
	for i := 0; i < len(logs); i += 512 {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		if err := nw.append([]record{{recLogs, encodeLogs(redactLogs(logs[i:min(i+512, len(logs))]))}}, false); err != nil {
			return fail(err)
		}
	}
	// Catch up with what raft wrote meanwhile, outside mu while the backlog is big.
	for range 16 {
		s.mu.Lock()
		j := s.journal
		if len(j) <= 64 {
			s.mu.Unlock()
			break
		}
		s.journal = nil
		s.mu.Unlock()
		if err := nw.append(j, false); err != nil {
			return fail(err)
		}
	}
	s.mu.Lock()
	j := s.journal
	var err error
	if len(j) > 0 {
		err = nw.append(j, false)
	}
	if err == nil {
		err = nw.commitSuperblock()
	}
	if err != nil {
		s.mu.Unlock()
		return fail(err)
	}
	s.w, s.gen, s.capturing, s.journal = nw, gen, false, nil
	s.genSize = nw.off
	if nw.off > s.d.regionSize/2 {
		s.log.Warn("storage device is small for the raft state: compacting more often", "state_bytes", nw.off, "region_bytes", s.d.regionSize)
	}
	s.lossAt, s.lossErr = time.Time{}, nil
	s.mu.Unlock()
	s.log.Info("storage re-persisted into a new generation", "generation", gen, "entries", len(logs),
		"took", time.Since(start).Round(time.Millisecond), "after_loss", wasLost)
	if wasLost && s.onChange != nil {
		s.onChange(true)
	}
	return nil
}

// Redaction: what reaches the device never carries a RAM table's rows. raft
// reads the RAM copy (full entries and snapshots: a leader replicates RAM ops
// to lagging followers and sends RAM rows in InstallSnapshot); the device gets
// entries whose RAM ops are replaced by stubs (tables.Command.Redacted, which
// needs no state: every op is marked with its copy type by the proposer) and
// snapshots without RAM rows (redactSnapshot).

// redactLogs returns logs with every entry's RAM ops redacted; the slice itself
// when none has any.
func redactLogs(logs []*raft.Log) []*raft.Log {
	var out []*raft.Log
	for i, l := range logs {
		r := redactLog(l)
		if r == l && out == nil {
			continue
		}
		if out == nil {
			out = make([]*raft.Log, i, len(logs))
			copy(out, logs[:i])
		}
		out = append(out, r)
	}
	if out == nil {
		return logs
	}
	return out
}

// redactLog returns l, or a copy of it whose RAM ops are redacted.
func redactLog(l *raft.Log) *raft.Log {
	if l.Type != raft.LogCommand {
		return l
	}
	data, prefix := l.Data, []byte(nil)
	if len(data) > 1+requestIDLen && data[0] == entryRequest {
		data, prefix = data[1+requestIDLen:], data[:1+requestIDLen]
	}
	if len(data) < 3 || data[0] != entryTables || data[1] != byte(tables.CmdApply) || data[2] != 2 {
		return l // only version-2 (marked) apply commands carry RAM ops to remove
	}
	cmd, err := tables.DecodeCommand(data[1:])
	if err != nil {
		return l
	}
	red, changed := cmd.Redacted()
	if !changed {
		return l
	}
	c := *l
	c.Data = encodeTables(red)
	if prefix != nil {
		c.Data = append(append([]byte(nil), prefix...), c.Data...)
	}
	return &c
}

// redactedSnapshotFile returns the device copy of a snapshot.
func redactedSnapshotFile(f *snapshotFile) (*snapshotFile, error) {
	data, err := redactSnapshot(f.data)
	if err != nil {
		return nil, fmt.Errorf("replicated: snapshot %s: %w", f.meta.ID, err)
	}
	d := &snapshotFile{meta: f.meta, data: data}
	d.meta.Size = int64(len(data))
	return d, nil
}

// deleteRange removes [lo, hi] from logs, walking whichever is smaller: the
// range or the map.
func deleteRange(logs map[uint64]*raft.Log, lo, hi uint64) {
	if hi < lo {
		return
	}
	if hi-lo >= uint64(len(logs)) {
		for i := range logs {
			if i >= lo && i <= hi {
				delete(logs, i)
			}
		}
		return
	}
	for i := lo; i <= hi; i++ {
		delete(logs, i)
	}
}

// snapshotIndex is the index of the snapshot kept (0: none).
func (s *stores) snapshotIndex() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap == nil {
		return 0
	}
	return s.snap.meta.Index
}

package blocklog

import (
	"bytes"
	"errors"
	"hash/crc32"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"xedge/storage"
	"xedge/storage/blockdev"
)

// deadDev fails every read, write and sync while dead (an iSCSI target that
// is down: unlike blockdev.Switchable, reads fail too).
type deadDev struct {
	storage.BlockDevice
	dead atomic.Bool
}

var errDead = errors.New("device dead")

func (d *deadDev) ReadAt(p []byte, off int64) (int, error) {
	if d.dead.Load() {
		return 0, errDead
	}
	return d.BlockDevice.ReadAt(p, off)
}

func (d *deadDev) WriteAt(p []byte, off int64) (int, error) {
	if d.dead.Load() {
		return 0, errDead
	}
	return d.BlockDevice.WriteAt(p, off)
}

func (d *deadDev) Sync() error {
	if d.dead.Load() {
		return errDead
	}
	return d.BlockDevice.Sync()
}

// A deliberate wipe discards an xedge layout — valid or damaged — with a new
// nonce and the next generation; data that is not an xedge layout is still
// never touched.
func TestWipe(t *testing.T) {
	mem := blockdev.NewMem(256<<10, 512)
	s, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	if g := s.Generation(); g != 1 {
		t.Fatalf("generation of a fresh format %d, want 1", g)
	}
	must(t, s.StoreLogs([]*raft.Log{entry(1, 1, 100), entry(2, 1, 100)}))
	must(t, s.SetUint64([]byte("CurrentTerm"), 3))
	snapshotNow(t, s, 2, "snap")
	nonce := s.LayoutID()

	w, err := Open(mem, Options{Logger: quiet, Wipe: true})
	must(t, err)
	rec := w.Recovery()
	if !rec.Wiped || !rec.Formatted || rec.Generation != 2 || w.Generation() != 2 || w.LayoutID() == nonce {
		t.Fatalf("wipe: %+v, nonce %x (was %x)", rec, w.LayoutID(), nonce)
	}
	if d := diff(mstate{logs: map[uint64]raft.Log{}, kv: map[string]string{}}, readState(t, w)); d != "" {
		t.Fatalf("wiped store not empty: %s", d)
	}
	must(t, w.StoreLogs([]*raft.Log{entry(1, 5, 10)}))
	r, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	if r.Generation() != 2 || r.Recovery().Partial {
		t.Fatalf("reopen after wipe: %+v", r.Recovery())
	}
	var l raft.Log
	if err := r.GetLog(1, &l); err != nil || l.Term != 5 {
		t.Fatalf("entry written after the wipe: %v %+v", err, l)
	}
	if _, err := r.Get([]byte("CurrentTerm")); err == nil {
		t.Fatal("a stable key survived the wipe")
	}

	// A damaged layout (both superblocks bad) is wiped too.
	for slot := int64(0); slot < 2; slot++ {
		b := make([]byte, 512)
		mem.ReadAt(b, slot*4096)
		b[16] ^= 0xff // sequence number: CRC mismatch
		if _, err := mem.WriteAt(b, slot*4096); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(mem, Options{Logger: quiet}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged layout opened: %v", err)
	}
	if _, err := Open(mem, Options{Logger: quiet, Wipe: true}); err != nil {
		t.Fatalf("wipe of a damaged layout: %v", err)
	}

	// Foreign data is refused even with Wipe.
	foreign := blockdev.NewMem(256<<10, 512)
	if _, err := foreign.WriteAt(bytes.Repeat([]byte("ext4"), 128), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(foreign, Options{Logger: quiet, Wipe: true}); !errors.Is(err, ErrForeign) {
		t.Fatalf("wipe over foreign data: %v", err)
	}
}

// A version-1 superblock (before generations) opens as generation 1, and the
// next superblock written is version 2 with the stable keys intact.
func TestVersion1Superblock(t *testing.T) {
	mem := blockdev.NewMem(256<<10, 512)
	s, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	must(t, s.Set([]byte("k"), []byte("v")))
	// Rewrite the superblock in force as version 1: entries at 132.
	sb := s.sb.clone()
	b, err := sb.encode(s.sbSize)
	must(t, err)
	v1 := make([]byte, len(b))
	copy(v1, b[:132])
	copy(v1[132:], b[sbHdrLen:])
	v1[8] = 1
	for i := 128; i < 132; i++ {
		v1[i] = 0
	}
	c := crcSlot(v1)
	v1[128], v1[129], v1[130], v1[131] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	if _, err := mem.WriteAt(v1, int64(sb.seq%2)*int64(s.sbSize)); err != nil {
		t.Fatal(err)
	}
	r, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	if v, err := r.Get([]byte("k")); err != nil || string(v) != "v" || r.Generation() != 1 {
		t.Fatalf("version 1: %q %v generation %d", v, err, r.Generation())
	}
	must(t, r.Set([]byte("k2"), []byte("v2")))
	r2, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	if v, _ := r2.Get([]byte("k")); string(v) != "v" || r2.sb.gen != 1 {
		t.Fatalf("after rewrite: %q gen %d", v, r2.sb.gen)
	}
}

func crcSlot(b []byte) uint32 {
	var c [4]byte
	tmp := append([]byte(nil), b...)
	copy(tmp[128:], c[:])
	return crc32.Checksum(tmp, castagnoli)
}

// A device that does not answer at open: the store starts empty in RAM with
// the loss latched, and Repersist takes the device over once it answers —
// replacing the (older) layout it held by exactly the RAM state, as a new
// generation.
func TestOpenOrLostThenRepersist(t *testing.T) {
	mem := blockdev.NewMem(512<<10, 512)
	old, err := Open(mem, Options{LogBytes: 128 << 10, Logger: quiet})
	must(t, err)
	for i := uint64(1); i <= 30; i++ {
		must(t, old.StoreLogs([]*raft.Log{entry(i, 1, 100)}))
	}
	must(t, old.Set([]byte("stale-key"), []byte("x")))
	snapshotNow(t, old, 20, "stale-snapshot")
	oldGen := old.Generation()

	dev := &deadDev{BlockDevice: mem}
	dev.dead.Store(true)
	if _, err := Open(dev, Options{Logger: quiet}); err == nil {
		t.Fatal("Open of a dead device succeeded")
	}
	s, err := OpenOrLost(dev, Options{Logger: quiet})
	must(t, err)
	if s.Err() == nil || s.Generation() != 0 {
		t.Fatalf("dead at open: err %v generation %d", s.Err(), s.Generation())
	}
	select {
	case <-s.Lost():
	default:
		t.Fatal("loss at open not delivered on Lost()")
	}
	for i := uint64(1); i <= 10; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 7, 50)}))
	}
	must(t, s.SetUint64([]byte("CurrentTerm"), 7))
	snapshotNow(t, s, 5, "ram-snapshot")
	must(t, s.DeleteRange(1, 3))
	if err := s.Repersist(); err == nil {
		t.Fatal("repersist onto a dead device succeeded")
	}
	dev.dead.Store(false)
	must(t, s.Repersist())
	if s.Err() != nil || s.Generation() <= oldGen {
		t.Fatalf("after repersist: err %v generation %d (device had %d)", s.Err(), s.Generation(), oldGen)
	}
	must(t, s.StoreLogs([]*raft.Log{entry(11, 8, 50)}))
	want := readState(t, s)
	r, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	if d := diff(want, readState(t, r)); d != "" {
		t.Fatalf("device after takeover differs from RAM: %s", d)
	}
	if _, err := r.Get([]byte("stale-key")); err == nil {
		t.Fatal("a stable key of the old layout survived the takeover")
	}
	if r.Generation() != s.Generation() || r.Recovery().Partial {
		t.Fatalf("reopen: %+v", r.Recovery())
	}
	// Foreign data found when the device answers is refused, not overwritten.
	dev2 := &deadDev{BlockDevice: blockdev.NewMem(512<<10, 512)}
	dev2.dead.Store(true)
	s2, err := OpenOrLost(dev2, Options{Logger: quiet})
	must(t, err)
	if _, err := dev2.BlockDevice.WriteAt(bytes.Repeat([]byte("xfs!"), 128), 0); err != nil {
		t.Fatal(err)
	}
	dev2.dead.Store(false)
	if err := s2.Repersist(); !errors.Is(err, ErrForeign) {
		t.Fatalf("takeover of foreign data: %v", err)
	}
}

// Every Repersist moves the generation up by one, and a store reopened from
// the device shows it; Probe latches a loss noticed by a read.
func TestGenerationAndProbe(t *testing.T) {
	mem := blockdev.NewMem(512<<10, 512)
	dev := &deadDev{BlockDevice: mem}
	s, err := Open(dev, Options{LogBytes: 128 << 10, Logger: quiet})
	must(t, err)
	must(t, s.Probe())
	for round := uint64(1); round <= 3; round++ {
		dev.dead.Store(true)
		if err := s.Probe(); err == nil {
			t.Fatal("probe of a dead device succeeded")
		}
		must(t, s.StoreLogs([]*raft.Log{entry(round, round, 10)}))
		dev.dead.Store(false)
		must(t, s.Repersist())
		if g := s.Generation(); g != 1+round {
			t.Fatalf("generation %d after %d re-persists", g, round)
		}
	}
	r, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	if r.Generation() != 4 {
		t.Fatalf("reopened generation %d", r.Generation())
	}
}

// Catch-up: writes made while a large re-persist runs reach the device, and
// none of them waits for the bulk copy.
func TestRepersistCatchUp(t *testing.T) {
	mem := blockdev.NewMem(8<<20, 512)
	dev := &blockdev.Switchable{BlockDevice: mem}
	s, err := Open(dev, Options{Logger: quiet})
	must(t, err)
	dev.SetDown(true)
	var batch []*raft.Log
	for i := uint64(1); i <= 20000; i++ {
		batch = append(batch, entry(i, 1, 64))
		if len(batch) == 500 {
			must(t, s.StoreLogs(batch))
			batch = nil
		}
	}
	dev.SetDown(false)
	done := make(chan error, 1)
	go func() { done <- s.Repersist() }()
	next := uint64(20001)
	for wait := true; wait; next++ {
		must(t, s.StoreLogs([]*raft.Log{entry(next, 2, 64)}))
		time.Sleep(200 * time.Microsecond)
		select {
		case err := <-done:
			must(t, err)
			wait = false
		default:
		}
	}
	must(t, s.StoreLogs([]*raft.Log{entry(next, 2, 64)}))
	r, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	if d := diff(readState(t, s), readState(t, r)); d != "" {
		t.Fatalf("after catch-up (%d writes during the re-persist): %s", next-20001, d)
	}
	t.Logf("%d writes during the re-persist", next-20001)
}

// The redaction hooks: RAM keeps what raft gave, the device gets the hooks'
// output (after a reopen, RAM holds the device form).
func TestDeviceHooks(t *testing.T) {
	mem := blockdev.NewMem(512<<10, 512)
	opts := Options{Logger: quiet,
		DeviceLog: func(l *raft.Log) *raft.Log {
			c := *l
			c.Data = bytes.ReplaceAll(l.Data, []byte("secret"), []byte("xxxxxx"))
			return &c
		},
		DeviceSnapshot: func(b []byte) ([]byte, error) {
			if bytes.Contains(b, []byte("fail")) {
				return nil, errors.New("cannot redact")
			}
			return bytes.ReplaceAll(b, []byte("secret"), nil), nil
		},
	}
	s, err := Open(mem, opts)
	must(t, err)
	must(t, s.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Data: []byte("a secret")}}))
	snapshotNow(t, s, 1, "snap secret")
	sink, err := s.Create(1, 1, 1, raft.Configuration{}, 0, nil)
	must(t, err)
	sink.Write([]byte("fail"))
	if err := sink.Close(); err == nil {
		t.Fatal("a snapshot whose device copy failed was installed")
	}
	got := readState(t, s)
	if got.logs[1].Data == nil || string(got.logs[1].Data) != "a secret" || got.snap != "snap secret" {
		t.Fatalf("RAM: %q %q", got.logs[1].Data, got.snap)
	}
	for _, raw := range [][]byte{mem.Bytes()} {
		if bytes.Contains(raw, []byte("secret")) {
			t.Fatal("the device holds what the hooks removed")
		}
	}
	r, err := Open(mem, opts)
	must(t, err)
	got = readState(t, r)
	if string(got.logs[1].Data) != "a xxxxxx" || got.snap != "snap " {
		t.Fatalf("device form: %q %q", got.logs[1].Data, got.snap)
	}
}

// Filling: reported once live frames pass half the region; dead frames at the
// front are reclaimed first, and never the frame just written — even when the
// log in RAM is empty before it (everything was compacted into a snapshot).
func TestFillingReclaimsButKeepsTheNewFrame(t *testing.T) {
	mem := blockdev.NewMem(256<<10, 512)
	filling := 0
	s, err := Open(mem, Options{LogBytes: 64 << 10, Logger: quiet, Filling: func() { filling++ }})
	must(t, err)
	var i uint64
	for i = 1; filling == 0; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 200)}))
	}
	snapshotNow(t, s, i-1, "all")
	must(t, s.DeleteRange(1, i-1)) // the log is empty now
	used, _ := s.LogUsage()
	must(t, s.StoreLogs([]*raft.Log{entry(i, 2, 200)}))
	after, capacity := s.LogUsage()
	if after >= used || after > capacity/2 {
		t.Fatalf("dead frames not reclaimed: %d then %d of %d bytes", used, after, capacity)
	}
	r, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	var l raft.Log
	if err := r.GetLog(i, &l); err != nil || l.Term != 2 {
		t.Fatalf("the entry written after the compaction is lost: %v", err)
	}
}

// readCounter counts the bytes read from a device.
type readCounter struct {
	storage.BlockDevice
	n atomic.Int64
}

func (r *readCounter) ReadAt(p []byte, off int64) (int, error) {
	r.n.Add(int64(len(p)))
	return r.BlockDevice.ReadAt(p, off)
}

// Repersist judges the device by its superblocks and writes a fresh layout:
// it does not read the old log region (a LUN that reads but refuses writes
// would otherwise be read in full at every retry).
func TestRepersistDoesNotReadTheOldLog(t *testing.T) {
	rc := &readCounter{BlockDevice: blockdev.NewMem(16<<20, 512)}
	dev := &blockdev.Switchable{BlockDevice: rc}
	s, err := Open(dev, Options{Logger: quiet})
	must(t, err)
	for i := uint64(1); i <= 6000; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 600)})) // ~6 MiB of frames
	}
	dev.SetDown(true)
	must(t, s.StoreLogs([]*raft.Log{entry(6001, 1, 10)}))
	dev.SetDown(false)
	rc.n.Store(0)
	must(t, s.Repersist())
	if n := rc.n.Load(); n > 2<<20 {
		t.Fatalf("re-persist read %d bytes of the device", n)
	}
}

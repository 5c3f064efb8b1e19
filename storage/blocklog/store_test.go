package blocklog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/hashicorp/raft"

	"xedge/storage/blockdev"
)

func mustOpen(t testing.TB, dev *blockdev.Mem) *Store {
	t.Helper()
	s, err := Open(dev, Options{LogBytes: 64 << 10, Logger: quiet})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func entry(i, term uint64, n int) *raft.Log {
	return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, n)}
}

func TestLogStableSnapshotBasics(t *testing.T) {
	dev := blockdev.NewMem(256<<10, 512)
	s := mustOpen(t, dev)
	if !s.Recovery().Formatted {
		t.Fatal("blank device not formatted")
	}
	if _, err := s.Get([]byte("x")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key: %v", err)
	}
	if v, err := s.GetUint64([]byte("x")); v != 0 || err != nil {
		t.Fatalf("missing uint64: %d %v", v, err)
	}
	for i := uint64(1); i <= 10; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i, 1, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	must(t, s.SetUint64([]byte("CurrentTerm"), 7))
	must(t, s.Set([]byte("LastVoteCand"), []byte("n2")))
	must(t, s.DeleteRange(9, 10)) // conflict: drop a suffix
	must(t, s.StoreLog(entry(9, 2, 5)))
	sink, err := s.Create(raft.SnapshotVersionMax, 9, 2, raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "a:1"}}}, 3, nil)
	must(t, err)
	if _, err := s.Create(1, 1, 1, raft.Configuration{}, 0, nil); !errors.Is(err, errSnapshotBusy) {
		t.Fatalf("second sink: %v", err)
	}
	fmt.Fprint(sink, "snapshot-data")
	must(t, sink.Close())
	must(t, s.DeleteRange(1, 4))

	check := func(s *Store) {
		t.Helper()
		if f, _ := s.FirstIndex(); f != 5 {
			t.Fatalf("first %d", f)
		}
		if l, _ := s.LastIndex(); l != 9 {
			t.Fatalf("last %d", l)
		}
		var l raft.Log
		if err := s.GetLog(4, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("deleted entry: %v", err)
		}
		must(t, s.GetLog(9, &l))
		if l.Term != 2 || len(l.Data) != 5 {
			t.Fatalf("entry 9: %+v", l)
		}
		if v, _ := s.GetUint64([]byte("CurrentTerm")); v != 7 {
			t.Fatalf("term %d", v)
		}
		if v, _ := s.Get([]byte("LastVoteCand")); string(v) != "n2" {
			t.Fatalf("vote %q", v)
		}
		list, _ := s.List()
		if len(list) != 1 || list[0].Index != 9 || list[0].Size != 13 || list[0].Configuration.Servers[0].ID != "n1" {
			t.Fatalf("list %+v", *list[0])
		}
		_, rc, err := s.Open(list[0].ID)
		must(t, err)
		b, _ := io.ReadAll(rc)
		if string(b) != "snapshot-data" {
			t.Fatalf("snapshot %q", b)
		}
	}
	check(s)
	s2 := mustOpen(t, dev)
	if s2.Recovery().Formatted {
		t.Fatal("reformatted")
	}
	check(s2)
}

var quiet = slog.New(slog.DiscardHandler)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWrapAroundWithCompaction(t *testing.T) {
	dev := blockdev.NewMem(256<<10, 512)
	s := mustOpen(t, dev)
	// 2000 entries of 300 bytes through a 64 KiB ring, compacting as raft would.
	for i := uint64(1); i <= 2000; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 300)}))
		if i%50 == 0 {
			must(t, s.DeleteRange(1, i-20))
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("lost: %v", err)
	}
	s2 := mustOpen(t, dev)
	f, _ := s2.FirstIndex()
	l, _ := s2.LastIndex()
	if f != 1981 || l != 2000 {
		t.Fatalf("after wrap: first %d last %d (%+v)", f, l, s2.Recovery())
	}
	var e raft.Log
	must(t, s2.GetLog(1990, &e))
	if !bytes.Equal(e.Data, entry(1990, 1, 300).Data) {
		t.Fatal("entry data")
	}
}

func TestLogFullLatchesLoss(t *testing.T) {
	dev := blockdev.NewMem(256<<10, 512)
	s := mustOpen(t, dev)
	var i uint64
	for i = 1; i <= 400 && s.Err() == nil; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 300)})) // never compacted
	}
	if s.Err() == nil {
		t.Fatal("a full ring must latch loss")
	}
	select {
	case err := <-s.Lost():
		t.Logf("lost: %v", err)
	default:
		t.Fatal("no loss notification")
	}
	// RAM keeps working.
	must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 10)}))
	must(t, s.SetUint64([]byte("k"), 1))
	if l, _ := s.LastIndex(); l != i {
		t.Fatalf("last %d want %d", l, i)
	}
}

func TestDeviceErrorNeverReachesCaller(t *testing.T) {
	base := blockdev.NewMem(256<<10, 512)
	f := blockdev.NewFault(base, blockdev.FaultConfig{FailAt: 5, Mode: blockdev.Error})
	s, err := Open(f, Options{LogBytes: 64 << 10, Logger: quiet})
	must(t, err)
	for i := uint64(1); i <= 10; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 10)}))
		must(t, s.SetUint64([]byte("t"), i))
	}
	sink, err := s.Create(1, 10, 1, raft.Configuration{}, 0, nil)
	must(t, err)
	sink.Write([]byte("x"))
	must(t, sink.Close())
	if s.Err() == nil {
		t.Fatal("loss not latched")
	}
	if v, _ := s.GetUint64([]byte("t")); v != 10 {
		t.Fatalf("ram copy: %d", v)
	}
}

func TestTornSuperblockFallsBack(t *testing.T) {
	dev := blockdev.NewMem(256<<10, 512)
	s := mustOpen(t, dev)
	must(t, s.SetUint64([]byte("a"), 1))
	must(t, s.SetUint64([]byte("a"), 2)) // seq 4 -> slot 0
	img := dev.Bytes()
	img[100] ^= 1 // damage slot 0
	s2 := mustOpen(t, blockdev.MemFrom(img, 512))
	if v, _ := s2.GetUint64([]byte("a")); v != 1 {
		t.Fatalf("fallback superblock: a=%d", v)
	}
	img[4096+100] ^= 1 // both bad
	if _, err := Open(blockdev.MemFrom(img, 512), Options{Logger: quiet}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("both superblocks bad: %v", err)
	}
}

func TestSnapshotTooLarge(t *testing.T) {
	s := mustOpen(t, blockdev.NewMem(256<<10, 512))
	sink, _ := s.Create(1, 1, 1, raft.Configuration{}, 0, nil)
	if _, err := sink.Write(make([]byte, 200<<10)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize write: %v", err)
	}
	if err := sink.Close(); err == nil {
		t.Fatal("close installed a truncated snapshot")
	}
	if l, _ := s.List(); len(l) != 0 || s.Err() != nil {
		t.Fatalf("list %v err %v", l, s.Err())
	}
}

func TestCorruptSnapshotIsAnError(t *testing.T) {
	dev := blockdev.NewMem(256<<10, 512)
	s := mustOpen(t, dev)
	sink, _ := s.Create(1, 1, 1, raft.Configuration{}, 0, nil)
	sink.Write(bytes.Repeat([]byte("s"), 2000))
	must(t, sink.Close())
	img := dev.Bytes()
	off := s.slotOff(s.sb.snapSlot) + int64(s.sb.snapHdrLen) + 10
	img[off] ^= 1
	if _, err := Open(blockdev.MemFrom(img, 512), Options{Logger: quiet}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt snapshot: %v", err)
	}
}

func TestCorruptFrameStopsRecovery(t *testing.T) {
	dev := blockdev.NewMem(256<<10, 512)
	s := mustOpen(t, dev)
	for i := uint64(1); i <= 10; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 100)}))
	}
	img := dev.Bytes()
	img[int64(s.sb.logOff)+s.frames[5].off+40] ^= 1
	s2 := mustOpen(t, blockdev.MemFrom(img, 512))
	if l, _ := s2.LastIndex(); l != 5 {
		t.Fatalf("last %d after corrupt frame 6", l)
	}
	if r := s2.Recovery(); r.Frames != 5 || r.End == "end" {
		t.Fatalf("recovery %+v", r)
	}
}

func TestConcurrentReadersWritersSnapshot(t *testing.T) {
	dev := blockdev.NewMem(512<<10, 512)
	s := mustOpen(t, dev)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(1); i <= 300; i++ {
			must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 50)}))
			if i%100 == 0 {
				must(t, s.DeleteRange(1, i-10))
			}
		}
	}()
	for n := 0; n < 3; n++ {
		sink, err := s.Create(1, uint64(n), 1, raft.Configuration{}, 0, nil)
		must(t, err)
		_, err = sink.Write(bytes.Repeat([]byte{byte(n)}, 100<<10))
		must(t, err)
		must(t, sink.Close())
	}
	for i := 0; i < 2000; i++ {
		l, _ := s.LastIndex()
		var e raft.Log
		if l > 0 {
			if err := s.GetLog(l, &e); err != nil && !errors.Is(err, raft.ErrLogNotFound) {
				t.Fatal(err)
			}
		}
		s.Get([]byte("x"))
		s.List()
	}
	<-done
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, dev)
	if l, _ := s2.LastIndex(); l != 300 {
		t.Fatalf("last %d", l)
	}
	list, _ := s2.List()
	if len(list) != 1 || list[0].Index != 2 || list[0].Size != 100<<10 {
		t.Fatalf("snapshot %+v", list)
	}
}

type countingDev struct {
	*blockdev.Mem
	reads int
}

func (c *countingDev) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	return c.Mem.ReadAt(p, off)
}

// Opening reads the log in large pieces: on a LUN every ReadAt is a round trip.
func TestOpenReadsInLargePieces(t *testing.T) {
	dev := blockdev.NewMem(4<<20, 512)
	s, err := Open(dev, Options{Logger: quiet}) // a 2 MiB ring
	must(t, err)
	for i := uint64(1); i <= 3000; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 100)}))
	}
	if s.Err() != nil {
		t.Fatal(s.Err())
	}
	c := &countingDev{Mem: dev}
	s2, err := Open(c, Options{Logger: quiet})
	must(t, err)
	if l, _ := s2.LastIndex(); l != 3000 {
		t.Fatalf("last %d", l)
	}
	if c.reads > 10 {
		t.Fatalf("%d reads to open 3000 frames", c.reads)
	}
}

func TestNeverFormatsForeignData(t *testing.T) {
	dev := blockdev.NewMem(256<<10, 512)
	fs := make([]byte, 1024)
	copy(fs, "an ext4 superblock, say")
	dev.WriteAt(fs, 1024)
	if _, err := Open(dev, Options{Logger: quiet}); !errors.Is(err, ErrForeign) {
		t.Fatalf("foreign data: %v", err)
	}
	got := make([]byte, 1024)
	dev.ReadAt(got, 1024)
	if string(got[:8]) != "an ext4 " {
		t.Fatal("foreign data overwritten")
	}
}

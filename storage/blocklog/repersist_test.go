package blocklog

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"xedge/storage/blockdev"
)

func snapshotNow(t *testing.T, s *Store, idx uint64, data string) {
	t.Helper()
	sink, err := s.Create(1, idx, 1, raft.Configuration{}, 0, nil)
	must(t, err)
	sink.Write([]byte(data))
	must(t, sink.Close())
}

func TestRepersistAfterLoss(t *testing.T) {
	mem := blockdev.NewMem(512<<10, 512)
	dev := &blockdev.Switchable{BlockDevice: mem}
	s, err := Open(dev, Options{LogBytes: 128 << 10, Logger: quiet})
	must(t, err)
	for i := uint64(1); i <= 50; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 200)}))
	}
	must(t, s.SetUint64([]byte("CurrentTerm"), 1))
	snapshotNow(t, s, 40, "snap-40")
	must(t, s.DeleteRange(1, 30))

	dev.SetDown(true)
	for i := uint64(51); i <= 80; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 2, 200)}))
	}
	if s.Err() == nil {
		t.Fatal("loss not latched")
	}
	must(t, s.SetUint64([]byte("CurrentTerm"), 2))
	snapshotNow(t, s, 70, "snap-70")
	must(t, s.DeleteRange(31, 60))
	if err := s.Repersist(); err == nil {
		t.Fatal("repersist on a dead device succeeded")
	}

	dev.SetDown(false)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // raft keeps appending during the re-persist
		defer wg.Done()
		for i := uint64(81); i <= 120; i++ {
			must(t, s.StoreLogs([]*raft.Log{entry(i, 2, 200)}))
		}
	}()
	must(t, s.Repersist())
	wg.Wait()
	if err := s.Err(); err != nil {
		t.Fatalf("still lost: %v", err)
	}
	must(t, s.StoreLogs([]*raft.Log{entry(121, 3, 10)}))
	want := readState(t, s)

	s2, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	got := readState(t, s2)
	if d := diff(want, got); d != "" {
		t.Fatalf("device after repersist differs from RAM: %s", d)
	}
	if f, _ := s2.FirstIndex(); f != 61 {
		t.Fatalf("first %d", f)
	}
	if got.snap != "snap-70" {
		t.Fatalf("snapshot %q", got.snap)
	}
}

func TestRepersistOntoBlankReplacement(t *testing.T) {
	dev := &blockdev.Switchable{BlockDevice: blockdev.NewMem(512<<10, 512)}
	s, err := Open(dev, Options{LogBytes: 128 << 10, Logger: quiet})
	must(t, err)
	for i := uint64(1); i <= 20; i++ {
		must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 100)}))
	}
	dev.SetDown(true)
	must(t, s.SetUint64([]byte("CurrentTerm"), 4))
	// The LUN comes back empty (a replaced disk).
	fresh := blockdev.NewMem(512<<10, 512)
	dev.Replace(fresh)
	dev.SetDown(false)
	must(t, s.Repersist())
	s2, err := Open(fresh, Options{Logger: quiet})
	must(t, err)
	if d := diff(readState(t, s), readState(t, s2)); d != "" {
		t.Fatal(d)
	}
}

func TestSinkSpanningRepersist(t *testing.T) {
	mem := blockdev.NewMem(512<<10, 512)
	dev := &blockdev.Switchable{BlockDevice: mem}
	s, err := Open(dev, Options{LogBytes: 128 << 10, Logger: quiet})
	must(t, err)
	must(t, s.StoreLogs([]*raft.Log{entry(1, 1, 10)}))
	snapshotNow(t, s, 1, "first") // slot 0
	dev.SetDown(true)
	must(t, s.StoreLogs([]*raft.Log{entry(2, 1, 10)})) // lost
	snapshotNow(t, s, 2, "second")                     // RAM only
	sink, err := s.Create(1, 2, 1, raft.Configuration{}, 0, nil)
	must(t, err)
	sink.Write([]byte("third-"))
	dev.SetDown(false)
	must(t, s.Repersist()) // installs "second" in some slot
	sink.Write(make([]byte, 300<<10/10))
	must(t, sink.Close())
	s2, err := Open(mem, Options{Logger: quiet})
	must(t, err)
	if d := diff(readState(t, s), readState(t, s2)); d != "" {
		t.Fatal(d)
	}
}

func TestRepersistRefusesForeignLayout(t *testing.T) {
	dev := &blockdev.Switchable{BlockDevice: blockdev.NewMem(512<<10, 512)}
	s, err := Open(dev, Options{LogBytes: 128 << 10, Logger: quiet})
	must(t, err)
	dev.SetDown(true)
	must(t, s.StoreLogs([]*raft.Log{entry(1, 1, 10)}))
	other := blockdev.NewMem(512<<10, 512)
	o, err := Open(other, Options{LogBytes: 128 << 10, Logger: quiet}) // someone else's layout
	must(t, err)
	must(t, o.StoreLogs([]*raft.Log{entry(7, 7, 7)}))
	dev.Replace(other)
	dev.SetDown(false)
	if err := s.Repersist(); !errors.Is(err, ErrForeign) {
		t.Fatalf("repersist onto a foreign layout: %v", err)
	}
	o2, err := Open(other, Options{Logger: quiet})
	must(t, err)
	if l, _ := o2.LastIndex(); l != 7 {
		t.Fatal("foreign layout was modified")
	}
}

// cutAfter is a device that goes down after its next n writes (a target that
// is lost again while a re-persist rewrites the layout).
type cutAfter struct {
	*blockdev.Switchable
	mu sync.Mutex
	n  int // writes left; < 0: no cut armed
}

func (c *cutAfter) arm(n int) {
	c.mu.Lock()
	c.n = n
	c.mu.Unlock()
}

func (c *cutAfter) WriteAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	if c.n == 0 {
		c.Switchable.SetDown(true)
	}
	if c.n >= 0 {
		c.n--
	}
	c.mu.Unlock()
	return c.Switchable.WriteAt(p, off)
}

// A re-persist that the device fails midway has already formatted a new
// layout (new nonce) onto it; the next attempt must take that layout as its
// own, not refuse it as foreign (a frozen iSCSI target thawed under load in
// qemu scenario (d): the LUN dropped again during the first re-persist, and
// every later attempt said "foreign layout" — the node stayed RAM-only).
func TestRepersistAfterAnInterruptedRepersist(t *testing.T) {
	for _, cut := range []int{0, 1, 2, 3, 4} { // writes before the device fails again
		t.Run(fmt.Sprintf("after-%d-writes", cut), func(t *testing.T) {
			mem := blockdev.NewMem(512<<10, 512)
			dev := &cutAfter{Switchable: &blockdev.Switchable{BlockDevice: mem}, n: -1}
			s, err := Open(dev, Options{LogBytes: 128 << 10, Logger: quiet})
			must(t, err)
			for i := uint64(1); i <= 20; i++ {
				must(t, s.StoreLogs([]*raft.Log{entry(i, 1, 200)}))
			}
			dev.SetDown(true)
			for i := uint64(21); i <= 40; i++ {
				must(t, s.StoreLogs([]*raft.Log{entry(i, 2, 200)}))
			}
			if s.Err() == nil {
				t.Fatal("loss not latched")
			}
			dev.SetDown(false)
			dev.arm(cut)
			if err := s.Repersist(); err == nil {
				t.Fatal("a re-persist cut short by the device succeeded")
			}
			dev.arm(-1)
			dev.SetDown(false)
			for try := 0; ; try++ {
				err := s.Repersist()
				if err == nil {
					break
				}
				if errors.Is(err, ErrForeign) || try == 3 {
					t.Fatalf("re-persist after an interrupted one: %v", err)
				}
			}
			if err := s.Err(); err != nil {
				t.Fatalf("still lost: %v", err)
			}
			s2, err := Open(mem, Options{Logger: quiet})
			must(t, err)
			if d := diff(readState(t, s), readState(t, s2)); d != "" {
				t.Fatalf("device after the re-persist differs from RAM: %s", d)
			}
		})
	}
}

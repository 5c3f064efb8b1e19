package local

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"xedge/storage"
	"xedge/storage/blockdev"
)

var quiet = slog.New(slog.DiscardHandler)

func TestDeviceBackendRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lun")
	openDev := func() (*Store, *blockdev.File) {
		dev, err := blockdev.OpenFile(path, 256<<10)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, Config{Device: dev, Node: "n1", Logger: quiet, SnapshotBytes: 8 << 10})
		if err != nil {
			t.Fatal(err)
		}
		return s, dev
	}
	s, dev := openDev()
	must(t, s.Declare(ctx, storage.TableSpec{Name: "d"}))
	must(t, s.Declare(ctx, storage.TableSpec{Name: "r", Copy: storage.RAM}))
	for i := 0; i < 600; i++ { // several snapshots and ring passes
		mustApply(t, s, storage.Put("d", fmt.Sprintf("k%03d", i%250), []byte(fmt.Sprint(i))), storage.Put("r", "x", nil))
	}
	mustApply(t, s, storage.DeletePrefix("d", "k00"))
	if st := s.Status(); st.Mode != "durable" || st.Generation < 2 {
		t.Fatalf("status %+v", st)
	}
	inc := s.Incarnation()
	stop(t, s)
	dev.Close()

	s, dev = openDev()
	defer dev.Close()
	defer stop(t, s)
	if s.Incarnation() <= inc {
		t.Fatalf("incarnation %d after %d", s.Incarnation(), inc)
	}
	d, _ := s.Durable("d")
	if n, _ := d.Count(""); n != 240 {
		t.Fatalf("disc rows %d", n)
	}
	if v, _ := get(t, s, "d", "k099"); v != "599" {
		t.Fatalf("k099 = %q", v)
	}
	r, _ := s.Durable("r")
	if n, _ := r.Count(""); n != 0 {
		t.Fatalf("ram rows survived: %d", n)
	}
}

// TestDeviceCrashMatrix: the local store on a Fault device, crashing at every
// write and every sync of a workload of Applies with snapshots in between.
// Every acknowledged Apply must be there after reopening, and nothing else but
// possibly the one in flight.
func TestDeviceCrashMatrix(t *testing.T) {
	const size, batches = 96 << 10, 60
	run := func(dev storage.BlockDevice) (acked int) {
		s, err := Open(ctx, Config{Device: dev, Logger: quiet, SnapshotBytes: 2 << 10, RetryEvery: -1})
		if err != nil {
			return -1
		}
		if err := s.Declare(ctx, storage.TableSpec{Name: "t"}); err != nil || s.Status().Mode != "durable" {
			return -1
		}
		for i := 0; i < batches; i++ {
			err := s.Apply(ctx, storage.Put("t", fmt.Sprintf("k%02d", i), make([]byte, 100+i*7)), storage.Delete("t", fmt.Sprintf("k%02d", i-5)))
			if err != nil {
				t.Fatalf("apply %d: %v", i, err)
			}
			if s.Status().Mode != "durable" {
				return i
			}
			if i%15 == 14 {
				s.Snapshot(ctx)
				if s.Status().Mode != "durable" {
					return i + 1
				}
			}
		}
		s.Stop(ctx)
		return batches
	}
	clean := blockdev.NewFault(blockdev.NewMem(size, 512), blockdev.FaultConfig{})
	if n := run(clean); n != batches {
		t.Fatalf("fault-free run: %d", n)
	}
	writes, syncs := clean.Writes(), clean.Syncs()
	t.Logf("%d writes, %d syncs", writes, syncs)
	for _, mode := range []blockdev.FaultMode{blockdev.Drop, blockdev.Tear, blockdev.Error, blockdev.LostSync} {
		total := writes
		if mode == blockdev.LostSync {
			total = syncs
		}
		for n := 1; n <= total; n++ {
			base := blockdev.NewMem(size, 512)
			f := blockdev.NewFault(base, blockdev.FaultConfig{FailAt: n, Mode: mode, Seed: int64(n)})
			acked := run(f)
			f.Crash()
			s, err := Open(ctx, Config{Device: base, Logger: quiet, RetryEvery: -1})
			if err != nil {
				t.Fatalf("%v at %d: reopen: %v", mode, n, err)
			}
			tb, err := s.Durable("t")
			if err != nil {
				if acked < 0 {
					continue // crashed before the table was declared
				}
				t.Fatalf("%v at %d: table lost: %v", mode, n, err)
			}
			// Applies 0..acked-1 are in; acked (in flight) may be; later ones not.
			for i := 0; i < batches; i++ {
				_, ok, _ := tb.Get(fmt.Sprintf("k%02d", i))
				want := i < acked && i >= acked-5
				if i == acked && acked < batches {
					continue
				}
				if i == acked-5 && acked < batches { // deleted by the in-flight apply, or not
					continue
				}
				if ok != want {
					t.Fatalf("%v at %d (%d applies acknowledged): k%02d present=%v", mode, n, acked, i, ok)
				}
			}
		}
	}
}

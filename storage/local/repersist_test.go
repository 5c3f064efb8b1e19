package local

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"xedge/storage"
	"xedge/storage/blockdev"
	"xedge/storage/blocklog"
)

// flaky is a device that fails every write and sync while down.

func TestStorageLossAndRepersist(t *testing.T) {
	mem := blockdev.NewMem(512<<10, 512)
	dev := &blockdev.Switchable{BlockDevice: mem}
	s, err := Open(ctx, Config{Device: dev, Logger: quiet})
	must(t, err)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	put := func(i int) {
		t.Helper()
		mustApply(t, s, storage.Put("t", fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i))))
	}
	for i := 0; i < 10; i++ {
		put(i)
	}
	if err := s.Repersist(ctx); err != nil {
		t.Fatalf("repersist while durable must be a no-op: %v", err)
	}
	dev.SetDown(true)
	put(10) // the disk fails under this one: committed in RAM
	select {
	case err := <-s.Lost():
		if !errors.Is(err, blockdev.ErrDown) {
			t.Fatalf("lost: %v", err)
		}
	default:
		t.Fatal("no loss report")
	}
	if st := s.Status(); st.Mode != "degraded-ram" {
		t.Fatalf("status %+v", st)
	}
	for i := 11; i < 20; i++ {
		put(i)
	}
	must(t, s.Declare(ctx, storage.TableSpec{Name: "u"}))
	if err := s.Repersist(ctx); err == nil {
		t.Fatal("repersist succeeded on a dead device")
	}
	dev.SetDown(false)
	// Applies keep going while the re-persist runs.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 20; i < 60; i++ {
			put(i)
		}
	}()
	must(t, s.Repersist(ctx))
	wg.Wait()
	if st := s.Status(); st.Mode != "durable" {
		t.Fatalf("status after repersist %+v", st)
	}
	put(60)
	stop(t, s)

	s, err = Open(ctx, Config{Device: mem, Logger: quiet})
	must(t, err)
	defer stop(t, s)
	tb, _ := s.Durable("t")
	if n, _ := tb.Count(""); n != 61 {
		t.Fatalf("rows after restart: %d", n)
	}
	if _, err := s.Durable("u"); err != nil {
		t.Fatalf("table declared during loss: %v", err)
	}
}

func TestReadOnlyOnLoss(t *testing.T) {
	dev := &blockdev.Switchable{BlockDevice: blockdev.NewMem(512<<10, 512)}
	s, err := Open(ctx, Config{Device: dev, Logger: quiet, OnLoss: "read-only"})
	must(t, err)
	defer stop(t, s)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	mustApply(t, s, storage.Put("t", "a", nil))
	dev.SetDown(true)
	if err := s.Apply(ctx, storage.Put("t", "b", nil)); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("apply on loss: %v", err)
	}
	if _, ok := get(t, s, "t", "b"); ok {
		t.Fatal("refused write applied")
	}
	if st := s.Status(); st.Mode != "read-only" {
		t.Fatalf("status %+v", st)
	}
	dev.SetDown(false)
	must(t, s.Repersist(ctx))
	mustApply(t, s, storage.Put("t", "c", nil))
}

func TestRepersistDir(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, func(c *Config) { c.Logger = quiet })
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	mustApply(t, s, storage.Put("t", "a", nil))
	s.j.(*dirJournal).f.Close() // the next write fails: storage lost
	mustApply(t, s, storage.Put("t", "b", nil))
	if st := s.Status(); st.Mode != "degraded-ram" {
		t.Fatalf("status %+v", st)
	}
	mustApply(t, s, storage.Put("t", "c", nil))
	must(t, s.Repersist(ctx))
	mustApply(t, s, storage.Put("t", "d", nil))
	stop(t, s)
	s = open(t, dir, func(c *Config) { c.Logger = quiet })
	defer stop(t, s)
	tb, _ := s.Durable("t")
	if n, _ := tb.Count(""); n != 4 {
		t.Fatalf("rows %d", n)
	}
}

func TestAutomaticRetry(t *testing.T) {
	mem := blockdev.NewMem(512<<10, 512)
	dev := &blockdev.Switchable{BlockDevice: mem}
	s, err := Open(ctx, Config{Device: dev, Logger: quiet, RetryEvery: 5 * time.Millisecond})
	must(t, err)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	dev.SetDown(true)
	mustApply(t, s, storage.Put("t", "a", nil))
	time.Sleep(30 * time.Millisecond) // a few failed attempts
	if st := s.Status(); st.Mode != "degraded-ram" {
		t.Fatalf("status %+v", st)
	}
	dev.SetDown(false)
	deadline := time.Now().Add(5 * time.Second)
	for s.Status().Mode != "durable" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Status(); st.Mode != "durable" {
		t.Fatalf("not re-persisted by itself: %+v", st)
	}
	mustApply(t, s, storage.Put("t", "b", nil))
	stop(t, s)
	s, err = Open(ctx, Config{Device: mem, Logger: quiet, RetryEvery: -1})
	must(t, err)
	defer stop(t, s)
	tb, _ := s.Durable("t")
	if n, _ := tb.Count(""); n != 2 {
		t.Fatalf("rows %d", n)
	}
}

func TestRepersistRefusesForeignDevice(t *testing.T) {
	dev := &blockdev.Switchable{BlockDevice: blockdev.NewMem(512<<10, 512)}
	s, err := Open(ctx, Config{Device: dev, Logger: quiet, RetryEvery: -1})
	must(t, err)
	defer stop(t, s)
	must(t, s.Declare(ctx, storage.TableSpec{Name: "t"}))
	dev.SetDown(true)
	mustApply(t, s, storage.Put("t", "a", nil))
	other := blockdev.NewMem(512<<10, 512)
	o, err := Open(ctx, Config{Device: other, Logger: quiet, RetryEvery: -1})
	must(t, err)
	must(t, o.Declare(ctx, storage.TableSpec{Name: "theirs"}))
	stop(t, o)
	dev.Replace(other)
	dev.SetDown(false)
	if err := s.Repersist(ctx); !errors.Is(err, blocklog.ErrForeign) {
		t.Fatalf("repersist onto another node's device: %v", err)
	}
	// A blank replacement is fine.
	dev.Replace(blockdev.NewMem(512<<10, 512))
	must(t, s.Repersist(ctx))
}

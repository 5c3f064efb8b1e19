package local

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"xedge/storage"
	"xedge/storage/blockdev"
)

// Commit latency of the single-node store: one Apply (one put of 200 bytes on
// a disc table) per op, fdatasync'd before Apply returns. Run with
//
//	go test -run '^$' -bench . -benchtime 2000x ./storage/local
func benchApply(b *testing.B, cfg Config, parallel bool) {
	cfg.Logger = quiet
	s, err := Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop(ctx)
	if err := s.Declare(ctx, storage.TableSpec{Name: "t"}); err != nil {
		b.Fatal(err)
	}
	val := make([]byte, 200)
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for i := 0; i < b.N; i++ {
			if err := s.Apply(ctx, storage.Put("t", fmt.Sprintf("user%08d", i%10000), val)); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var n atomic.Int64
	b.SetParallelism(16) // many sessions writing at once: group commit
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if err := s.Apply(ctx, storage.Put("t", fmt.Sprintf("user%08d", i%10000), val)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkApplyDir(b *testing.B) { benchApply(b, Config{Dir: b.TempDir()}, false) }

func BenchmarkApplyDirParallel(b *testing.B) { benchApply(b, Config{Dir: b.TempDir()}, true) }

func BenchmarkApplyFileDevice(b *testing.B) {
	dev, err := blockdev.OpenFile(filepath.Join(b.TempDir(), "lun"), 64<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	benchApply(b, Config{Device: dev}, false)
}

func BenchmarkApplyRAMOnly(b *testing.B) { benchApply(b, Config{}, false) }

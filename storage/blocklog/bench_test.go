package blocklog

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"

	"xedge/storage/blockdev"
)

// StoreLogs throughput on a file device (fdatasync per call), as raft drives
// it: batches of 1 and 64 entries of 256 bytes, compacting as it goes. Run with
//
//	go test -run '^$' -bench StoreLogs -benchtime 2000x ./storage/blocklog
func benchStoreLogs(b *testing.B, batch int) {
	dev, err := blockdev.OpenFile(filepath.Join(b.TempDir(), "lun"), 256<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	s, err := Open(dev, Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 256)
	logs := make([]*raft.Log, batch)
	idx := uint64(0)
	b.SetBytes(int64(batch * len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range logs {
			idx++
			logs[j] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		if i%256 == 255 {
			s.DeleteRange(1, idx-uint64(batch))
		}
	}
	b.StopTimer()
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkStoreLogs1(b *testing.B)  { benchStoreLogs(b, 1) }
func BenchmarkStoreLogs64(b *testing.B) { benchStoreLogs(b, 64) }

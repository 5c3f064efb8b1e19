package iscsibench

import (
	"context"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Microsecond)
	}
	l := Summarize(d)
	if l.N != 100 || l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 || l.Mean != 50.5 {
		t.Fatalf("%+v", l)
	}
	if (Summarize(nil) != Latency{}) {
		t.Fatal("empty")
	}
}

type memDev struct{ b []byte }

func (m *memDev) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }
func (m *memDev) Sync() error                              { return nil }
func (m *memDev) Size() int64                              { return int64(len(m.b)) }
func (m *memDev) BlockSize() int                           { return 512 }

func TestRun(t *testing.T) {
	o := Options{Writes: 50, Warmup: 5, SeqBytes: 4 << 20, SeqBlock: 64 << 10, SeqDepth: 3}
	d := &memDev{b: make([]byte, Needed(o))}
	r, err := Run(context.Background(), d, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Write4K.N != 50 || r.SeqMiBps <= 0 || r.SeqBytes != 4<<20 {
		t.Fatalf("%+v", r)
	}
	if _, err := Run(context.Background(), &memDev{b: make([]byte, 4096)}, o); err == nil {
		t.Fatal("a device too small was accepted")
	}
}

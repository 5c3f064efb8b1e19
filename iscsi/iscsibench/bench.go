// Package iscsibench measures an iSCSI LUN the way storage uses it: 4 KiB
// durable writes one at a time (a log append per commit) and large sequential
// writes. It is shared by `xedge iscsi bench` and bench/iscsi; runtime code
// never imports it.
package iscsibench

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"time"
)

// Device is what the benchmark writes to: an iscsi.Device, or a local file
// wrapper for comparison.
type Device interface {
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Size() int64
	BlockSize() int
}

// Options bound a run. Zero values mean the defaults.
type Options struct {
	Writes   int   `json:"writes"`    // 4 KiB durable writes timed one by one (default 2000)
	Warmup   int   `json:"warmup"`    // untimed writes first (default 100)
	SeqBytes int64 `json:"seq_bytes"` // bytes written sequentially (default 256 MiB)
	SeqBlock int   `json:"seq_block"` // size of one sequential write (default 1 MiB)
	SeqDepth int   `json:"seq_depth"` // sequential writes in flight (default 4)
	Offset   int64 `json:"offset"`    // start of the region written (default 0)
}

// WithDefaults fills in zero fields.
func (o Options) WithDefaults() Options { return o.withDefaults() }

func (o Options) withDefaults() Options {
	if o.Writes <= 0 {
		o.Writes = 2000
	}
	if o.Warmup <= 0 {
		o.Warmup = 100
	}
	if o.SeqBytes <= 0 {
		o.SeqBytes = 256 << 20
	}
	if o.SeqBlock <= 0 {
		o.SeqBlock = 1 << 20
	}
	if o.SeqDepth <= 0 {
		o.SeqDepth = 4
	}
	return o
}

// Latency summarises a set of durations, in microseconds.
type Latency struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_us"`
	P90  float64 `json:"p90_us"`
	P99  float64 `json:"p99_us"`
	Mean float64 `json:"mean_us"`
	Max  float64 `json:"max_us"`
}

// Summarize computes a Latency from samples.
func Summarize(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	us := func(x time.Duration) float64 { return math.Round(float64(x)/float64(time.Microsecond)*10) / 10 }
	pct := func(p float64) time.Duration { return s[min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1)] }
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return Latency{N: len(s), P50: us(pct(0.50)), P90: us(pct(0.90)), P99: us(pct(0.99)),
		Mean: us(sum / time.Duration(len(s))), Max: us(s[len(s)-1])}
}

// Result is one device's measurements.
type Result struct {
	Write4K     Latency `json:"write_4k_durable"`
	SeqMiBps    float64 `json:"seq_write_mib_s"`
	SeqBytes    int64   `json:"seq_bytes"`
	SeqBlock    int     `json:"seq_block"`
	SeqDepth    int     `json:"seq_depth"`
	SeqDuration float64 `json:"seq_seconds"`
}

// Needed returns the bytes a run writes from Options.Offset on.
func Needed(o Options) int64 {
	o = o.withDefaults()
	return max(int64(o.Writes+o.Warmup)*4096, o.SeqBytes)
}

// Latency4K times o.Writes durable 4 KiB writes at increasing offsets (a log
// append), each followed by Sync (a no-op on FUA devices).
func Latency4K(ctx context.Context, d Device, o Options) (Latency, error) {
	s, err := Samples4K(ctx, d, o)
	if err != nil {
		return Latency{}, err
	}
	return Summarize(s), nil
}

// Samples4K is Latency4K's raw samples.
func Samples4K(ctx context.Context, d Device, o Options) ([]time.Duration, error) {
	o = o.withDefaults()
	if d.BlockSize() > 4096 || 4096%d.BlockSize() != 0 {
		return nil, fmt.Errorf("iscsibench: block size %d does not divide 4096", d.BlockSize())
	}
	if o.Offset+int64(o.Writes+o.Warmup)*4096 > d.Size() {
		return nil, fmt.Errorf("iscsibench: device of %d bytes is too small", d.Size())
	}
	buf := make([]byte, 4096)
	samples := make([]time.Duration, 0, o.Writes)
	for i := 0; i < o.Warmup+o.Writes; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for j := 0; j < len(buf); j += 8 {
			buf[j] = byte(i)
			buf[j+1] = byte(i >> 8)
		}
		start := time.Now()
		if _, err := d.WriteAt(buf, o.Offset+int64(i)*4096); err != nil {
			return nil, err
		}
		if err := d.Sync(); err != nil {
			return nil, err
		}
		if i >= o.Warmup {
			samples = append(samples, time.Since(start))
		}
	}
	return samples, nil
}

// Sequential writes o.SeqBytes in o.SeqBlock writes, o.SeqDepth in flight,
// then Syncs, and returns MiB/s.
func Sequential(ctx context.Context, d Device, o Options) (Result, error) {
	o = o.withDefaults()
	r := Result{SeqBytes: o.SeqBytes, SeqBlock: o.SeqBlock, SeqDepth: o.SeqDepth}
	if o.Offset+o.SeqBytes > d.Size() {
		return r, fmt.Errorf("iscsibench: device of %d bytes is too small for %d sequential bytes", d.Size(), o.SeqBytes)
	}
	n := int(o.SeqBytes / int64(o.SeqBlock))
	next := make(chan int)
	errs := make(chan error, o.SeqDepth)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.SeqDepth; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, o.SeqBlock)
			for i := range next {
				buf[0], buf[len(buf)-1] = byte(i), byte(i>>8)
				if _, err := d.WriteAt(buf, o.Offset+int64(i)*int64(o.SeqBlock)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		return r, err
	}
	if err := d.Sync(); err != nil {
		return r, err
	}
	el := time.Since(start)
	r.SeqDuration = math.Round(el.Seconds()*1000) / 1000
	r.SeqMiBps = math.Round(float64(int64(n)*int64(o.SeqBlock))/(1<<20)/el.Seconds()*10) / 10
	return r, nil
}

// Run does both measurements.
func Run(ctx context.Context, d Device, o Options) (Result, error) {
	lat, err := Latency4K(ctx, d, o)
	if err != nil {
		return Result{}, fmt.Errorf("4 KiB latency: %w", err)
	}
	r, err := Sequential(ctx, d, o)
	if err != nil {
		return r, fmt.Errorf("sequential: %w", err)
	}
	r.Write4K = lat
	return r, nil
}

// Print writes a human-readable summary.
func Print(w io.Writer, name string, r Result) {
	fmt.Fprintf(w, "%-22s 4 KiB durable write: p50 %7.1f µs  p99 %7.1f µs  mean %7.1f µs (n=%d)\n",
		name, r.Write4K.P50, r.Write4K.P99, r.Write4K.Mean, r.Write4K.N)
	if r.SeqMiBps > 0 {
		fmt.Fprintf(w, "%-22s sequential write:    %7.1f MiB/s (%d MiB in %d KiB writes, %d in flight)\n",
			name, r.SeqMiBps, r.SeqBytes>>20, r.SeqBlock>>10, r.SeqDepth)
	}
}

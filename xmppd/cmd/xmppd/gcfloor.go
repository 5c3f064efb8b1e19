package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// A floor under the GC's heap target (config gc-min-heap-mib). With GOGC's
// proportional target alone, a node with a small live heap (a few hundred busy
// sessions: ~10 MiB) collects every ~10 MiB of allocation, dozens of times a
// second under chat load, and on one core every collection's mark phase delays
// the stanzas in flight: it is the latency tail (docs/performance.md, "GC floor").
// The floor keeps the next collection from starting before the heap reaches
// max(floor, GOGC's target): after every collection the GC percentage is
// set so that the proportional target is at least the floor. Above the floor
// (many sessions) GOGC applies unchanged, so the floor never lets the heap grow
// past what GOGC would allow for the same live heap, or past the memory limit.
//
// Go has no minimum-heap setting of its own (GOMEMLIMIT is a ceiling). This is
// the technique of Uber's GOGC tuner: a finalizer on a sentinel object runs once
// per collection and re-arms itself.

// heapMinimum is the runtime's minimum heap target at GOGC=100 (runtime
// defaultHeapMinimum); it scales with GOGC.
const heapMinimum = 4 << 20

// floorPercent is the GC percentage that makes the next heap target about
// floor. Go's target is the larger of live + (live + roots) × GOGC/100 (roots:
// the goroutine stacks and globals the GC scans) and 4 MiB × GOGC/100; both grow
// with GOGC, so the percentage is the smaller of the two that reach the floor.
func floorPercent(live, roots, floor uint64, base int) int {
	if base < 0 || floor == 0 {
		return base
	}
	scan := live + roots
	target := max(live+scan*uint64(base)/100, heapMinimum*uint64(base)/100)
	if target >= floor {
		return base
	}
	pct := float64(floor) * 100 / heapMinimum
	if scan > 0 {
		pct = min(pct, float64(floor-live)*100/float64(scan))
	}
	const most = 1 << 20 // the memory limit still caps the heap
	return max(base, int(min(pct, most)))
}

// gcSentinel carries the per-collection finalizer. It holds a pointer so that it
// is not batched in the tiny allocator (whose blocks may delay finalizers).
type gcSentinel struct{ _ *int }

// gcFloor applies floorPercent after every collection until stop.
type gcFloor struct {
	floor uint64
	base  int

	mu      sync.Mutex
	stopped bool
	last    int
	sample  []metrics.Sample
}

// startGCFloor installs the floor (floor bytes over GC percentage base) and
// applies it once at once.
func startGCFloor(floor uint64, base int) *gcFloor {
	g := &gcFloor{floor: floor, base: base, last: base,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}}
	g.adjust()
	g.arm()
	return g
}

func (g *gcFloor) arm() {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
		if g.adjust() {
			g.arm()
		}
	})
}

// adjust sets the GC percentage for the live heap of the last collection; it
// reports false once stopped.
func (g *gcFloor) adjust() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	metrics.Read(g.sample)
	v := func(i int) uint64 {
		if g.sample[i].Value.Kind() == metrics.KindUint64 {
			return g.sample[i].Value.Uint64()
		}
		return 0
	}
	if pct := floorPercent(v(0), v(1)+v(2), g.floor, g.base); pct != g.last {
		debug.SetGCPercent(pct)
		g.last = pct
	}
	return true
}

// stop removes the floor: the GC percentage goes back to base.
func (g *gcFloor) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stopped {
		g.stopped = true
		debug.SetGCPercent(g.base)
	}
}

package main

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFloorPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, roots, floor uint64
		base, want         int
	}{
		{10 * mib, 0, 256 * mib, 100, 2460},        // small live heap: the floor sets the target
		{10 * mib, 10 * mib, 256 * mib, 100, 1230}, // roots count in the target
		{mib / 4, mib / 4, 128 * mib, 100, 3200},   // tiny heap: the scaled 4 MiB minimum decides
		{128 * mib, 0, 256 * mib, 100, 100},        // live x 2 reaches the floor: GOGC as is
		{500 * mib, 0, 256 * mib, 100, 100},        // above the floor: GOGC as is
		{100 * mib, 0, 256 * mib, 200, 200},        // 300 MiB >= floor
		{10 * mib, 0, 0, 100, 100},                 // no floor
		{10 * mib, 0, 256 * mib, -1, -1},           // GC off stays off
		{0, 0, 256 * mib, 100, 6400},               // no collection yet
		{1, 0, 1 << 62, 100, 1 << 20},              // bounded
	} {
		if got := floorPercent(c.live, c.roots, c.floor, c.base); got != c.want {
			t.Errorf("floorPercent(%d, %d, %d, %d) = %d, want %d", c.live, c.roots, c.floor, c.base, got, c.want)
		}
	}
}

// churn allocates n bytes of short-lived garbage and returns how many
// collections ran meanwhile.
func churn(n int) uint32 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var keep []byte
	for i := 0; i < n/(64<<10); i++ {
		keep = make([]byte, 64<<10)
		keep[0] = byte(i)
	}
	runtime.ReadMemStats(&after)
	_ = keep
	return after.NumGC - before.NumGC
}

// With a small live heap, the floor cuts the number of collections for the same
// allocation: GOGC=100 collects every few MiB here, the floor every ~floor.
func TestGCFloorCollectsLess(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	runtime.GC()
	const total = 512 << 20
	plain := churn(total)

	g := startGCFloor(128<<20, 100)
	runtime.GC() // the floor is applied after a collection
	floored := churn(total)
	g.stop()
	t.Logf("collections for %d MiB of garbage: %d with GOGC=100, %d with a 128 MiB floor", total>>20, plain, floored)
	if floored < 2 || floored > 8 {
		t.Errorf("%d collections with a 128 MiB floor for 512 MiB of garbage, want about 4", floored)
	}
	if plain < 2*floored {
		t.Errorf("the floor did not reduce collections: %d without, %d with", plain, floored)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("after stop the GC percentage is %d, want the base 100", got)
	}
}

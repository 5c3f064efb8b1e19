package loadgen

import (
	"runtime"
	"runtime/debug"
)

// InstrumentHeap is the heap the generator may grow to while GC is held off
// during a measurement (see HoldGC).
const InstrumentHeap = 1 << 30

// HoldGC keeps the generator's own garbage collector out of a measurement: the
// generator is the measuring instrument, and with the default GOGC=100 its
// collections (stop-the-world pauses, mark assists, stack shrinking and regrowth)
// land in every server's latency and login figures alike. It collects once, then
// turns the proportional collector off (GOGC=off) with a memory limit of limit
// bytes, so a collection runs only if the heap reaches the limit (a cheap one: the
// live heap is small). It returns the function restoring the previous settings,
// which also collects.
func HoldGC(limit int64) (restore func()) {
	runtime.GC()
	oldLimit := debug.SetMemoryLimit(limit)
	oldPercent := debug.SetGCPercent(-1)
	return func() {
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
		runtime.GC()
	}
}

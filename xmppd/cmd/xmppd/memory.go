package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"xedge/xmppd/config"
)

// The memory policy of the process (docs/performance.md, "Memory policy"): Go's GC
// percentage and soft memory limit from the configuration, and a releaser that,
// once a burst of allocation (e.g. thousands of logins) is over, collects the
// burst's garbage and returns the freed pages to the OS at once. Without it the heap
// stays at up to (1 + GOGC/100) times the live heap until enough new allocation
// triggers the next collection, which on an idle appliance may be minutes away.

// applyGC sets the GC percentage and the soft memory limit (0: left as they are)
// and installs the heap floor (gcfloor.go); the caller stops the floor it returns
// (nil: none).
func applyGC(cfg *config.Config, log *slog.Logger) *gcFloor {
	if cfg.GCPercent != 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	if cfg.MemoryLimitMiB > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimitMiB) << 20)
	}
	base := debug.SetGCPercent(100) // read the percentage in force ...
	debug.SetGCPercent(base)        // ... and put it back
	log.Info("memory policy", "component", "server", "gc_percent", base, "memory_limit_mib", cfg.MemoryLimitMiB,
		"gc_min_heap_mib", cfg.GCMinHeapMiB, "release_memory_after", cfg.ReleaseMemoryAfter)
	if cfg.GCMinHeapMiB <= 0 || base < 0 {
		return nil
	}
	return startGCFloor(uint64(cfg.GCMinHeapMiB)<<20, base)
}

// Releaser tuning.
const (
	releaseTick     = 250 * time.Millisecond
	quietPerTick    = 256 << 10 // allocation below this per tick (1 MiB/s) counts as quiet
	burstPerTick    = 2 << 20   // a tick with this much allocation (8 MiB/s) makes a burst
	minBurst        = 16 << 20  // allocated since the last release before another is considered
	minReclaimable  = 2 << 20   // garbage + free pages worth a collection
	reclaimFraction = 16        // ... and at least live/16 of them
)

// memSample is what the releaser reads from runtime/metrics.
type memSample struct {
	allocs  uint64 // cumulative bytes allocated
	objects uint64 // heap bytes in objects (live and not yet swept)
	live    uint64 // live heap at the last GC
	free    uint64 // free heap pages not yet returned to the OS
}

var memMetrics = []string{"/gc/heap/allocs:bytes", "/memory/classes/heap/objects:bytes", "/gc/heap/live:bytes", "/memory/classes/heap/free:bytes"}

func readMem(s []metrics.Sample) memSample {
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return memSample{allocs: v(0), objects: v(1), live: v(2), free: v(3)}
}

// releaser decides when to collect and return memory: after a burst (a tick of at
// least burstPerTick, and minBurst in all since the last release), when allocation
// has stayed below quietPerTick for `after`, and the garbage plus free pages are
// worth it. Light steady traffic never makes a burst, so it never forces a GC.
type releaser struct {
	after     time.Duration
	lastBusy  time.Time
	prev      uint64 // allocs at the previous tick
	atRelease uint64 // allocs after the last release
	burst     bool   // a tick of burstPerTick since the last release
	started   bool
}

// step takes one sample and reports whether to release now.
func (r *releaser) step(now time.Time, m memSample) bool {
	if !r.started {
		r.started, r.prev, r.atRelease, r.lastBusy = true, m.allocs, m.allocs, now
		return false
	}
	if d := m.allocs - r.prev; d > quietPerTick {
		r.lastBusy = now
		r.burst = r.burst || d >= burstPerTick
	}
	r.prev = m.allocs
	if !r.burst || now.Sub(r.lastBusy) < r.after || m.allocs-r.atRelease < minBurst {
		return false
	}
	var garbage uint64
	if m.objects > m.live {
		garbage = m.objects - m.live
	}
	return garbage+m.free >= max(minReclaimable, m.live/reclaimFraction)
}

// released records a release (allocs read after it).
func (r *releaser) released(allocs uint64) { r.atRelease, r.prev, r.burst = allocs, allocs, false }

// releaseMemory runs the releaser until ctx ends.
func releaseMemory(ctx context.Context, after time.Duration, log *slog.Logger) {
	runReleaser(ctx, after, log, nil)
}

// runReleaser is releaseMemory; sampled, if set, is closed once the releaser
// took its first sample (a burst before it is the baseline, not a burst).
func runReleaser(ctx context.Context, after time.Duration, log *slog.Logger, sampled chan<- struct{}) {
	s := make([]metrics.Sample, len(memMetrics))
	for i, n := range memMetrics {
		s[i].Name = n
	}
	r := &releaser{after: after}
	t := time.NewTicker(releaseTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m := readMem(s)
			released := r.step(now, m)
			if sampled != nil {
				close(sampled)
				sampled = nil
			}
			if !released {
				continue
			}
			start := time.Now()
			debug.FreeOSMemory()
			after := readMem(s)
			r.released(after.allocs)
			log.Debug("allocation burst over: memory returned to the OS", "component", "server",
				"heap_objects_before", m.objects, "heap_objects_after", after.objects, "live", after.live, "took", time.Since(start))
		}
	}
}

package main

import (
	"log/slog"
	"runtime"
)

// minProcs is the fewest Ps xmppd runs with. With one P (a one-CPU machine, or
// an affinity or cgroup of one CPU) every fdatasync of the storage's group
// commit and of the MAM archive holds xmppd's only P until the runtime's
// monitor hands it off, and nothing else runs meanwhile: in the MUC benchmark,
// xmppd pinned to one CPU delivered 172-190k copies/s with GOMAXPROCS=1 and
// 220-233k with 2, its MAM last-page p99 went from 8-32 ms to 5-7 ms
// (docs/bench.md, "xmppd's GOMAXPROCS on its one core").
const minProcs = 2

// procsFor is the GOMAXPROCS xmppd sets: cur raised to minProcs, unless the
// operator chose it with the GOMAXPROCS environment variable (envSet).
func procsFor(cur int, envSet bool) int {
	if envSet || cur >= minProcs {
		return cur
	}
	return minProcs
}

// applyProcs raises GOMAXPROCS to minProcs where the runtime chose fewer.
func applyProcs(envSet bool, log *slog.Logger) {
	cur := runtime.GOMAXPROCS(0)
	if n := procsFor(cur, envSet); n != cur {
		runtime.GOMAXPROCS(n)
		log.Info("GOMAXPROCS raised: a blocking disk sync must not stop every goroutine", "component", "server", "from", cur, "to", n, "cpus", runtime.NumCPU())
	}
}

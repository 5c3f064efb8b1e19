package xmlstream

import "syscall"

// processCPU returns the CPU time (user+system, all threads, GC included) this process
// has used, in nanoseconds. Benchmarks report it per stanza because wall time is noisy
// on a shared machine.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

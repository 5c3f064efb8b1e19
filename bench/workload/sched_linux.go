package workload

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// runQueueWait returns the seconds the threads of process pid have spent
// runnable but waiting for a CPU (the second field of each thread's
// /proc/PID/task/TID/schedstat, ns), summed over its threads; 0 if unknown.
// Over a measurement it says how much of a latency the host's other work
// added: a thread waiting on the run queue delays what it would have sent.
func runQueueWait(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "schedstat"))
	if err != nil {
		return 0
	}
	var ns int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		if fs := bytes.Fields(b); len(fs) >= 2 {
			v, _ := strconv.ParseInt(string(fs[1]), 10, 64)
			ns += v
		}
	}
	return float64(ns) / 1e9
}

// cpuBusy returns the seconds CPU n has been busy since boot (all processes:
// /proc/stat's cpuN line less idle and iowait, in USER_HZ = 100 per second);
// -1 if unknown.
func cpuBusy(n int) float64 {
	if n < 0 {
		return -1
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	name := []byte("cpu" + strconv.Itoa(n) + " ")
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(line, name) {
			continue
		}
		fs := bytes.Fields(line[len(name):])
		if len(fs) < 5 {
			return -1
		}
		var busy int64
		for i, f := range fs[:min(len(fs), 8)] {
			v, _ := strconv.ParseInt(string(f), 10, 64)
			if i != 3 && i != 4 { // idle, iowait
				busy += v
			}
		}
		return float64(busy) / 100
	}
	return -1
}

// coreSpeed times a fixed piece of CPU-bound work (sorting a copy of 16,384
// pseudo-random integers: branches and memory, as a server's work is) on CPU
// n, from a thread pinned there for the call: the best of 7 trials, in µs; -1
// if unknown. Run right before and after a measured phase on the server's CPU,
// it says how fast that CPU was for the server then: on a virtual machine
// the same work takes 30-40% longer at some times than at others (another
// guest on the physical core), which no figure of the guest's own shows.
func coreSpeed(n int) float64 {
	if n < 0 {
		return -1
	}
	res := make(chan float64, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, and with it
		// the affinity set here (threads the runtime starts meanwhile come
		// from its template thread, not from a locked one, so none inherits
		// it).
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(n)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			res <- -1
			return
		}
		r := rand.New(rand.NewPCG(1, 2))
		src := make([]uint32, 16384)
		for i := range src {
			src[i] = r.Uint32()
		}
		work := make([]uint32, len(src))
		best := math.Inf(1)
		for range 7 {
			copy(work, src)
			t0 := time.Now()
			slices.Sort(work)
			best = min(best, float64(time.Since(t0).Nanoseconds())/1e3)
		}
		res <- best
	}()
	return <-res
}

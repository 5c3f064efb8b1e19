package workload

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestRunQueueWait: with more busy threads than CPUs for 200 ms, this
// process's threads wait on the run queue, and the figure grows.
func TestRunQueueWait(t *testing.T) {
	if runQueueWait(0) != 0 {
		t.Fatal("pid 0 has a wait")
	}
	before := runQueueWait(os.Getpid())
	n := 2*runtime.NumCPU() + 1
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	var wg sync.WaitGroup
	stop := time.Now().Add(200 * time.Millisecond)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for x := 0; time.Now().Before(stop); x++ {
			}
		}()
	}
	wg.Wait()
	if after := runQueueWait(os.Getpid()); after <= before {
		t.Fatalf("run-queue wait %v s, before %v s: did not grow with %d busy threads", after, before, n)
	}
}

// TestCPUBusy: a CPU kept busy by this process for 300 ms shows ~0.3 s busy.
func TestCPUBusy(t *testing.T) {
	if cpuBusy(-1) != -1 || cpuBusy(1<<20) != -1 {
		t.Fatal("an unknown CPU has a figure")
	}
	b0 := 0.0
	for i := range runtime.NumCPU() {
		b0 += cpuBusy(i)
	}
	stop := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(stop); x++ {
	}
	b1 := 0.0
	for i := range runtime.NumCPU() {
		b1 += cpuBusy(i)
	}
	if d := b1 - b0; d < 0.2 {
		t.Fatalf("all CPUs together busy %.2f s while this test spun for 0.3 s", d)
	}
}

// TestCoreSpeed: the work takes a plausible time on CPU 0; an unknown CPU
// gives -1.
func TestCoreSpeed(t *testing.T) {
	alone := coreSpeed(0)
	if alone <= 0 || alone > 1e5 {
		t.Fatalf("coreSpeed(0) = %v µs", alone)
	}
	if coreSpeed(-1) != -1 {
		t.Fatal("coreSpeed(-1) is not -1")
	}
	t.Logf("CPU 0: %.0f µs", alone)
}

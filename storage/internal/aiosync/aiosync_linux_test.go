//go:build linux && (amd64 || arm64)

package aiosync

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const asyncExpected = true

// The goroutine waiting for a sync is parked in the netpoller ("IO wait"), not
// in a system call that holds its P ("syscall"), so with GOMAXPROCS=1 the
// rest of the process runs while the disk works.
func TestWaitParksInNetpoller(t *testing.T) {
	s, err := newSyncer()
	if err != nil {
		t.Fatalf("AIO context: %v (the kernel has CONFIG_AIO)", err)
	}
	defer s.close()
	f, err := os.Create(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan error, 1)
	go func() { done <- s.wait() }()
	state := ""
	deadline := time.Now().Add(10 * time.Second)
	for state == "" && time.Now().Before(deadline) {
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "aiosync.(*syncer).wait") {
				head, _, _ := strings.Cut(g, "\n")
				if strings.Contains(head, "[running]") || strings.Contains(head, "[runnable]") {
					break // not parked yet: look again
				}
				state = head
			}
		}
		runtime.Gosched()
	}
	if !strings.Contains(state, "[IO wait") {
		t.Fatalf("waiting goroutine: %q, want IO wait", state)
	}
	if err := s.submit(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the sync's completion did not wake the waiter")
	}
}

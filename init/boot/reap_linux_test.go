package boot

import (
	"os/exec"
	"testing"
	"time"
)

func TestReaperDeliversAndReaps(t *testing.T) {
	r := NewReaper()
	r.Start()
	defer r.Stop()
	// A child that exits before anyone waits: the status is kept for a late Wait.
	fast := exec.Command("/bin/sh", "-c", "exit 7")
	if err := fast.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if ws := r.Wait(fast.Process.Pid); ws.ExitStatus() != 7 {
		t.Fatalf("fast child: %v", ws)
	}
	// A child waited for while it runs.
	slow := exec.Command("/bin/sh", "-c", "sleep 0.1; exit 3")
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { done <- r.Wait(slow.Process.Pid).ExitStatus() }()
	select {
	case code := <-done:
		if code != 3 {
			t.Fatalf("slow child: %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no status")
	}
}

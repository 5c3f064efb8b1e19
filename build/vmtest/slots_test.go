//go:build vmtest

package vmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A qemu that has exited but is not reaped yet (a zombie) does not hold a VM
// slot: waitVMSlots used to count it (pgrep does) and wait 15 s for nothing.
func TestRunningQemusSkipsZombies(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatalf("sleep: %v", err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "qemu-system-slottest")
	if err := os.WriteFile(fake, b, 0o755); err != nil {
		t.Fatal(err)
	}
	before := runningQemus()
	cmd := exec.Command(fake, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	if got := runningQemus(); got != before+1 {
		t.Fatalf("with one more live qemu-system process: %d, want %d", got, before+1)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	// Not reaped (no Wait yet): it is a zombie once the kernel has killed it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "stat"))
		if _, state, ok := procStat(string(st)); ok && state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process did not become a zombie: %q", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := runningQemus(); got != before {
		t.Fatalf("with that process a zombie: %d, want %d", got, before)
	}
}

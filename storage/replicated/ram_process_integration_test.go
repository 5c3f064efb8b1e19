//go:build integration

package replicated

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Three real processes with file devices and a RAM table: RAM rows never
// reach any device file; a SIGKILLed follower restarts from its device and
// gets the cluster's RAM rows back; after every process is SIGKILLed and
// restarted, disc rows are intact, the RAM table is empty, and writes to both
// continue.
func TestProcessesRAMTables(t *testing.T) {
	dir := t.TempDir()
	key := "process-test-cluster-key-0123456789"
	const ramMark = "RAMPROC-5d1e77"
	dev := func(i int) string { return filepath.Join(dir, fmt.Sprintf("dev%d.img", i+1)) }
	var procs []*proc
	for i := range 3 {
		args := []string{"-name", fmt.Sprintf("p%d", i+1), "-addr", freeAddr(t, takeIP()),
			"-storage", "file:" + dev(i) + "?size=67108864",
			"-data", filepath.Join(dir, fmt.Sprintf("data%d", i+1)), "-key", key}
		if i > 0 {
			args = append(args, "-join", procs[0].addr)
		}
		procs = append(procs, startProc(t, args...))
	}
	ok := func(p *proc, cmd string) map[string]any {
		t.Helper()
		var r map[string]any
		for range 30 { // retried while leadership settles
			if r = p.do(cmd); r["err"] == nil {
				return r
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("%s: %v", cmd, r["err"])
		return nil
	}
	n := func(p *proc, table string) int {
		v, _ := p.do("count " + table)["n"].(float64)
		return int(v)
	}
	waitFor(t, "3 voters", 10*time.Second, func() bool {
		v := 0
		for _, p := range procs {
			if st := p.do("status")["status"].(map[string]any); st["role"] == "voter" {
				v++
			}
		}
		return v == 3
	})
	ok(procs[0], "declare disc")
	ok(procs[0], "declare ram ram")
	for i := range 30 {
		ok(procs[i%3], fmt.Sprintf("put ram k%02d %s-%d", i, ramMark, i))
		ok(procs[i%3], fmt.Sprintf("put disc k%02d v%d", i, i))
	}
	var follower *proc
	for _, p := range procs {
		if st := p.do("status")["status"].(map[string]any); st["leader"] != st["node"] {
			follower = p
		}
	}
	follower.kill()
	for i := 30; i < 40; i++ {
		for _, p := range procs {
			if p.cmd != nil {
				ok(p, fmt.Sprintf("put ram k%02d %s-%d", i, ramMark, i))
				break
			}
		}
	}
	follower.start()
	waitFor(t, "restarted follower to have every RAM row", 15*time.Second, func() bool {
		return n(follower, "ram") == 40 && n(follower, "disc") == 30
	})
	for i := range procs {
		b, err := os.ReadFile(dev(i))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(ramMark)) {
			t.Fatalf("p%d: a RAM row is in the device file", i+1)
		}
	}
	// Full-cluster crash.
	for _, p := range procs {
		p.kill()
	}
	for _, p := range procs {
		p.start()
	}
	for _, p := range procs {
		waitFor(t, "disc intact and RAM empty after the full restart", 15*time.Second, func() bool {
			return n(p, "disc") == 30 && n(p, "ram") == 0
		})
	}
	ok(procs[1], "put ram after x")
	ok(procs[2], "put disc after x")
	for _, p := range procs {
		waitFor(t, "writes after the full restart everywhere", 10*time.Second, func() bool {
			return n(p, "disc") == 31 && n(p, "ram") == 1
		})
	}
}

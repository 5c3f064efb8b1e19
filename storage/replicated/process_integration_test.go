//go:build integration

package replicated

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"xedge/internal/freeport"
)

// buildNoded builds noded into the test's temp dir, once per test (the Go
// build cache makes the second build a link only).
func buildNoded(t *testing.T) string {
	nodedMu.Lock()
	defer nodedMu.Unlock()
	if bin, ok := nodedBins[t]; ok {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "noded")
	out, err := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "./internal/noded").CombinedOutput()
	if err != nil {
		t.Fatalf("build noded: %v\n%s", err, out)
	}
	nodedBins[t] = bin
	return bin
}

var (
	nodedMu   sync.Mutex
	nodedBins = map[*testing.T]string{}
)

// proc is one noded process.
type proc struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
	id   string
}

// freeAddr is an address for a noded's cluster listener, below the ephemeral
// range (internal/freeport): a port taken with :0 and closed again can be the
// next :0 pick of a listener started meanwhile.
func freeAddr(t *testing.T, ip string) string {
	t.Helper()
	a, err := freeport.Addr(ip)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, args: args}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(buildNoded(p.t), p.args...)
	p.cmd.Stderr = os.Stderr
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		p.t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.out = bufio.NewScanner(stdout)
	var ready struct {
		Addr, ID string
	}
	if err := json.Unmarshal(p.line(), &ready); err != nil {
		p.t.Fatal(err)
	}
	p.addr, p.id = ready.Addr, ready.ID
}

func (p *proc) line() []byte {
	p.t.Helper()
	ch := make(chan []byte, 1)
	go func() {
		if p.out.Scan() {
			ch <- append([]byte(nil), p.out.Bytes()...)
		} else {
			ch <- nil
		}
	}()
	select {
	case b := <-ch:
		if b == nil {
			p.t.Fatalf("noded %v exited", p.args)
		}
		return b
	case <-time.After(20 * time.Second):
		p.t.Fatalf("noded %v: no answer in 20s", p.args)
	}
	return nil
}

func (p *proc) do(cmd string) map[string]any {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		p.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(p.line(), &m); err != nil {
		p.t.Fatal(err)
	}
	return m
}

// kill sends SIGKILL (a crash, no Stop) and reaps the process.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	p.cmd = nil
}

// Three real processes with file devices: writes from every process are
// acknowledged, the leader process is SIGKILLed, the survivors elect a new
// leader and keep accepting writes, and the killed node restarts from its
// device under the same raft ID with every acknowledged write.
func TestProcessesSurviveLeaderKill(t *testing.T) {
	dir := t.TempDir()
	key := "process-test-cluster-key-0123456789"
	var procs []*proc
	for i := 0; i < 3; i++ {
		args := []string{"-name", fmt.Sprintf("p%d", i+1), "-addr", freeAddr(t, takeIP()),
			"-storage", "file:" + filepath.Join(dir, fmt.Sprintf("dev%d.img", i+1)) + "?size=67108864",
			"-data", filepath.Join(dir, fmt.Sprintf("data%d", i+1)), "-key", key}
		if i > 0 {
			args = append(args, "-join", procs[0].addr)
		}
		procs = append(procs, startProc(t, args...))
	}
	voters := func() int {
		n := 0
		for _, p := range procs {
			if p.cmd == nil {
				continue
			}
			if st := p.do("status")["status"].(map[string]any); st["role"] == "voter" {
				n++
			}
		}
		return n
	}
	waitFor(t, "3 voters", 10*time.Second, func() bool { return voters() == 3 })
	if r := procs[1].do("declare roster"); r["err"] != nil {
		t.Fatal(r["err"])
	}
	acked := 0
	for i := 0; i < 60; i++ {
		if r := procs[i%3].do(fmt.Sprintf("put roster k%03d v%d", i, i)); r["err"] != nil {
			t.Fatalf("put %d: %v", i, r["err"])
		}
		acked++
	}
	var leader *proc
	for _, p := range procs {
		if st := p.do("status")["status"].(map[string]any); st["leader"] == st["node"] {
			leader = p
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	leader.kill()
	for i := 60; i < 90; i++ {
		var p *proc
		for j := 0; j < 3; j++ {
			if q := procs[(i+j)%3]; q.cmd != nil {
				p = q
				break
			}
		}
		var r map[string]any
		for try := 0; try < 20; try++ {
			if r = p.do(fmt.Sprintf("put roster k%03d v%d", i, i)); r["err"] == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if r["err"] != nil {
			t.Fatalf("put %d after the leader was killed: %v", i, r["err"])
		}
		acked++
	}
	oldID := leader.id
	leader.start()
	if leader.id != oldID {
		t.Fatalf("durable restart changed the raft ID: %s -> %s", oldID, leader.id)
	}
	waitFor(t, "restarted node to catch up", 15*time.Second, func() bool {
		r := leader.do("count roster")
		n, _ := r["n"].(float64)
		return int(n) == acked
	})
	waitFor(t, "3 voters again", 10*time.Second, func() bool { return voters() == 3 })
}

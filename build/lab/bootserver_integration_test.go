//go:build integration

package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootServerStorage runs the lab's boot server the way `lab up --storage` does
// (the real xedge binary, inside a namespace the test creates, one tgtd per node)
// and drives `lab storage` through its control socket: freeze stops one node's tgtd
// (SIGSTOP), start resumes it, stop kills it, start brings a new one up on the same
// portal; the other node's target is never touched. Also `fetch` of the boot
// server's own parameters from inside the namespace.
func TestBootServerStorage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace, tgtd); CI runs the integration tier as root")
	}
	for _, b := range []string{"tgtd", "tgtadm"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s missing: Debian package tgt (build/setup.sh test installs it)", b)
		}
	}
	dir := t.TempDir()
	xedge := filepath.Join(dir, "xedge")
	b := exec.Command("go", "build", "-o", xedge, "xedge/build/cmd/xedge")
	if out, err := b.CombinedOutput(); err != nil {
		t.Fatalf("build xedge: %v\n%s", err, out)
	}
	ns, err := CreateNetNS(fmt.Sprintf("xlabst-%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete() })
	// The bridge needs a port to be up (carrier): a tap held by this test.
	tap, err := ns.OpenTap("tap1")
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, xedge, "lab", "--dir", dir, "segment", "--netns", ns.Name,
		"--boot", "--domain", "lab.example", "--nodes", "2", "--storage")
	logf, _ := os.Create(filepath.Join(dir, "segment.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "segment.log"))
			t.Logf("boot server log:\n%s", b)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := waitBootServer(ctx, dir, cmd); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`node(\d) storage (\w+) \(10\.77\.0\.1:(\d+), [^,]+, tgtd pid (\d+)\)`)
	status := func() map[string][2]string { // node -> state, pid
		out, err := Control(dir, "storage status")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string][2]string{}
		for _, x := range re.FindAllStringSubmatch(out, -1) {
			m["node"+x[1]] = [2]string{x[2], x[4]}
		}
		if len(m) != 2 {
			t.Fatalf("storage status:\n%s", out)
		}
		return m
	}
	procState := func(pid string) string {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return "gone"
		}
		s := string(b)
		return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
	}
	st := status()
	if st["node1"][0] != "running" || st["node2"][0] != "running" {
		t.Fatalf("start: %v", st)
	}
	pid1, pid2 := st["node1"][1], st["node2"][1]
	if _, err := Control(dir, "storage freeze node2"); err != nil {
		t.Fatal(err)
	}
	// SIGSTOP is delivered asynchronously: the state turns T within moments
	// (read once right after the command, it was sometimes still R).
	for start := time.Now(); procState(pid2) != "T"; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("frozen tgtd state %q 5 s after the freeze, want T (stopped)", procState(pid2))
		}
	}
	if s := procState(pid1); s == "T" || s == "gone" {
		t.Fatalf("node1's tgtd hit by node2's freeze: %q", s)
	}
	if _, err := Control(dir, "storage start node2"); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		s := procState(pid2)
		if s == "gone" {
			t.Fatalf("thawed tgtd gone")
		}
		if s != "T" {
			break
		}
		if time.Since(start) > 5*time.Second { // SIGCONT, like SIGSTOP, lands asynchronously
			t.Fatalf("thawed tgtd state %q 5 s after the thaw", s)
		}
	}
	if _, err := Control(dir, "storage stop node2"); err != nil {
		t.Fatal(err)
	}
	if st := status(); st["node2"][0] != "stopped" || procState(pid2) != "gone" && procState(pid2) != "Z" {
		t.Fatalf("after stop: %v, old pid %s", st, procState(pid2))
	}
	if _, err := Control(dir, "storage start node2"); err != nil {
		t.Fatal(err)
	}
	st = status()
	if st["node2"][0] != "running" || st["node2"][1] == pid2 || st["node1"][1] != pid1 {
		t.Fatalf("after restart: %v (old node2 pid %s, node1 pid %s)", st, pid2, pid1)
	}
	if n, _ := strconv.Atoi(st["node2"][1]); n == 0 || procState(st["node2"][1]) == "gone" {
		t.Fatalf("restarted tgtd not running: %v", st)
	}
	if _, err := Control(dir, "storage stop node9"); err == nil {
		t.Fatal("storage stop of a node without storage succeeded")
	}
	p, err := Control(dir, "fetch http://10.77.0.1/params?mac=52:54:00:77:01:02")
	if err != nil || !strings.Contains(p, "xedge.storage="+StorageURL(2)) || !strings.Contains(p, "xedge.domain=lab.example") {
		t.Fatalf("params of node2 from inside the namespace: %v\n%s", err, p)
	}
}

// TestNetNSBridgeReadyForRouterAdvertisements: right after CreateNetNS, before
// any box's tap joins, the lab's bridge has carrier and a usable (not tentative)
// IPv6 link-local address (within milliseconds), so the boot server can answer
// iPXE's first router solicitation. (It had neither: iPXE retried for ~2 s of every PXE boot.)
func TestNetNSBridgeReadyForRouterAdvertisements(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespace); CI runs the integration tier as root")
	}
	ns, err := CreateNetNS(fmt.Sprintf("xlabra-%d", os.Getpid()%100000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete() })
	// The address is added tentative and the kernel's DAD work, which has
	// nothing to do without DAD, clears that a few milliseconds later: allow
	// 500 ms (a box powers on seconds after the namespace exists). Without a
	// port the bridge never gets an address at all.
	var out []byte
	for i := 0; i < 50; i++ {
		var err error
		out, err = exec.Command("ip", "-n", ns.Name, "-6", "addr", "show", "dev", labBridge, "scope", "link").CombinedOutput()
		if err != nil {
			t.Fatalf("ip addr: %v: %s", err, out)
		}
		if strings.Contains(string(out), "inet6 fe80::") && !strings.Contains(string(out), "tentative") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(string(out), "inet6 fe80::") || strings.Contains(string(out), "tentative") {
		t.Fatalf("br0 has no usable link-local address 500 ms after CreateNetNS:\n%s", out)
	}
	link, _ := exec.Command("ip", "-n", ns.Name, "link", "show", "dev", labBridge).CombinedOutput()
	if !strings.Contains(string(link), "LOWER_UP") {
		t.Fatalf("br0 has no carrier:\n%s", link)
	}
}

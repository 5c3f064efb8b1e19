//go:build vmtest

package vmtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/build/lab"
)

// TestLab runs the harness the way `xedge lab` does without root: two daemonized
// nodes on one multicast L2 segment with the host-side DHCP server (option 224 carries
// the domain), clustered by the cluster key on the kernel command line (node2 joins
// node1 over the segment; an account registered on node1 is seen on node2),
// node-to-node TCP over the segment, kill and down.
func TestLab(t *testing.T) { labScenario(t, "mcast") }

// TestLabNetNS is the root mode: a bridge and taps in a network namespace the lab
// creates (DHCP by insomniacslk server4 on the bridge) and removes on down.
func TestLabNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("root mode needs root (network namespaces, taps); CI runs the VM tier as root")
	}
	labScenario(t, "netns")
}

func labScenario(t *testing.T, mode string) {
	need(t)
	xedge := filepath.Join(t.TempDir(), "xedge")
	b := exec.Command("go", "build", "-o", xedge, "./build/cmd/xedge")
	b.Dir = repoRoot
	if out, err := b.CombinedOutput(); err != nil {
		t.Fatalf("build xedge: %v\n%s", err, out)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	key := ""
	if mode == "mcast" {
		key = "lab-cluster-key-0123456789"
	}
	st, lines, err := lab.Up(ctx, lab.UpOptions{Dir: dir, Kernel: img.Vmlinux, Initrd: img.Cpio, Nodes: 2, Domain: "lab.example", Mode: mode, ClusterKey: key,
		Params: "xedge.debug=1", Self: []string{xedge, "lab", "--dir", dir, "segment"}, Log: os.Stderr})
	t.Cleanup(func() { _ = lab.Down(dir) }) // after a failure; the test's own Down removes the state
	if err != nil {
		for _, n := range []string{"node1", "node2"} {
			b, _ := os.ReadFile(filepath.Join(dir, n, "console.log"))
			t.Logf("%s console:\n%s", n, b)
		}
		t.Fatal(err)
	}
	t.Logf("lab up: %v", lines)
	for i, want := range []string{"node1: ready 10.77.0.11 ", "node2: ready 10.77.0.12 "} {
		if !strings.HasPrefix(lines[i], want) {
			t.Fatalf("line %d: %q, want prefix %q", i, lines[i], want)
		}
	}
	sock := func(n string) string { return filepath.Join(dir, n, "console.sock") }
	out, err := lab.Run(ctx, sock("node1"), "node")
	if err != nil || !strings.Contains(out, "domain    lab.example (dhcp)") || !strings.Contains(out, "hostname  node1") {
		t.Fatalf("node1 node: %v\n%s", err, out)
	}
	if key != "" {
		if out, err := lab.Run(ctx, sock("node1"), "register carol secret-carol"); err != nil || strings.Contains(out, "error") {
			t.Fatalf("register on node1: %v\n%s", err, out)
		}
		var out string
		for i := 0; i < 50; i++ { // replication is asynchronous to the follower
			out, _ = lab.Run(ctx, sock("node2"), "users")
			if strings.Contains(out, "carol") {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(out, "carol") {
			st2, _ := lab.Run(ctx, sock("node2"), "status")
			t.Fatalf("account registered on node1 not seen on node2: %s\nnode2 status:\n%s", out, st2)
		}
	}
	out, err = lab.Run(ctx, sock("node1"), "debug-dial 10.77.0.12:5222")
	if err != nil || !strings.Contains(out, "connected 10.77.0.11:") {
		t.Fatalf("node1 -> node2 over the segment: %v\n%s", err, out)
	}
	if err := lab.Kill(dir, "node2"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	status, err := lab.Status(dir)
	if err != nil || !strings.Contains(strings.Join(status, "\n"), "node2   stopped") {
		t.Fatalf("status after kill: %v %q", err, status)
	}
	out, _ = lab.Run(ctx, sock("node1"), "debug-dial 10.77.0.12:5222")
	if strings.Contains(out, "connected") {
		t.Fatalf("node2 still answers after kill: %s", out)
	}
	if mode == "netns" {
		if out, _ := exec.Command("ip", "netns", "list").Output(); !strings.Contains(string(out), st.NetNS) {
			t.Fatalf("netns %s missing while the lab is up: %s", st.NetNS, out)
		}
	}
	pids := []int{st.SegmentPID, st.Nodes[0].PID}
	if err := lab.Down(dir); err != nil {
		t.Fatal(err)
	}
	// down powers node1 off through its ACPI button: init stopped xmppd cleanly.
	if b, _ := os.ReadFile(filepath.Join(st.Nodes[0].Dir, "console.log")); !strings.Contains(string(b), "xmppd stopped") {
		t.Errorf("node1 was not shut down cleanly:\n%s", b)
	}
	time.Sleep(500 * time.Millisecond)
	for _, pid := range pids {
		if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); err == nil && strings.Contains(string(b), dir) {
			t.Errorf("pid %d still running after down", pid)
		}
	}
	if mode == "netns" {
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), st.NetNS) {
			t.Errorf("netns %s left behind after down", st.NetNS)
		}
	}
}

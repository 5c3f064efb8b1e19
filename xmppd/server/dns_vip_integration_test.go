//go:build integration

package server_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"xedge/discovery/dns/bindtest"
	"xedge/xmppd/internal/testenv"
)

// TestDNSPublishesHeldVIP: xmppd in a network namespace of the test's own,
// with a VIP on a veth interface, takes the VIP and DNS publishes it: the VIP
// target first (priority 10) in the SRV answer, its A record, and the domain's
// A is the VIP (clients without SRV land on it).
func TestDNSPublishesHeldVIP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and add the VIP (CI runs as root)")
	}
	if _, err := exec.LookPath("dig"); err != nil {
		t.Fatalf("dig not found: install bind9-dnsutils: %v", err)
	}
	ns := fmt.Sprintf("xdns-%d", os.Getpid())
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip("-n", ns, "link", "set", "lo", "up")
	ip("-n", ns, "link", "add", "xd0", "type", "veth", "peer", "name", "xd1") // no dummy module on every host
	ip("-n", ns, "link", "set", "xd1", "up")
	ip("-n", ns, "addr", "add", "10.77.0.1/24", "dev", "xd0")
	ip("-n", ns, "link", "set", "xd0", "up")

	bin, ctl := testenv.Binaries(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", bindtest.FreePort(t)) // inside the namespace: its own loopback
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "--data", filepath.Join(dir, "data"), "--admin-socket", sock,
		"--node-name", "edge1", "--domain", "example.org", "--c2s", "10.77.0.1:5222", "--c2s-tls", "",
		"--dns-listen", dnsAddr, "--vip", "10.77.0.100/24", "--vip-interface", "xd0", "--log-level", "info")
	stdout, _ := cmd.StdoutPipe()
	logs := &bindtest.Buffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-waited
		}
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := false
		for sc.Scan() {
			logs.Write([]byte(sc.Text() + "\n"))
			if strings.HasPrefix(sc.Text(), "Stop with Ctrl-C") && !once {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-waited:
		t.Fatalf("xmppd exited:\n%s", logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("xmppd not ready in 30 s:\n%s", logs.String())
	}
	dig := func(args ...string) []string { return bindtest.Dig(t, ns, dnsAddr, args...) }
	want := "10 100 5222 10-77-0-100.vip.example.org.,15 100 5222 edge1.node.example.org."
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := dig("_xmpp-client._tcp.example.org", "SRV")
		if strings.Join(got, ",") == want {
			break
		}
		if time.Now().After(deadline) {
			out, _ := exec.Command(ctl, "--socket", sock, "vip").CombinedOutput()
			t.Fatalf("SRV %q, want %q\nxmppctl vip:\n%s\nlog:\n%s", got, want, out, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := dig("10-77-0-100.vip.example.org", "A"); strings.Join(got, ",") != "10.77.0.100" {
		t.Errorf("VIP A %q", got)
	}
	if got := dig("example.org", "A"); strings.Join(got, ",") != "10.77.0.100" {
		t.Errorf("domain A %q, want the VIP", got)
	}
	out, err := exec.Command(ctl, "--socket", sock, "dns").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "10.77.0.100") || !strings.Contains(string(out), "10-77-0-100.vip.example.org.") {
		t.Errorf("xmppctl dns: %v\n%s", err, out)
	}
}

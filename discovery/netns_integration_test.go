//go:build integration && linux

package discovery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file: xmppd nodes in network namespaces the test creates, on one bridge,
// that find each other ONLY by the subnet scan (no seeds, no join, no DNS SRV)
// and name each other by reverse DNS served by a real BIND (named from Debian's
// bind9) started by the test inside the topology.

const (
	subnet  = "10.77.0"
	dnsAddr = subnet + ".53"
	domain  = "lab.test"
)

// buildXmppd builds xmppd and xmppctl into a temporary directory.
func buildXmppd(t *testing.T) (xmppd, xmppctl string) {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", dir+"/", "./xmppd/cmd/xmppd", "./xmppd/cmd/xmppctl")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return filepath.Join(dir, "xmppd"), filepath.Join(dir, "xmppctl")
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// topology creates a bridge namespace (the bridge carries dnsAddr) and one
// namespace per node address, each joined to the bridge by a veth pair; all of
// them are deleted in t.Cleanup.
type topology struct {
	prefix string
	bridge string
}

func newTopology(t *testing.T) *topology {
	t.Helper()
	tp := &topology{prefix: fmt.Sprintf("xdisc-%d", os.Getpid())}
	tp.bridge = tp.prefix + "-br"
	tp.addNS(t, tp.bridge)
	run(t, "ip", "-n", tp.bridge, "link", "add", "br0", "type", "bridge")
	// A fixed MAC: a bridge otherwise takes the lowest MAC of its ports, which
	// changes as nodes are attached, and nodes' ARP entries for dnsAddr go stale.
	run(t, "ip", "-n", tp.bridge, "link", "set", "br0", "address", "02:00:0a:4d:00:35")
	run(t, "ip", "-n", tp.bridge, "addr", "add", dnsAddr+"/24", "dev", "br0")
	run(t, "ip", "-n", tp.bridge, "link", "set", "br0", "up")
	run(t, "ip", "-n", tp.bridge, "link", "set", "lo", "up")
	return tp
}

func (tp *topology) addNS(t *testing.T, name string) {
	t.Helper()
	exec.Command("ip", "netns", "del", name).Run() // a leftover of a killed run
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
}

// node adds namespace <prefix>-<name> with eth0 = addr/24 on the bridge.
func (tp *topology) node(t *testing.T, name, addr string) string {
	t.Helper()
	ns := tp.prefix + "-" + name
	tp.addNS(t, ns)
	peer := "v" + name
	run(t, "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", tp.bridge)
	run(t, "ip", "-n", tp.bridge, "link", "set", peer, "master", "br0")
	run(t, "ip", "-n", tp.bridge, "link", "set", peer, "up")
	run(t, "ip", "-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
	run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// proc is a process started in a namespace, its output kept.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) { p.mu.Lock(); defer p.mu.Unlock(); return p.out.Write(b) }
func (p *proc) Logs() string                { p.mu.Lock(); defer p.mu.Unlock(); return p.out.String() }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startProc starts argv in this namespace and stops it by PID in t.Cleanup.
func startProc(t *testing.T, name string, argv ...string) *proc {
	t.Helper()
	return launchProc(t, name, exec.Command(argv[0], argv[1:]...))
}

// startIn starts argv in namespace ns (ip netns exec execs it: the PID is the
// program's) and stops it by PID in t.Cleanup.
func startIn(t *testing.T, ns, name string, argv ...string) *proc {
	t.Helper()
	return launchProc(t, name, exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...))
}

func launchProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{}), cmd: cmd}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *proc) stop() {
	if p.exited() {
		return
	}
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) kill() {
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func (p *proc) waitLog(t *testing.T, within time.Duration, re *regexp.Regexp) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !re.MatchString(p.Logs()) {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s: no %q within %v (exited %v):\n%s", p.name, re, within, p.exited(), p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type gossipRow struct {
	Node        string `json:"node"`
	Addr        string `json:"addr"`
	State       string `json:"state"`
	DNSName     string `json:"dns_name"`
	FoundBy     string `json:"found_by"`
	Cluster     string `json:"cluster"`
	ClusterAddr string `json:"cluster_addr"`
}

func ctlJSON(t *testing.T, ctl, socket string, out any, args ...string) error {
	t.Helper()
	cmd := exec.Command(ctl, append([]string{"--socket", socket, "--json", "--timeout", "5s"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("xmppctl %v: %v: %s", args, err, e.String())
	}
	return json.Unmarshal(o.Bytes(), out)
}

// TestNamespacesScanAndReverseDNS: three xmppd nodes on a bridge, configured with
// nothing but their own address and the cluster key, find each other by the
// subnet scan, name each other through BIND's PTR records, and form one raft
// cluster (the lowest-named bootstraps); a fourth node with another key, on the
// same subnet, is refused: the nodes log its address and "wrong cluster key" in
// one line, and it exits saying which addresses refused its key.
func TestNamespacesScanAndReverseDNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (CI runs integration tests as root)")
	}
	xmppd, ctl := buildXmppd(t)
	tp := newTopology(t)
	nodes := map[string]string{"n1": subnet + ".11", "n2": subnet + ".12", "n3": subnet + ".13", "n0": subnet + ".14"}
	ptr := map[string]string{}
	for name, ip := range nodes {
		ptr[ip] = name
	}
	rev, fwd := "", ""
	for ip, name := range ptr {
		rev += ip[strings.LastIndexByte(ip, '.')+1:] + " IN PTR " + name + "." + domain + ".\n"
		fwd += name + " IN A " + ip + "\n"
	}
	startBIND(t, tp.bridge, dnsAddr, 53, map[string]string{"0.77.10.in-addr.arpa": rev, domain: fwd})
	dir := t.TempDir()
	key := filepath.Join(dir, "cluster.key")
	os.WriteFile(key, []byte("netns-discovery-test-cluster-key-0123456789\n"), 0o600)
	badKey := filepath.Join(dir, "bad.key")
	os.WriteFile(badKey, []byte("some-other-cluster-key-0123456789abcdef\n"), 0o600)

	procs := map[string]*proc{}
	sockets := map[string]string{}
	start := time.Now()
	for _, name := range []string{"n3", "n1", "n2", "n0"} {
		ip := nodes[name]
		ns := tp.node(t, name, ip)
		data := filepath.Join(dir, name)
		os.MkdirAll(data, 0o700)
		k := key
		if name == "n0" {
			k = badKey
		}
		sockets[name] = filepath.Join(data, "admin.sock")
		procs[name] = startIn(t, ns, name, xmppd, "--domain", domain, "--data", data, "--node-name", name,
			"--c2s", ip+":5222", "--c2s-tls", "", "--log-level", "debug",
			"--cluster-addr", ip+":7400", "--cluster-key-file", k, "--storage", "file:"+data+"/dev.img?size=67108864",
			"--dns-servers", dnsAddr, "--discover-window", "2s", "--scan-rate", "300",
			"--raft-heartbeat-timeout", "500ms", "--raft-election-timeout", "500ms", "--raft-lease-timeout", "250ms",
			"--raft-report-interval", "100ms", "--join-timeout", "30s")
	}
	ready := regexp.MustCompile(`(?m)^Stop with Ctrl-C`)
	for _, name := range []string{"n1", "n2", "n3"} {
		procs[name].waitLog(t, 60*time.Second, ready)
	}
	t.Logf("3 nodes ready %v after start (scan of a /24 at 300 probes/s, window 2s)", time.Since(start).Round(time.Millisecond))
	scanned := 0
	for _, name := range []string{"n1", "n2", "n3"} {
		logs := procs[name].Logs()
		if strings.Contains(logs, "--seeds") || strings.Contains(logs, "DNS SRV seeds") {
			t.Fatalf("%s used seeds", name)
		}
		if boot := strings.Contains(logs, "bootstrapped a new cluster"); boot != (name == "n1") {
			t.Fatalf("%s bootstrapped=%v (want only n1)\n%s", name, boot, logs)
		}
		if strings.Contains(logs, `msg="subnet scan found a gossip port"`) {
			scanned++ // the first node up may find nobody: the later ones find it
		}
	}
	if scanned < 2 {
		t.Fatalf("only %d node(s) found a peer by the scan", scanned)
	}
	// One raft cluster of three.
	deadline := time.Now().Add(30 * time.Second)
	for {
		leaders, ok := map[string]bool{}, true
		for _, name := range []string{"n1", "n2", "n3"} {
			var st struct {
				Leader   string            `json:"leader"`
				Replicas map[string]string `json:"replicas"`
			}
			if err := ctlJSON(t, ctl, sockets[name], &st, "storage"); err != nil || st.Leader == "" || len(st.Replicas) != 3 {
				ok = false
				break
			}
			leaders[st.Leader] = true
		}
		if ok && len(leaders) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no single cluster of 3 within 30s\n--- n1 ---\n%s", procs["n1"].Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every node sees the others alive, named by BIND's PTR records, found by
	// the scan (directly, or through a peer that scanned them).
	deadline = time.Now().Add(20 * time.Second)
	scanFound := 0 // members found by a node's own scan; the rest came by gossip from a node that scanned them
	for _, name := range []string{"n1", "n2", "n3"} {
		for {
			var rows []gossipRow
			err := ctlJSON(t, ctl, sockets[name], &rows, "gossip")
			good := err == nil && len(rows) == 3
			byScan := 0
			for _, r := range rows {
				want := r.Node + "." + domain
				if r.Node == name {
					good = good && r.DNSName == want
					continue
				}
				good = good && r.State == "alive" && r.DNSName == want && r.Addr == nodes[r.Node]+":7401" && r.Cluster == "member"
				if r.FoundBy == "scan" {
					byScan++
				}
				good = good && (r.FoundBy == "scan" || r.FoundBy == "gossip")
			}
			if good {
				scanFound += byScan
				if name == "n1" {
					for _, r := range rows {
						t.Logf("n1 sees %s %s %s dns=%s found_by=%s cluster=%s", r.Node, r.Addr, r.State, r.DNSName, r.FoundBy, r.Cluster)
					}
				}
				break
			}
			if time.Now().After(deadline) {
				var why []string
				for _, l := range strings.Split(procs[name].Logs(), "\n") {
					if strings.Contains(l, "reverse") || strings.Contains(l, "member joined") {
						why = append(why, l)
					}
				}
				t.Fatalf("%s's gossip view: %+v %v\n%s", name, rows, err, strings.Join(why, "\n"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if scanFound < 2 {
		t.Fatalf("only %d member(s) found by scan", scanFound)
	}
	// The wrong-key node: refused by the cluster, says so, never bootstraps.
	bad := procs["n0"]
	select {
	case <-bad.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the wrong-key node is still running:\n%s", bad.Logs())
	}
	if bad.cmd.ProcessState.ExitCode() == 0 || strings.Contains(bad.Logs(), "bootstrapped a new cluster") {
		t.Fatalf("wrong-key node: exit %d:\n%s", bad.cmd.ProcessState.ExitCode(), bad.Logs())
	}
	exitLine := regexp.MustCompile(`(?m)^xmppd: .*wrong cluster key: 10\.77\.0\.1[123]:7401(, 10\.77\.0\.1[123]:7401)* refused this node's gossip key.*$`)
	if m := exitLine.FindString(bad.Logs()); m == "" {
		t.Fatalf("the wrong-key node's exit message does not name the refusing address and the key:\n%s", bad.Logs())
	} else {
		t.Logf("wrong-key node exits with: %s", m)
	}
	refused := regexp.MustCompile(`msg="refused gossip from 10\.77\.0\.14: wrong cluster key[^"]*"`)
	for _, name := range []string{"n1", "n2", "n3"} {
		if m := refused.FindAllString(procs[name].Logs(), -1); len(m) == 0 {
			t.Fatalf("%s does not log the refused wrong-key node by address:\n%s", name, procs[name].Logs())
		} else if name == "n1" {
			t.Logf("n1 logs: %s (%d line(s))", m[0], len(m))
		}
	}
	// Failure detection across the bridge: SIGKILL n3, n1 sees it failed.
	kill := time.Now()
	procs["n3"].kill()
	for {
		var rows []gossipRow
		if err := ctlJSON(t, ctl, sockets["n1"], &rows, "gossip"); err == nil {
			failed := false
			for _, r := range rows {
				failed = failed || (r.Node == "n3" && r.State == "failed")
			}
			if failed {
				break
			}
		}
		if time.Since(kill) > 10*time.Second {
			t.Fatal("n3 not declared failed within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(kill)
	t.Logf("failure detection across the bridge: %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("failure detection took %v", took)
	}
}

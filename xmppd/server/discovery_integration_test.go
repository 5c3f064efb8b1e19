//go:build integration

package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/internal/freeport"
	"xedge/xmppd/internal/testenv"
)

// gossipRow is one row of the admin command "gossip".
type gossipRow struct {
	Node        string `json:"node"`
	Addr        string `json:"addr"`
	State       string `json:"state"`
	DNSName     string `json:"dns_name"`
	FoundBy     string `json:"found_by"`
	Role        string `json:"role"`
	Cluster     string `json:"cluster"`
	ClusterAddr string `json:"cluster_addr"`
	Storage     string `json:"storage"`
}

// adminCall sends one command on an admin socket and decodes its result.
func adminCall(socket, cmd string, out any) error {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, `{"cmd":%q}`+"\n", cmd); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return err
	}
	var resp struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		return err
	}
	if !resp.OK {
		return fmt.Errorf("%s: %s", cmd, resp.Error)
	}
	return json.Unmarshal(resp.Result, out)
}

func gossipView(t *testing.T, s *testenv.Server) map[string]gossipRow {
	t.Helper()
	var rows []gossipRow
	if err := adminCall(s.Socket, "gossip", &rows); err != nil {
		t.Fatalf("gossip: %v", err)
	}
	m := map[string]gossipRow{}
	for _, r := range rows {
		m[r.Node] = r
	}
	return m
}

// freePortPair returns ip:port such that port and port+1 were free on TCP and
// UDP a moment ago (cluster port and gossip port), below the ephemeral range.
func freePortPair(t *testing.T, ip string) string {
	t.Helper()
	p, err := freeport.Pair(ip)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(ip, strconv.Itoa(p))
}

func gossipAddrOf(clusterAddr string) string {
	host, port, _ := net.SplitHostPort(clusterAddr)
	var p int
	fmt.Sscan(port, &p)
	return net.JoinHostPort(host, fmt.Sprint(p+1))
}

// TestDiscoveryProcessesFormOneCluster: three xmppd processes on 127.0.0.x,
// started at the same moment with no --join, only gossip seeds, find each other
// by Serf and form ONE raft cluster (the lowest-named node bootstraps, the
// others join it). Then: a SIGKILLed node is declared failed by gossip in about
// a second (measured), comes back on restart, and a node with another cluster
// key is refused with one clear line on both sides and exits instead of
// bootstrapping a cluster of its own.
func TestDiscoveryProcessesFormOneCluster(t *testing.T) {
	names := []string{"disc-c", "disc-a", "disc-b"} // started in this order; disc-a must bootstrap
	servers, opts, addrs, seeds := startGossipCluster(t, names, []string{"127.0.0.43", "127.0.0.41", "127.0.0.42"})
	dir := t.TempDir()
	byName := map[string]*testenv.Server{}
	for i, s := range servers {
		byName[names[i]] = s
	}
	waitGossip := func(s *testenv.Server, what string, ok func(map[string]gossipRow) bool) map[string]gossipRow {
		t.Helper()
		return waitGossipView(t, s, what, ok)
	}
	v := waitGossip(byName["disc-a"], "3 alive members", func(v map[string]gossipRow) bool {
		n := 0
		for _, r := range v {
			if r.State == "alive" && r.Cluster == "member" && r.Storage == "durable" {
				n++
			}
		}
		return n == 3
	})
	if r := v["disc-b"]; r.FoundBy != "seed" || r.ClusterAddr != addrs[2] || r.Addr != seeds[2] {
		t.Fatalf("disc-b as seen by disc-a: %+v", r)
	}

	// SIGKILL disc-c: gossip on disc-a declares it failed in about a second.
	c := byName["disc-c"]
	kill := time.Now()
	c.Kill()
	waitGossip(byName["disc-a"], "disc-c failed", func(v map[string]gossipRow) bool { return v["disc-c"].State == "failed" })
	took := time.Since(kill)
	t.Logf("gossip failure detection of a SIGKILLed xmppd (3 nodes): %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("failure detection took %v (want about 1 s)", took)
	}
	// Restarted on its data directory, it is alive and a member again.
	c2 := testenv.Start(t, testenv.Options{NoTLSListener: true, Data: c.Data, Args: opts[0].Args})
	waitGossip(byName["disc-a"], "disc-c back", func(v map[string]gossipRow) bool {
		return v["disc-c"].State == "alive" && v["disc-c"].Cluster == "member"
	})
	if strings.Contains(c2.Logs(), "bootstrapped a new cluster") {
		t.Fatalf("the restarted node bootstrapped:\n%s", c2.Logs())
	}

	// A node with another cluster key is refused and exits.
	badKey := filepath.Join(t.TempDir(), "other.key")
	os.WriteFile(badKey, []byte("a-completely-different-cluster-key\n"), 0o600)
	badAddr := freePortPair(t, "127.0.0.44")
	args := append(testenv.ClusterNodeArgs("disc-0bad", badAddr, badKey, fmt.Sprintf("file:%s/bad.img?size=%d", dir, 64<<20)), testenv.FastRaftArgs...)
	args = append(args, "--discover", "serf", "--seeds", seeds[1], "--discover-window", "1s")
	bad := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: args, AllowExit: true})
	code := bad.ExitCode(20 * time.Second)
	for _, l := range strings.Split(bad.Logs(), "\n") {
		if strings.Contains(l, "key") || strings.Contains(l, "seed") {
			t.Logf("wrong-key node: %s", l)
		}
	}
	if code == 0 || code == -1 {
		t.Fatalf("wrong-key node: exit code %d\n%s", code, bad.Logs())
	}
	want := regexp.MustCompile(`cannot join gossip peer ` + regexp.QuoteMeta(seeds[1]) + `: wrong cluster key`)
	if !want.MatchString(bad.Logs()) {
		t.Fatalf("the wrong-key node's log does not say which seed refused its key:\n%s", bad.Logs())
	}
	exitLine := regexp.MustCompile(`(?m)^xmppd: .*wrong cluster key: ` + regexp.QuoteMeta(seeds[1]) + ` refused this node's gossip key.*$`)
	if !exitLine.MatchString(bad.Logs()) {
		t.Fatalf("the wrong-key node's exit message does not name the refusing seed and the key:\n%s", bad.Logs())
	}
	if strings.Contains(bad.Logs(), "bootstrapped a new cluster") {
		t.Fatalf("the wrong-key node bootstrapped a cluster of its own:\n%s", bad.Logs())
	}
	refused := regexp.MustCompile(`refused gossip from 127\.0\.0\.44: wrong cluster key`)
	a := byName["disc-a"]
	deadline := time.Now().Add(5 * time.Second)
	for !refused.MatchString(a.Logs()) {
		if time.Now().After(deadline) {
			t.Fatalf("the seed's log does not name the refused sender:\n%s", a.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, l := range strings.Split(a.Logs(), "\n") {
		if refused.MatchString(l) {
			t.Logf("seed: %s", l)
			break
		}
	}
	if _, ok := gossipView(t, a)["disc-0bad"]; ok {
		t.Fatal("the wrong-key node is listed as a member")
	}
}

// startGossipCluster starts xmppd processes named names on ips at the same
// moment, with no --join, only every node's gossip address as --seeds, and
// checks that they form ONE raft cluster in which only the lowest-named node
// bootstrapped. It returns the servers (in names' order), their options,
// cluster and gossip addresses.
func startGossipCluster(t *testing.T, names, ips []string) (servers []*testenv.Server, opts []testenv.Options, addrs, seeds []string) {
	t.Helper()
	key := testenv.WriteClusterKey(t)
	dir := t.TempDir()
	for _, ip := range ips {
		a := freePortPair(t, ip)
		addrs = append(addrs, a)
		seeds = append(seeds, gossipAddrOf(a))
	}
	lowest := slices.Min(names)
	for i, name := range names {
		args := append(testenv.ClusterNodeArgs(name, addrs[i], key, fmt.Sprintf("file:%s/%s.img?size=%d", dir, name, 64<<20)), testenv.FastRaftArgs...)
		args = append(args, "--discover", "serf", "--seeds", strings.Join(seeds, ","), "--discover-window", "1s")
		opts = append(opts, testenv.Options{NoTLSListener: true, Args: args})
	}
	testenv.Binaries(t) // build first: the start is timed
	start := time.Now()
	servers = testenv.StartMany(t, opts...)
	t.Logf("%d nodes ready %v after a simultaneous start", len(servers), time.Since(start).Round(time.Millisecond))
	for i, s := range servers {
		boot := strings.Contains(s.Logs(), "bootstrapped a new cluster")
		if boot != (names[i] == lowest) {
			t.Fatalf("%s bootstrapped=%v (want only %s)\n%s", names[i], boot, lowest, s.Logs())
		}
	}
	waitOneCluster(t, servers)
	return servers, opts, addrs, seeds
}

// waitOneCluster waits until every server sees the same leader and all of
// them as replicas (30 s).
func waitOneCluster(t *testing.T, servers []*testenv.Server) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		leaders := map[string]bool{}
		full := true
		for _, s := range servers {
			st, err := s.StorageStatus()
			if err != nil || st.Leader == "" || len(st.Replicas) != len(servers) {
				full = false
				break
			}
			leaders[st.Leader] = true
		}
		if full && len(leaders) == 1 {
			return
		}
		if time.Now().After(deadline) {
			st, err := servers[0].StorageStatus()
			t.Fatalf("not one cluster of %d within 30s: %+v %v", len(servers), st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitGossipView(t *testing.T, s *testenv.Server, what string, ok func(map[string]gossipRow) bool) map[string]gossipRow {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v := gossipView(t, s)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %+v", what, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDiscoveryWholeClusterRestart: a cluster formed by auto-join is stopped
// all at once (SIGTERM to every node: one of them leaves the raft cluster, the
// others keep their state) and started again all at once with the same flags
// (still no --join): it comes back as the same cluster — nobody bootstraps, the
// node that left rejoins through the members it finds by gossip — with the
// account written before the stop.
func TestDiscoveryWholeClusterRestart(t *testing.T) {
	names := []string{"rst-b", "rst-a", "rst-c"}
	servers, opts, _, _ := startGossipCluster(t, names, []string{"127.0.0.52", "127.0.0.51", "127.0.0.53"})
	servers[0].Register(t, "alice", "secret")
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func(s *testenv.Server) { defer wg.Done(); s.Stop() }(s)
	}
	wg.Wait()
	left := 0
	for _, s := range servers {
		if strings.Contains(s.Logs(), "left the cluster") {
			left++
		}
	}
	t.Logf("%d node(s) left the raft cluster on SIGTERM", left)
	for i := range opts {
		opts[i].Data = servers[i].Data
	}
	start := time.Now()
	again := testenv.StartMany(t, opts...)
	t.Logf("restarted all at once: ready in %v", time.Since(start).Round(time.Millisecond))
	for i, s := range again {
		if strings.Contains(s.Logs(), "bootstrapped a new cluster") {
			t.Fatalf("%s bootstrapped a new cluster on restart:\n%s", names[i], s.Logs())
		}
	}
	waitOneCluster(t, again)
	for i, s := range again {
		o, e, code := s.Ctl("users")
		if code != 0 || !strings.Contains(o, "alice") {
			t.Fatalf("%s after the restart: users: %d %s %s", names[i], code, o, e)
		}
	}
}

// TestGossipSingleNode: a node without gossip (single node, the default) still
// answers `xmppctl gossip` with itself, alive, with its storage mode.
func TestGossipSingleNode(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Args: []string{"--node-name", "solo1"}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		o, e, code := s.Ctl("--json", "gossip")
		var rows []gossipRow
		if code == 0 && json.Unmarshal([]byte(o), &rows) == nil && len(rows) == 1 &&
			rows[0].Node == "solo1" && rows[0].State == "alive" && rows[0].FoundBy == "self" && rows[0].Storage == "durable" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("xmppctl gossip: %d %s %s", code, o, e)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

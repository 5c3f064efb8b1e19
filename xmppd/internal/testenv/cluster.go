package testenv

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xedge/internal/freeport"
)

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Nodes is the number of xmppd processes (default 3).
	Nodes int
	// Args are extra flags for every node.
	Args []string
	// Storage returns node i's --storage value (default: file:<tmp>/nodeI.img of
	// 64 MiB).
	Storage func(t testing.TB, i int) string
}

// Node is one xmppd of a cluster started by StartCluster.
type Node struct {
	*Server
	Name        string   // --node-name
	ClusterAddr string   // --cluster-addr
	Args        []string // the node's flags (for Restart)
}

// Restart starts the node again (after Stop or Kill) with the same flags and data
// directory, and returns the new process.
func (n *Node) Restart(t testing.TB) *Node {
	t.Helper()
	s := Start(t, Options{NoTLSListener: true, Data: n.Data, Args: n.Args})
	return &Node{Server: s, Name: n.Name, ClusterAddr: n.ClusterAddr, Args: n.Args}
}

// FastRaftArgs are raft timeouts short enough for tests on a busy machine.
var FastRaftArgs = []string{"--raft-heartbeat-timeout", "500ms", "--raft-election-timeout", "500ms",
	"--raft-lease-timeout", "250ms", "--raft-report-interval", "100ms", "--join-timeout", "30s"}

// FreeAddr returns ip:port with a port that was free a moment ago, below the
// kernel's ephemeral range and not handed out before by this process
// (internal/freeport: a port taken with :0 and closed again was the kernel's next
// pick for the :0 a server under test binds meanwhile; TestOperations failed with
// its --http address equal to the c2s listener's).
func FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	a, err := freeport.Addr(ip)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return a
}

// WriteClusterKey writes a fresh random cluster key to a file and returns its path.
func WriteClusterKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	f := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(f, []byte(base64.StdEncoding.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// ClusterNodeArgs returns the flags of a cluster node named name listening on addr,
// joining seeds (none: bootstrap), with the key file and storage spec.
func ClusterNodeArgs(name, addr, keyFile, storage string, seeds ...string) []string {
	a := []string{"--node-name", name, "--cluster-addr", addr, "--cluster-key-file", keyFile, "--storage", storage}
	if len(seeds) > 0 {
		a = append(a, "--join", strings.Join(seeds, ","))
	}
	return a
}

// RestartAll starts the nodes again at once (after Stop or Kill), with their
// flags and data directories: a cluster whose nodes all stopped needs a quorum up
// before any of them is ready.
func RestartAll(t testing.TB, nodes ...*Node) []*Node {
	t.Helper()
	var opts []Options
	for _, n := range nodes {
		opts = append(opts, Options{NoTLSListener: true, Data: n.Data, Args: n.Args})
	}
	var out []*Node
	for i, s := range StartMany(t, opts...) {
		out = append(out, &Node{Server: s, Name: nodes[i].Name, ClusterAddr: nodes[i].ClusterAddr, Args: nodes[i].Args})
	}
	return out
}

// StartCluster starts o.Nodes xmppd processes on 127.0.0.1 sharing a fresh cluster
// key: node1 bootstraps, the others join it; it returns once every node is a voter
// in node1's view (bounded: 60 s). Nodes are named node1, node2, ...
func StartCluster(t testing.TB, o ClusterOptions) (nodes []*Node, keyFile string) {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	keyFile = WriteClusterKey(t)
	dir := t.TempDir()
	var seed string
	for i := 1; i <= o.Nodes; i++ {
		stor := fmt.Sprintf("file:%s/node%d.img?size=%d", dir, i, 64<<20)
		if o.Storage != nil {
			stor = o.Storage(t, i)
		}
		name := fmt.Sprintf("node%d", i)
		addr := FreeAddr(t, "127.0.0.1")
		var seeds []string
		if seed != "" {
			seeds = []string{seed}
		} else {
			seed = addr
		}
		args := append(ClusterNodeArgs(name, addr, keyFile, stor, seeds...), FastRaftArgs...)
		args = append(args, o.Args...)
		s := Start(t, Options{NoTLSListener: true, Args: args})
		nodes = append(nodes, &Node{Server: s, Name: name, ClusterAddr: addr, Args: args})
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := nodes[0].StorageStatus()
		voters := 0
		for _, v := range st.Replicas {
			if strings.HasPrefix(v, "voter/") {
				voters++
			}
		}
		if err == nil && voters == min(o.Nodes, 3) && len(st.Replicas) == o.Nodes {
			return nodes, keyFile
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: cluster of %d not formed in 60s: %+v %v\n--- node1 log ---\n%s", o.Nodes, st, err, nodes[0].Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// StorageStatus is `xmppctl --json storage` decoded.
type StorageStatus struct {
	Mode        string            `json:"mode"`
	Backend     string            `json:"backend"`
	Generation  uint64            `json:"generation"`
	Node        string            `json:"node"`
	Leader      string            `json:"leader"`
	Role        string            `json:"role"`
	Applied     uint64            `json:"applied_index"`
	Lag         uint64            `json:"lag_entries"`
	ClusterAddr string            `json:"cluster_addr"`
	Replicas    map[string]string `json:"replicas"`
}

// StorageStatus runs `xmppctl --json storage` and decodes it.
func (s *Server) StorageStatus() (StorageStatus, error) {
	var st StorageStatus
	o, e, code := s.Ctl("--json", "storage")
	if code != 0 {
		return st, fmt.Errorf("xmppctl storage: exit %d: %s", code, e)
	}
	if err := json.Unmarshal([]byte(o), &st); err != nil {
		return st, fmt.Errorf("xmppctl storage: %w: %s", err, o)
	}
	return st, nil
}

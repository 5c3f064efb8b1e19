//go:build integration

package muc_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// TestMUCClusterWithSlixmpp drives a room across a 3-node cluster with real
// slixmpp clients (testdata/muc_cluster.py): occupants on three nodes see each
// other's presence and messages (one stanza-id by the room per message), the
// room's archive pages with RSM; a nick change through node 3 reaches every
// node's occupants (303 with the new nick, then the new nick); node 1 (the bootstrap node, normally the raft
// leader) holding two occupants is killed: the others get exactly one unavailable presence per lost occupant
// (removed once the survivors have a new leader) and the room keeps working;
// after a restart of the whole cluster the persistent room, its configuration
// and its archive are back.
func TestMUCClusterWithSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	script, err := os.ReadFile("testdata/muc_cluster.py")
	if err != nil {
		t.Fatal(err)
	}
	const pw = "muc-cluster-pw"
	start := time.Now()
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{})
	nodes[0].Register(t, "alice", pw, "bob", pw, "carol", pw, "dave", pw)
	t.Logf("cluster up and users registered after %v", time.Since(start).Round(time.Millisecond))
	addrs := func() []string {
		var a []string
		for _, n := range nodes {
			a = append(a, n.Addr())
		}
		return a
	}
	logs := func() string {
		var b strings.Builder
		for _, n := range nodes {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", n.Name, n.Logs())
		}
		return b.String()
	}

	// Phase live: the script prints KILL when node 1 may die and goes on when
	// told GO.
	f, err := os.CreateTemp(t.TempDir(), "muc-cluster-*.py")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(script)
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Python, append([]string{"-u", f.Name(), "live", nodes[0].Domain, pw}, addrs()...)...)
	cmd.WaitDelay = 2 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var mu sync.Mutex
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		mu.Lock()
		out.WriteString(line + "\n")
		mu.Unlock()
		if line == "KILL" && !killed {
			killed = true
			st, _ := nodes[1].StorageStatus()
			t.Logf("killing node1 (carol and dave; raft leader: %s) after %v", st.Leader, time.Since(start).Round(time.Millisecond))
			nodes[0].Kill()
			fmt.Fprintln(stdin, "GO")
		}
	}
	werr := cmd.Wait()
	if werr != nil || !killed || !strings.Contains(out.String(), "OK") {
		t.Fatalf("phase live: %v\n%s%s\n%s", werr, out.String(), stderr.String(), logs())
	}
	t.Logf("phase live done after %v", time.Since(start).Round(time.Millisecond))

	// A restart of the whole cluster.
	nodes[1].Stop()
	nodes[2].Stop()
	nodes = testenv.RestartAll(t, nodes...)
	t.Logf("cluster restarted after %v", time.Since(start).Round(time.Millisecond))
	r := nodes[0].Python(90*time.Second, string(script), append([]string{"after", nodes[0].Domain, pw}, addrs()...)...)
	if r.Err != nil || !strings.Contains(r.Output, "OK") {
		t.Fatalf("phase after: %v\n%s\n%s", r.Err, r.Output, logs())
	}
	t.Logf("done after %v", time.Since(start).Round(time.Millisecond))
}

//go:build integration

package server_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// `xmppctl cluster join ADDR` (ejabberd's join_cluster): a node that
// bootstrapped alone joins a running cluster without being restarted by
// anyone (same PID). A join to a dead address or to a peer with another key
// fails with the address and the cause and changes nothing; a node with data
// needs --force, and its tables are then replaced by the cluster's.
func TestClusterJoinCommand(t *testing.T) {
	nodes, key := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 2})
	n1 := nodes[0]
	n1.Register(t, "alice", "secret")

	addr := testenv.FreeAddr(t, "127.0.0.1")
	args := append(testenv.ClusterNodeArgs("node9", addr, key, fmt.Sprintf("file:%s/n9.img?size=%d", t.TempDir(), 64<<20)), testenv.FastRaftArgs...)
	lone := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: args})
	lone.Register(t, "zed", "secret")
	pid := lone.PID()

	fail := func(what, wantAddr, wantCause string, a ...string) {
		t.Helper()
		o, e, code := lone.Ctl(append([]string{"cluster", "join"}, a...)...)
		if code == 0 || !strings.Contains(e, wantAddr) || !strings.Contains(e, wantCause) {
			t.Fatalf("%s: exit %d, want an error naming %s and %q:\n%s%s", what, code, wantAddr, wantCause, o, e)
		}
		t.Logf("%s: %s", what, strings.TrimSpace(e))
	}
	dead := testenv.FreeAddr(t, "127.0.0.1")
	fail("nobody listening", dead, "cannot be reached", dead, "--force")
	other := httptest.NewTLSServer(http.NotFoundHandler()) // TLS, but not this cluster's identity
	defer other.Close()
	otherAddr := strings.TrimPrefix(other.URL, "https://")
	fail("another key", otherAddr, "does not hold this cluster key", otherAddr, "--force")
	fail("data without --force", n1.ClusterAddr, "--force", n1.ClusterAddr)
	// Nothing changed: still alone, still serving its own user.
	if st, err := lone.StorageStatus(); err != nil || len(st.Replicas) != 1 {
		t.Fatalf("after failed joins: %+v %v", st, err)
	}
	c := testenv.DialTLS(t, lone)
	c.LoginPlain(lone.Domain, "zed", "secret", "z")

	o, e, code := lone.Ctl("cluster", "join", n1.ClusterAddr, "--force")
	if code != 0 || !strings.Contains(o, "joining") || !strings.Contains(o, "users") {
		t.Fatalf("join: exit %d: %s%s", code, o, e)
	}
	// The node restarts in place and joins under a fresh raft ID.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := n1.StorageStatus()
		if err == nil && len(st.Replicas) == 3 {
			if lst, err := lone.StorageStatus(); err == nil && len(lst.Replicas) == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node9 did not join: %+v %v\n--- node9 ---\n%s", st, err, lone.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if lone.PID() != pid {
		t.Fatalf("pid changed: %d -> %d", pid, lone.PID())
	}
	// Its tables are the cluster's now: alice logs in there, zed is gone.
	a := testenv.DialTLS(t, lone)
	a.LoginPlain(lone.Domain, "alice", "secret", "a9")
	if o, _, _ := n1.Ctl("users"); strings.Contains(o, "zed") {
		t.Fatalf("the joining node's discarded user reached the cluster: %s", o)
	}
	if o, _, _ := lone.Ctl("cluster", "members"); !strings.Contains(o, "node1") || !strings.Contains(o, "node9") {
		t.Fatalf("members on node9: %s", o)
	}
	// Joining again is idempotent.
	if o, e, code := lone.Ctl("cluster", "join", n1.ClusterAddr); code != 0 || !strings.Contains(o, "already a member") {
		t.Fatalf("second join: exit %d: %s%s", code, o, e)
	}
}

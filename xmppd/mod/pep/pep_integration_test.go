//go:build integration

package pep_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// TestPEPWithSlixmpp starts a real xmppd and drives slixmpp's PEP plugins against
// it: avatar and OMEMO device list notifications to a subscribed contact with
// +notify caps, Bookmarks 2, then the same items read back after an xmppd restart
// and sent as last items on a new resource's initial presence.
func TestPEPWithSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	script, err := os.ReadFile("testdata/pep.py")
	if err != nil {
		t.Fatal(err)
	}
	const pw = "secret-pw"
	args := []string{"--log-level", "info"}
	s := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: args})
	s.Register(t, "alice", pw, "bob", pw)
	run := func(s *testenv.Server, phase string) {
		t.Helper()
		out := s.RunPython(t, 60*time.Second, string(script), phase, s.Host, strconv.Itoa(s.Port), s.Domain, pw, "alice", "bob")
		if !strings.Contains(out, "OK") {
			t.Fatalf("phase %s:\n%s\n--- xmppd log ---\n%s", phase, out, s.Logs())
		}
	}
	run(s, "publish")
	s.Stop()
	s2 := testenv.Start(t, testenv.Options{NoTLSListener: true, Data: s.Data, Args: args})
	run(s2, "restart")
}

// TestPEPAcrossCluster: alice publishes on node1, bob (a contact with +notify caps)
// is connected to node2 and receives the notification, then reads the item there.
func TestPEPAcrossCluster(t *testing.T) {
	testenv.NeedSlixmpp(t)
	script, err := os.ReadFile("testdata/pep.py")
	if err != nil {
		t.Fatal(err)
	}
	const pw = "secret-pw"
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{})
	n1, n2 := nodes[0], nodes[1]
	n1.Register(t, "alice", pw, "bob", pw)
	out := n1.RunPython(t, 60*time.Second, string(script), "cluster", n1.Host, strconv.Itoa(n1.Port), n1.Domain, pw, "alice", "bob", strconv.Itoa(n2.Port))
	if !strings.Contains(out, "OK") {
		t.Fatalf("cluster:\n%s\n--- node1 ---\n%s\n--- node2 ---\n%s", out, n1.Logs(), n2.Logs())
	}
}

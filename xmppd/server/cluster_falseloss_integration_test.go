//go:build integration && linux

package server_test

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// falseLossGID is the group node3 of TestClusterFalseNodeLossResume runs
// under: the iptables rules that cut its cluster traffic match its sockets
// by owner (every node talks from 127.0.0.1, so an address cannot tell them
// apart).
const falseLossGID = 31813

// A node its peers declare lost while it is alive and serving (its cluster
// traffic cut: peers see it silent, it sees them silent, its clients keep
// talking to it) must not acknowledge stanzas that no peer's copy of the
// session holds: once the peers' copies are orphans (resumable without it),
// a client that resumes elsewhere after that node died gets the copy, and
// what the node acknowledged after the cut would be lost.
//
// Here carol and alice are on node3; node3's cluster port is cut until node2
// and node1 dropped its rows (alice's session copy on node2 an orphan) and
// node3 sees no peer; carol sends alice 20 messages with <r/>; node3 is
// killed; alice resumes on node2. Every message carol was told node3 had
// received (<a h=.../>) must reach alice: on the resumed session, or offline
// storage through a second resource. Before the fix node3 acknowledged all
// of them at once (a replication Sync with no peer left succeeded without
// one) and the 20 were lost.
func TestClusterFalseNodeLossResume(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("iptables (build/setup.sh installs it): %v", err)
	}
	nodes := startClusterWithGID(t, 3, falseLossGID, []string{"--sm-timeout", "60s"})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.Register(t, "alice", "secret", "carol", "secret")
	for _, n := range nodes {
		waitResume(t, n, "two peers", func(s resumeStats) bool { return s.Peers == 2 })
	}
	alice, id := smLogin(t, n3, "alice", "a")
	carol, _ := smLogin(t, n3, "carol", "c")
	waitResume(t, n2, "copies of alice's and carol's sessions", func(s resumeStats) bool { return s.Copies >= 2 })

	// Before the cut: 5 messages, acknowledged once a peer holds them.
	const before, during = 5, 20
	var b strings.Builder
	for i := 1; i <= before; i++ {
		b.WriteString(chat("alice@localhost/a", fmt.Sprint("m", i), fmt.Sprint("m-", i)))
	}
	carol.Send(b.String() + "<r xmlns='urn:xmpp:sm:3'/>")
	carol.Expect(fmt.Sprintf("h='%d'", before), 10*sec)

	// The cut: node3's cluster port unreachable, node3's own cluster
	// connections dropped; its client port untouched.
	cut := isolateCluster(t, n3, falseLossGID, n1, n2)
	waitResume(t, n2, "node3's sessions orphaned (node3 declared lost)", func(s resumeStats) bool { return s.Orphans >= 2 })
	waitResume(t, n3, "no peer left in node3's view", func(s resumeStats) bool { return s.Peers == 0 })

	b.Reset()
	for i := before + 1; i <= before+during; i++ {
		b.WriteString(chat("alice@localhost/a", fmt.Sprint("m", i), fmt.Sprint("m-", i)))
	}
	carol.Send(b.String() + "<r xmlns='urn:xmpp:sm:3'/>")
	roundTrip(carol, "cut-ping")
	// An <a/> now would cover stanzas held by node3 alone. Waiting for it is
	// bounded: the fixed node does not send it while it has no peer.
	got, _ := carol.ReadUntil(fmt.Sprintf("h='%d'", before+during), 3*sec)
	n3.Kill()
	cut()
	rest, _ := carol.ReadAll(sec / 2)
	acked := maxAckH(got + rest)
	if acked < before {
		acked = before
	}
	t.Logf("carol: %d of %d messages acknowledged by node3 (%d during the cut)", acked, before+during, acked-before)

	// alice resumes on node2 (she read nothing: h=0).
	alice.Drop()
	c := testenv.DialTLS(t, n2.Server)
	c.AuthPlain(n2.Domain, "alice", "secret")
	c.Send(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>", id))
	first, err := c.ReadUntil("urn:xmpp:sm:3", 20*sec)
	if err != nil {
		t.Fatalf("resume on node2: %v: %s", err, first)
	}
	var toAlice strings.Builder
	toAlice.WriteString(first)
	o := testenv.DialTLS(t, n1.Server)
	o.LoginPlain(n1.Domain, "alice", "secret", "offline")
	o.Send("<presence/>")
	missing := func() []string {
		seen := distinct(bodiesIn(toAlice.String()))
		var out []string
		for i := 1; i <= acked; i++ {
			if !seen[fmt.Sprint("m-", i)] {
				out = append(out, fmt.Sprint(i))
			}
		}
		return out
	}
	for deadline := time.Now().Add(30 * sec); len(missing()) > 0 && time.Now().Before(deadline); {
		x, _ := c.ReadAll(sec / 3)
		toAlice.WriteString(x)
		y, _ := o.ReadAll(sec / 3)
		toAlice.WriteString(y)
	}
	resumed := strings.Contains(first, "<resumed")
	if lost := missing(); len(lost) > 0 {
		t.Logf("node2:\n%s", grepLines(n2.Logs(), "resum", "node lost", "copy"))
		t.Fatalf("%d of %d messages acknowledged to carol never reached alice (resumed on node2: %v): %s",
			len(lost), acked, resumed, strings.Join(lost, ","))
	}
	t.Logf("alice resumed on node2: %v; all %d acknowledged messages delivered", resumed, acked)
}

// maxAckH returns the largest h of the <a/> elements in s (0: none).
func maxAckH(s string) int {
	h := 0
	for _, m := range regexp.MustCompile(`<a xmlns='urn:xmpp:sm:3' h='(\d+)'`).FindAllStringSubmatch(s, -1) {
		if v, _ := strconv.Atoi(m[1]); v > h {
			h = v
		}
	}
	return h
}

// grepLines returns the lines of s containing any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// startClusterWithGID starts n nodes as testenv.StartCluster does, the last
// one with group gid (the test process takes that group while it starts it).
func startClusterWithGID(t *testing.T, n, gid int, extra []string) []*testenv.Node {
	t.Helper()
	key := testenv.WriteClusterKey(t)
	dir := t.TempDir()
	var nodes []*testenv.Node
	var seed string
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node%d", i)
		addr := testenv.FreeAddr(t, "127.0.0.1")
		var seeds []string
		if seed != "" {
			seeds = []string{seed}
		} else {
			seed = addr
		}
		stor := fmt.Sprintf("file:%s/node%d.img?size=%d", dir, i, 64<<20)
		args := append(testenv.ClusterNodeArgs(name, addr, key, stor, seeds...), testenv.FastRaftArgs...)
		args = append(args, extra...)
		var s *testenv.Server
		if i == n {
			s = startAsGroup(t, gid, testenv.Options{NoTLSListener: true, Args: args})
		} else {
			s = testenv.Start(t, testenv.Options{NoTLSListener: true, Args: args})
		}
		nodes = append(nodes, &testenv.Node{Server: s, Name: name, ClusterAddr: addr, Args: args})
	}
	for deadline := time.Now().Add(60 * sec); ; time.Sleep(200 * time.Millisecond) {
		st, err := nodes[0].StorageStatus()
		voters := 0
		for _, v := range st.Replicas {
			if strings.HasPrefix(v, "voter/") {
				voters++
			}
		}
		if err == nil && voters == min(n, 3) && len(st.Replicas) == n {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster of %d not formed in 60s: %+v %v", n, st, err)
		}
	}
}

// startAsGroup starts xmppd with group gid: the process's group is gid while
// it forks (setgid applies to every thread of the test process), then 0 again.
func startAsGroup(t *testing.T, gid int, o testenv.Options) *testenv.Server {
	t.Helper()
	testenv.Binaries(t) // built before, under the test's own group
	if err := syscall.Setgid(gid); err != nil {
		t.Fatalf("setgid %d: %v", gid, err)
	}
	defer func() {
		if err := syscall.Setgid(0); err != nil {
			t.Errorf("setgid 0: %v", err)
		}
	}()
	return testenv.Start(t, o)
}

// isolateCluster cuts node's cluster traffic with iptables: connections to
// its cluster port, and its own (by its group gid) to the others' cluster
// ports. Its client port stays open. It returns the function that heals the
// cut (also run at cleanup).
func isolateCluster(t *testing.T, node *testenv.Node, gid int, others ...*testenv.Node) func() {
	t.Helper()
	port := func(n *testenv.Node) string {
		i := strings.LastIndexByte(n.ClusterAddr, ':')
		return n.ClusterAddr[i+1:]
	}
	var dports []string
	for _, o := range others {
		dports = append(dports, port(o))
	}
	rules := [][]string{
		{"OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", port(node), "-j", "DROP"},
		{"OUTPUT", "-p", "tcp", "-m", "owner", "--gid-owner", fmt.Sprint(gid), "-m", "multiport", "--dports", strings.Join(dports, ","), "-j", "DROP"},
	}
	for _, r := range rules {
		if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables -I %v: %v %s", r, err, out)
		}
	}
	healed := false
	heal := func() {
		if healed {
			return
		}
		healed = true
		for _, r := range rules {
			if out, err := exec.Command("iptables", append([]string{"-w", "-D"}, r...)...).CombinedOutput(); err != nil {
				t.Errorf("iptables -D %v: %v %s", r, err, out)
			}
		}
	}
	t.Cleanup(heal)
	return heal
}

// A resumption refused because the copy is older than the client (the node
// declared lost by mistake went on delivering to alice, then died) ends the old
// session: alice's contacts are told she is unavailable. Before, the refusal
// left her lost session counted as resumed on every node, so nobody sent the
// unavailable presence and dave kept seeing alice/a online.
//
// alice and carol are on node3, dave (alice's contact) on node1; node3's cluster
// port is cut until its peers hold alice's session as an orphan copy; carol then
// sends alice 20 messages, which alice reads; node3 is killed; alice resumes on
// node2 with the h she has, beyond the copy's: <failed/>, and dave gets alice/a's
// unavailable presence (and not before the refusal: the session was held for
// its resumption).
func TestClusterRefusedResumeClosesForContacts(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("iptables (build/setup.sh installs it): %v", err)
	}
	nodes := startClusterWithGID(t, 3, falseLossGID, []string{"--sm-timeout", "60s"})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.Register(t, "alice", "secret", "carol", "secret", "dave", "secret")
	for _, args := range [][]string{
		{"add_rosteritem", "alice", "localhost", "dave", "localhost", "Dave", "", "both"},
		{"add_rosteritem", "dave", "localhost", "alice", "localhost", "Alice", "", "both"},
	} {
		if o, e, code := n1.Ctl(args...); code != 0 {
			t.Fatalf("xmppctl %v: exit %d %s%s", args, code, o, e)
		}
	}
	for deadline := time.Now().Add(10 * sec); ; {
		o, _, _ := n3.Ctl("get_roster", "alice", "localhost")
		if strings.Contains(o, "dave@localhost") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's roster on node3: %q", o)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range nodes {
		waitResume(t, n, "two peers", func(s resumeStats) bool { return s.Peers == 2 })
	}
	dave := testenv.DialTLS(t, n1.Server)
	dave.LoginPlain(n1.Domain, "dave", "secret", "d")
	dave.Send("<presence/>")
	roundTrip(dave, "dave-p")
	alice, id := smLogin(t, n3, "alice", "a")
	alice.Send("<presence/><iq type='get' id='alice-p'><ping xmlns='urn:xmpp:ping'/></iq>")
	read := alice.Expect("id='alice-p'", 10*sec) // what alice's client handled: h counts it
	dave.Expect("from='alice@localhost/a'", 10*sec)
	carol, _ := smLogin(t, n3, "carol", "c")
	waitResume(t, n2, "copies of alice's and carol's sessions", func(s resumeStats) bool { return s.Copies >= 2 })

	cut := isolateCluster(t, n3, falseLossGID, n1, n2)
	waitResume(t, n2, "node3's sessions orphaned (node3 declared lost)", func(s resumeStats) bool { return s.Orphans >= 2 })
	waitResume(t, n3, "no peer left in node3's view", func(s resumeStats) bool { return s.Peers == 0 })
	var b strings.Builder
	for i := 1; i <= 20; i++ {
		b.WriteString(chat("alice@localhost/a", fmt.Sprint("m", i), fmt.Sprint("m-", i)))
	}
	carol.Send(b.String())
	read += alice.Expect("<body>m-20</body>", 10*sec)
	read += alice.Expect("</message>", 10*sec)
	n3.Kill()
	cut()
	// Held for its resumption, alice's session is not closed by the loss.
	waitResume(t, n1, "node3 gone from node1's view", func(s resumeStats) bool { return s.Peers == 1 })
	if got, _ := dave.ReadAll(sec); strings.Contains(got, "type='unavailable'") {
		t.Fatalf("dave was told alice left before her resumption was tried: %s", got)
	}

	h := len(regexp.MustCompile(`<(message|presence|iq)[\s/>]`).FindAllString(read, -1))
	alice.Drop()
	c := testenv.DialTLS(t, n2.Server)
	c.AuthPlain(n2.Domain, "alice", "secret")
	c.Send(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>", id, h))
	if got, err := c.ReadUntil("urn:xmpp:sm:3", 20*sec); err != nil || !strings.Contains(got, "<failed") {
		t.Fatalf("resume on node2 with h=%d (the copy older than that): want <failed/>; got %v %s", h, err, got)
	}
	got, err := dave.ReadUntil("from='alice@localhost/a'", 15*sec)
	if i := strings.LastIndex(got, "<presence"); err != nil || i < 0 || !strings.Contains(got[i:], "type='unavailable'") {
		t.Logf("node1:\n%s\nnode2:\n%s", grepLines(n1.Logs(), "resum", "node lost", "closed"), grepLines(n2.Logs(), "resum", "refused", "closed"))
		t.Fatalf("dave never told that alice/a is gone after her resumption was refused: %v %q", err, got)
	}
}

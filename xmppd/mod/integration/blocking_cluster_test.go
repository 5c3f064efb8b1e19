//go:build integration

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// TestBlockListChangedOnAnotherNode: the blocking module checks lists on the
// node where a stanza enters or is delivered, while the list may be changed
// through any node. alice blocks and unblocks bob from a session on node2; alice's
// other session and bob are on node1, which must apply both changes (no stale
// "nobody blocks" answer) in both directions: alice's outgoing messages are refused
// with <blocked/>, bob's incoming ones dropped, and both flow again after unblock.
func TestBlockListChangedOnAnotherNode(t *testing.T) {
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{})
	n1, n2 := nodes[0], nodes[1]
	n1.Register(t, "alice", password, "bob", password)
	login := func(n *testenv.Node, user, res string) *testenv.Raw {
		r := testenv.DialTLS(t, n.Server)
		r.LoginPlain(n.Domain, user, password, res)
		return r
	}
	a1 := login(n1, "alice", "one")
	b := login(n1, "bob", "b")
	a2 := login(n2, "alice", "two")
	bob, alice1 := "bob@"+n1.Domain+"/b", "alice@"+n1.Domain+"/one"

	// seq numbers the probes so that a late answer is never taken for a new one.
	seq := 0
	// probe sends alice1 -> bob and reports whether node1 refused it as blocked
	// (true) or delivered it to bob (false).
	probe := func() bool {
		seq++
		id := fmt.Sprintf("p%d", seq)
		a1.Send(fmt.Sprintf("<message to='%s' id='%s' type='chat'><body>%s</body></message>", bob, id, id))
		for {
			got, err := a1.ReadUntil("</message>", 200*time.Millisecond)
			if err != nil {
				break // not refused (yet): look at bob's side
			}
			if strings.Contains(got, "id='"+id+"'") || strings.Contains(got, `id="`+id+`"`) {
				if !strings.Contains(got, "urn:xmpp:blocking:errors") {
					t.Fatalf("unexpected answer to %s: %s", id, got)
				}
				return true
			}
		}
		got, err := b.ReadUntil("<body>"+id+"</body>", 5*time.Second)
		if err != nil {
			t.Fatalf("%s neither refused nor delivered: %v %q", id, err, got)
		}
		return false
	}
	// until polls probe (bounded) until it reports want: the change is committed on
	// node2 when its IQ result arrives, and applied on node1 a moment later.
	until := func(want bool, what string) {
		t.Helper()
		for i := 0; i < 50; i++ {
			if probe() == want {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("node1 never saw %s made on node2", what)
	}

	if probe() {
		t.Fatal("blocked before any block list")
	}
	a2.Send("<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='bob@" + n1.Domain + "'/></block></iq>")
	a2.Expect("id='blk'", 10*time.Second)
	until(true, "the block")
	// Inbound: bob's message to alice's session on node1 is dropped silently.
	b.Send("<message to='" + alice1 + "' id='in1' type='chat'><body>in1</body></message>")
	if got, err := a1.ReadUntil("<body>in1</body>", 1500*time.Millisecond); err == nil {
		t.Fatalf("message from a blocked JID delivered: %s", got)
	}
	a2.Send("<iq type='set' id='unb'><unblock xmlns='urn:xmpp:blocking'/></iq>")
	a2.Expect("id='unb'", 10*time.Second)
	until(false, "the unblock")
	b.Send("<message to='" + alice1 + "' id='in2' type='chat'><body>in2</body></message>")
	a1.Expect("<body>in2</body>", 5*time.Second)
}

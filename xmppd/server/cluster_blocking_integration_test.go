//go:build integration

package server_test

import (
	"strings"
	"testing"

	"xedge/xmppd/internal/testenv"
)

// XEP-0191 pushes across nodes: a block made by one resource reaches the
// user's resource on another node that requested the block list (and not
// one that did not).
func TestClusterBlockingPushAcrossNodes(t *testing.T) {
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 2})
	n1, n2 := nodes[0], nodes[1]
	n1.Register(t, "bob", "secret")
	waitCtl(t, n2, "bob\n", "users") // the account is replicated to node2

	there := testenv.DialTLS(t, n2.Server)
	there.LoginPlain(n2.Domain, "bob", "secret", "there")
	there.Send("<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
	there.Expect("id='bl'", 10*sec)
	waitSessionOn(t, n1, "bob@localhost/there", "node2")
	// The session's "requested the block list" flag reaches node1 with its row.
	for i := 0; ; i++ {
		here := testenv.DialTLS(t, n1.Server)
		here.LoginPlain(n1.Domain, "bob", "secret", "here")
		here.Send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='spam@example.net'/></block></iq>")
		here.Expect("id='b1'", 10*sec)
		got, err := there.ReadUntil("spam@example.net", 3*sec)
		if err == nil {
			if !strings.Contains(got, "<block xmlns='urn:xmpp:blocking'") && !strings.Contains(got, "<block xmlns=\"urn:xmpp:blocking\"") {
				t.Fatalf("push on node2: %s", got)
			}
			break
		}
		if i == 2 {
			t.Fatalf("no block push on the other node's resource: %v %q", err, got)
		}
		here.Send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>")
		here.Expect("id='u1'", 10*sec)
	}
}

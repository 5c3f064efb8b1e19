//go:build integration

package server_test

import (
	"fmt"
	"strings"
	"testing"

	"xedge/xmppd/internal/testenv"
)

// A stanza forwarded over the cluster bus to a resumable session on another
// node is acknowledged on the bus only once its resumption state is on a
// third node's copy (the bus barrier), so SIGKILL of the recipient's node
// right after the sender's server acknowledged the stanzas loses none: each
// arrives on the resumed session on another node, in offline storage, or
// comes back to the sender as an error.
func TestClusterForwardedStanzaSurvivesKill(t *testing.T) {
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Args: []string{"--sm-timeout", "20s"}})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.Register(t, "alice", "secret", "bob", "secret")
	waitResume(t, n2, "two peers", func(s resumeStats) bool { return s.Peers == 2 })

	alice, _ := smLogin(t, n1, "alice", "a")
	bob, id := smLogin(t, n2, "bob", "r")
	waitSessionOn(t, n1, "bob@localhost/r", "node2")
	const total = 400
	var b strings.Builder
	for i := 1; i <= total; i++ {
		b.WriteString(chat("bob@localhost/r", fmt.Sprint("k", i), fmt.Sprint("k-", i)))
	}
	b.WriteString("<r xmlns='urn:xmpp:sm:3'/>")
	alice.Send(b.String())
	// Killed in the middle of the stream (bus acknowledgements and
	// replication in flight).
	bob.Expect("<body>k-150</body>", 20*sec)
	n2.Kill()
	bob.Drop()
	// alice's server has taken all of them: none may be lost.
	alice.Expect(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", total), 20*sec)

	got := map[string]int{}
	count := func(s string) {
		for _, x := range bodiesIn(s) {
			got[x]++
		}
	}
	// bob resumes on node3 (he acknowledged nothing).
	c := testenv.DialTLS(t, n3.Server)
	c.AuthPlain(n3.Domain, "bob", "secret")
	c.Send(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>", id))
	first, err := c.ReadUntil("<resumed", 20*sec)
	if err != nil {
		t.Fatalf("resume on node3: %v: %s", err, first)
	}
	rest, _ := c.ReadAll(2 * sec)
	count(rest)
	resumed := len(got)
	c.Send(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", strings.Count(rest, "<message")))
	// A second resource, available: what the sender's node routes again
	// (never acknowledged by the dead node) and what waits offline.
	o := testenv.DialTLS(t, n1.Server)
	o.LoginPlain(n1.Domain, "bob", "secret", "offline")
	o.Send("<presence/>")
	var bounced strings.Builder
	nb := 0
	missing := func() int {
		n := 0
		for i := 1; i <= total; i++ {
			if got[fmt.Sprint("k-", i)] == 0 {
				n++
			}
		}
		return n
	}
	// Collect until everything is accounted for or nothing new came for 4 s
	// (bounded: 30 s).
	quiet := 0
	for round := 0; round < 30 && missing() > 0 && quiet < 4; round++ {
		before := missing()
		x, _ := c.ReadAll(sec / 3)
		count(x)
		y, _ := o.ReadAll(sec / 3)
		count(y)
		z, _ := alice.ReadAll(sec / 3)
		bounced.WriteString(z)
		for i := 1; i <= total; i++ {
			k := fmt.Sprint("k-", i)
			if got[k] == 0 && strings.Contains(bounced.String(), fmt.Sprintf("id='k%d'", i)) && strings.Contains(bounced.String(), "type='error'") {
				got[k]++
				nb++
			}
		}
		if missing() == before {
			quiet++
		} else {
			quiet = 0
		}
	}
	var lost []string
	for i := 1; i <= total; i++ {
		if got[fmt.Sprint("k-", i)] == 0 {
			lost = append(lost, fmt.Sprint(i))
		}
	}
	t.Logf("%d messages: %d on the resumed session, %d more offline or on the resumed session later, %d bounced (and not delivered)", total, resumed, len(got)-resumed-nb, nb)
	// The survivors' bus reconnect warnings for the dead node blame no key.
	for _, n := range []*testenv.Node{n1, n3} {
		for _, l := range strings.Split(n.Logs(), "\n") {
			if strings.Contains(l, "wrong cluster key") || strings.Contains(l, "does not hold this cluster key") {
				t.Errorf("%s blames the cluster key for a killed peer: %s", n.Name, l)
			}
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost after SIGKILL of the recipient's node: %s", len(lost), total, strings.Join(lost, ","))
	}
}

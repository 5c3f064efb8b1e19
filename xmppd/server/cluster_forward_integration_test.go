//go:build integration

package server_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

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
	// alice's server has taken all of them: none may be lost. Its <a/> waits
	// until another node holds alice's own resumption state, which after the
	// kill may be after node1 found node2 gone and bounced what offline
	// storage did not take: everything alice receives from here on is kept,
	// what comes before the <a/> too.
	var toAlice, toBob, toOther strings.Builder
	toAlice.WriteString(alice.Expect(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", total), 20*sec))
	beforeAck := len(errorIDsIn(toAlice.String()))

	// bob resumes on node3 (he acknowledged nothing).
	c := testenv.DialTLS(t, n3.Server)
	c.AuthPlain(n3.Domain, "bob", "secret")
	c.Send(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>", id))
	first, err := c.ReadUntil("<resumed", 20*sec)
	if err != nil {
		t.Fatalf("resume on node3: %v: %s", err, first)
	}
	rest, _ := c.ReadAll(2 * sec)
	toBob.WriteString(rest)
	resumed := len(distinct(bodiesIn(rest)))
	c.Send(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", strings.Count(rest, "<message")))
	// A second resource, available: what the sender's node routes again
	// (never acknowledged by the dead node) and what waits offline.
	o := testenv.DialTLS(t, n1.Server)
	o.LoginPlain(n1.Domain, "bob", "secret", "offline")
	o.Send("<presence/>")
	// Each message is delivered to one of bob's sessions or comes back to
	// alice as an error; the inputs are kept whole, so that a stanza split
	// between two reads is counted.
	var got map[string]int
	var nb int
	account := func() (missing int) {
		got, nb = map[string]int{}, 0
		for _, x := range append(bodiesIn(toBob.String()), bodiesIn(toOther.String())...) {
			got[x]++
		}
		bounced := errorIDsIn(toAlice.String())
		for i := 1; i <= total; i++ {
			k := fmt.Sprint("k-", i)
			if got[k] == 0 && bounced[fmt.Sprint("k", i)] {
				got[k]++
				nb++
			}
			if got[k] == 0 {
				missing++
			}
		}
		return missing
	}
	// Collect until everything is accounted for. Bounded by 45 s: a message
	// the sender's node stores offline while the store has no raft leader
	// is retried for up to 20 s (offline.UnavailableRetry) before it bounces,
	// and a copy nobody resumes is rerouted after the 20 s sm-timeout; a
	// loss fails after the bound.
	for deadline := time.Now().Add(45 * sec); account() > 0 && time.Now().Before(deadline); {
		x, _ := c.ReadAll(sec / 3)
		toBob.WriteString(x)
		y, _ := o.ReadAll(sec / 3)
		toOther.WriteString(y)
		z, _ := alice.ReadAll(sec / 3)
		toAlice.WriteString(z)
	}
	account()
	var lost []string
	for i := 1; i <= total; i++ {
		if got[fmt.Sprint("k-", i)] == 0 {
			lost = append(lost, fmt.Sprint(i))
		}
	}
	// Bounced and delivered: an error told alice a message failed that bob got.
	both := 0
	delivered := distinct(append(bodiesIn(toBob.String()), bodiesIn(toOther.String())...))
	for id := range errorIDsIn(toAlice.String()) {
		if delivered["k-"+strings.TrimPrefix(id, "k")] {
			both++
		}
	}
	t.Logf("%d messages: %d on the resumed session, %d more offline or on the resumed session later, %d bounced (and not delivered), %d bounced and delivered; alice got %d errors, %d before her <a/>, %d for full offline storage, %d for unavailable storage; node1 held %s unacknowledged stanzas in its copies instead of routing them again",
		total, resumed, len(got)-resumed-nb, nb, both, len(errorIDsIn(toAlice.String())), beforeAck,
		strings.Count(toAlice.String(), "offline storage is full"), strings.Count(toAlice.String(), "storage unavailable"), heldCount(n1.Logs()))
	// The survivors' bus reconnect warnings for the dead node blame no key.
	for _, n := range []*testenv.Node{n1, n3} {
		for _, l := range strings.Split(n.Logs(), "\n") {
			if strings.Contains(l, "wrong cluster key") || strings.Contains(l, "does not hold this cluster key") {
				t.Errorf("%s blames the cluster key for a killed peer: %s", n.Name, l)
			}
		}
	}
	if len(lost) > 0 {
		// What node1 did with the stanzas node2 never acknowledged.
		l1 := n1.Logs()
		t.Logf("node1: %d stanzas routed again, %d bounced as offline storage was full, %d not stored",
			strings.Count(l1, "routing it again"), strings.Count(l1, "offline storage full, bouncing"), strings.Count(l1, "offline message not stored"))
		t.Fatalf("%d of %d acknowledged messages lost after SIGKILL of the recipient's node: %s", len(lost), total, strings.Join(lost, ","))
	}
}

// heldCount sums the "held" counts of a node's log lines saying that
// unacknowledged stanzas of a gone node are held in its copies (cluster.Bus.SetHeld).
func heldCount(log string) string {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "had not acknowledged are held here") {
			if i := strings.Index(l, " held="); i >= 0 {
				v, _ := strconv.Atoi(strings.Fields(l[i+6:])[0])
				n += v
			}
		}
	}
	return strconv.Itoa(n)
}

// errorIDsIn returns the ids of the message errors (type='error' with an
// <error/>) in s, a client's input.
func errorIDsIn(s string) map[string]bool {
	out := map[string]bool{}
	for {
		i := strings.Index(s, "<message")
		if i < 0 {
			return out
		}
		s = s[i:]
		end := strings.IndexByte(s, '>')
		if end < 0 {
			return out
		}
		tag := s[:end+1]
		if strings.HasSuffix(tag, "/>") {
			s = s[len(tag):]
			continue
		}
		j := strings.Index(s, "</message>")
		if j < 0 {
			return out
		}
		if testenv.Attr(tag, "type") == "error" && strings.Contains(s[:j], "<error") {
			out[testenv.Attr(tag, "id")] = true
		}
		s = s[j:]
	}
}

// distinct returns the set of xs.
func distinct(xs []string) map[string]bool {
	out := map[string]bool{}
	for _, x := range xs {
		out[x] = true
	}
	return out
}

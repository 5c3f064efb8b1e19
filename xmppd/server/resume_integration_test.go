//go:build integration

package server_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// XEP-0198 resumption on any node of a 3-node cluster (package resume).

// resumeStats is `xmppctl --json resume`.
type resumeStats struct {
	Local, Copies, Orphans, Queued, Peers int
}

func resumeStatsOf(t *testing.T, n *testenv.Node) resumeStats {
	t.Helper()
	out, errOut, code := n.Ctl("--json", "resume")
	var st resumeStats
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("xmppctl resume on %s: %d %s %s", n.Name, code, out, errOut)
	}
	return st
}

// waitResume polls a node's resumption counters (a round trip each) until
// cond holds, bounded.
func waitResume(t *testing.T, n *testenv.Node, what string, cond func(resumeStats) bool) {
	t.Helper()
	var st resumeStats
	for i := 0; i < 300; i++ { // 30 s
		if st = resumeStatsOf(t, n); cond(st) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s not reached: %+v", n.Name, what, st)
}

// waitOfflineCount polls `xmppctl get_offline_count` on n (a round trip
// each) until user@localhost has want stored messages there, bounded.
func waitOfflineCount(t *testing.T, n *testenv.Node, user string, want int) {
	t.Helper()
	var out string
	for i := 0; i < 300; i++ { // 30 s
		o, errOut, code := n.Ctl("get_offline_count", user, "localhost")
		if code != 0 {
			t.Fatalf("xmppctl get_offline_count on %s: %d %s %s", n.Name, code, o, errOut)
		}
		if out = strings.TrimSpace(o); out == fmt.Sprint(want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s's offline messages: %s, want %d", n.Name, user, out, want)
}

// smLogin logs user in on node n, binds res and enables resumable stream
// management; it returns the client and the resumption id.
func smLogin(t *testing.T, n *testenv.Node, user, res string) (*testenv.Raw, string) {
	t.Helper()
	c := testenv.DialTLS(t, n.Server)
	c.AuthPlain(n.Domain, user, "secret")
	c.Bind(res)
	c.Send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
	en := c.Expect("/>", 10*sec)
	id := testenv.Attr(en, "id")
	if !strings.Contains(en, "<enabled") || id == "" {
		t.Fatalf("enable on %s: %s", n.Name, en)
	}
	return c, id
}

// roundTrip orders a test by the server: every stanza c sent before has been
// handled once the ping's result is back.
func roundTrip(c *testenv.Raw, id string) {
	c.Send("<iq type='get' id='" + id + "'><ping xmlns='urn:xmpp:ping'/></iq>")
	c.Expect("id='"+id+"'", 10*sec)
}

func chat(to, id, body string) string {
	return fmt.Sprintf("<message to='%s' type='chat' id='%s'><body>%s</body></message>", to, id, body)
}

// resumeOn resumes session id on node n with h and returns what arrived up to
// the last expected body.
func resumeOn(t *testing.T, n *testenv.Node, user, id string, h int, last string) string {
	t.Helper()
	c := testenv.DialTLS(t, n.Server)
	c.AuthPlain(n.Domain, user, "secret")
	c.Send(fmt.Sprintf("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>", id, h))
	got := c.Expect("<body>"+last+"</body>", 20*sec)
	if !strings.Contains(got, "<resumed") {
		t.Fatalf("resume on %s: %s", n.Name, got)
	}
	resumeClients[got] = c
	return got
}

var resumeClients = map[string]*testenv.Raw{}

// waitSessionOn polls `xmppctl sessions --all-nodes` on n (bounded) until it
// lists full JID j on node.
func waitSessionOn(t *testing.T, n *testenv.Node, j, node string) {
	t.Helper()
	var out string
	for i := 0; i < 100; i++ { // 10 s
		out, _, _ = n.Ctl("--json", "sessions", "--all-nodes")
		var ss []struct{ JID, Node string }
		if json.Unmarshal([]byte(out), &ss) == nil {
			for _, s := range ss {
				if s.JID == j && s.Node == node {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s does not see %s on %s:\n%s", n.Name, j, node, out)
}

// bodiesIn returns the message bodies in s, in order.
func bodiesIn(s string) []string {
	var out []string
	for {
		i := strings.Index(s, "<body>")
		if i < 0 {
			return out
		}
		s = s[i+6:]
		j := strings.Index(s, "</body>")
		if j < 0 {
			return out
		}
		out = append(out, s[:j])
		s = s[j:]
	}
}

// A client whose TCP connection dropped resumes on another node while its
// node is alive (the node hands the session over); a drained node's client
// resumes elsewhere too; slixmpp resumes on another node by itself; an
// unknown previd fails with <item-not-found/>.
func TestClusterResumeOnAnotherNode(t *testing.T) {
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Args: []string{"--sm-timeout", "60s"}})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.Register(t, "alice", "secret", "bob", "secret", "carol", "secret", "erin", "secret")
	waitResume(t, n1, "two peers", func(s resumeStats) bool { return s.Peers == 2 })

	// 1. TCP drop on node1, resume on node3.
	alice := testenv.DialTLS(t, n1.Server)
	alice.LoginPlain(n1.Domain, "alice", "secret", "a")
	bob, id := smLogin(t, n1, "bob", "r")
	alice.Send(chat("bob@localhost/r", "m1", "one") + chat("bob@localhost/r", "m2", "two") + chat("bob@localhost/r", "m3", "three"))
	bob.Expect("<body>three</body>", 10*sec)
	bob.Send("<a xmlns='urn:xmpp:sm:3' h='2'/><r xmlns='urn:xmpp:sm:3'/>")
	bob.Expect("<a xmlns='urn:xmpp:sm:3' h='0'/>", 10*sec) // the ack of one and two is handled
	bob.Drop()
	alice.Send(chat("bob@localhost/r", "m4", "four") + chat("bob@localhost/r", "m5", "five"))
	roundTrip(alice, "p1")
	got := resumeOn(t, n3, "bob", id, 2, "five")
	if b := bodiesIn(got); strings.Join(b, ",") != "three,four,five" || testenv.Attr(got[strings.Index(got, "<resumed"):], "h") != "0" {
		t.Fatalf("resumed on node3 after a drop: bodies %v in %s", b, got)
	}
	bob3 := resumeClients[got]
	// The session lives on node3 now: once node1 sees it there, it routes there.
	waitSessionOn(t, n1, "bob@localhost/r", "node3")
	alice.Send(chat("bob@localhost/r", "m6", "six"))
	bob3.Expect("<body>six</body>", 10*sec)
	if out, _, _ := n1.Ctl("sessions"); strings.Contains(out, "bob@localhost/r") {
		t.Fatalf("node1 still lists the moved session:\n%s", out)
	}

	// 2. An unknown previd fails on any node.
	x := testenv.DialTLS(t, n2.Server)
	x.AuthPlain(n2.Domain, "bob", "secret")
	x.Send("<resume xmlns='urn:xmpp:sm:3' previd='0000-bm9kZTE' h='0'/>")
	if got := x.Expect("</failed>", 10*sec); !strings.Contains(got, "<item-not-found") {
		t.Fatalf("unknown previd: %s", got)
	}

	// 3. slixmpp loses its connection to node2 and resumes on node3 by itself.
	out := n2.RunPython(t, 60*sec, `
import asyncio, xmpptest as X
PORT3 = `+fmt.Sprint(n3.Port)+`
async def until(cond, t=15):
    for _ in range(int(t*20)):
        if cond(): return
        await asyncio.sleep(0.05)
    raise RuntimeError("timeout")
async def main():
    a = X.client(X.jid("alice", "s"), "secret", plugins=["xep_0199"])
    c = X.client(X.jid("carol", "s"), "secret", plugins=["xep_0198"])
    msgs = []
    c.add_event_handler("message", lambda m: msgs.append(m["body"]))
    en = X.event(c, "sm_enabled")
    await X.start(a); await X.start(c)
    await asyncio.wait_for(en, 15)
    a.send_message(mto=X.jid("carol", "s"), mbody="one", mtype="chat")
    await until(lambda: "one" in msgs)
    gone = X.event(c, "disconnected")
    c.transport.abort()
    await asyncio.wait_for(gone, 10)
    a.send_message(mto=X.jid("carol", "s"), mbody="two", mtype="chat")
    await a["xep_0199"].ping(jid=X.DOMAIN, timeout=10)  # "two" is queued for carol on node2
    resumed = X.event(c, "session_resumed")
    c.connect((X.HOST, PORT3))
    await asyncio.wait_for(resumed, 20)
    await until(lambda: "two" in msgs)
    print("RESUMED", c.boundjid.full, msgs)
    await X.stop(a); await X.stop(c)
X.run(main)
`)
	if !strings.Contains(out, "RESUMED carol@localhost/s ['one', 'two']") {
		t.Fatalf("slixmpp resumption on another node:\n%s", out)
	}

	// 4. Drain node1: its resumable client is sent away and resumes on node2
	// with the stanza it had not acknowledged.
	alice2 := testenv.DialTLS(t, n2.Server)
	alice2.LoginPlain(n2.Domain, "alice", "secret", "a2")
	dave, did := smLogin(t, n1, "carol", "d")
	erin, eid := smLogin(t, n1, "erin", "e")
	waitSessionOn(t, n2, "carol@localhost/d", "node1")
	waitSessionOn(t, n2, "erin@localhost/e", "node1")
	alice2.Send(chat("carol@localhost/d", "d1", "before-drain") + chat("erin@localhost/e", "e1", "for-erin"))
	dave.Expect("<body>before-drain</body>", 10*sec)
	erin.Expect("<body>for-erin</body>", 10*sec)
	if out, errOut, code := n1.Ctl("cluster", "drain"); code != 0 {
		t.Fatalf("drain: %s %s", out, errOut)
	}
	if got := dave.Expect("</stream:stream>", 10*sec); !strings.Contains(got, "see-other-host") && !strings.Contains(got, "system-shutdown") {
		t.Fatalf("drained client: %s", got)
	}
	got = resumeOn(t, n2, "carol", did, 0, "before-drain")
	if b := bodiesIn(got); strings.Join(b, ",") != "before-drain" {
		t.Fatalf("resumed on node2 after drain: %v in %s", b, got)
	}
	dave2 := resumeClients[got]
	waitSessionOn(t, n2, "carol@localhost/d", "node2")
	alice2.Send(chat("carol@localhost/d", "d2", "after-drain"))
	dave2.Expect("<body>after-drain</body>", 10*sec)

	// 5. The drained node stops (SIGTERM): it leaves erin's session to its peers,
	// and erin resumes on node3 with her unacknowledged message.
	n1.Stop()
	got = resumeOn(t, n3, "erin", eid, 0, "for-erin")
	if b := bodiesIn(got); strings.Join(b, ",") != "for-erin" {
		t.Fatalf("resumed on node3 after node1 stopped: %v in %s", b, got)
	}
}

// The node holding a session is killed (SIGKILL): the client resumes on
// another node within sm-timeout and receives every stanza it had not
// acknowledged — counted and compared — including those whose sender was
// told (XEP-0198 <a/>) the server had them just before the kill. A session of
// the killed node that nobody resumes expires on the survivors: its
// unacknowledged message goes to offline storage, and its previd fails.
func TestClusterResumeAfterKill(t *testing.T) {
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Args: []string{"--sm-timeout", "6s"}})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.Register(t, "alice", "secret", "bob", "secret", "carol", "secret")
	waitResume(t, n1, "two peers", func(s resumeStats) bool { return s.Peers == 2 })

	alice, _ := smLogin(t, n1, "alice", "a")
	bob, id := smLogin(t, n1, "bob", "r")
	carol, cid := smLogin(t, n1, "carol", "c")
	const total = 30
	var want []string
	for i := 1; i <= total; i++ {
		alice.Send(chat("bob@localhost/r", fmt.Sprint("m", i), fmt.Sprint("msg-", i)))
		want = append(want, fmt.Sprint("msg-", i))
	}
	bob.Expect(fmt.Sprintf("<body>msg-%d</body>", total), 10*sec)
	// bob acknowledges the first 10; the rest stay unacknowledged.
	bob.Send("<a xmlns='urn:xmpp:sm:3' h='10'/><r xmlns='urn:xmpp:sm:3'/>")
	bob.Expect("<a xmlns='urn:xmpp:sm:3' h='0'/>", 10*sec)
	alice.Send(chat("carol@localhost/c", "c1", "for-carol"))
	carol.Expect("<body>for-carol</body>", 10*sec)
	// alice is told the server has all 31 messages: from then on none may be lost.
	alice.Send("<r xmlns='urn:xmpp:sm:3'/>")
	alice.Expect(fmt.Sprintf("<a xmlns='urn:xmpp:sm:3' h='%d'/>", total+1), 10*sec)
	n1.Kill()

	got := resumeOn(t, n2, "bob", id, 10, fmt.Sprint("msg-", total))
	b := bodiesIn(got)
	if strings.Join(b, ",") != strings.Join(want[10:], ",") {
		t.Fatalf("resumed after SIGKILL: %d bodies %v, want %v\n%s", len(b), b, want[10:], got)
	}
	bob2 := resumeClients[got]
	bob2.Send("<a xmlns='urn:xmpp:sm:3' h='" + fmt.Sprint(total) + "'/>")
	waitSessionOn(t, n3, "bob@localhost/r", "node2")
	// The resumed session is reachable from the other survivor.
	alice3 := testenv.DialTLS(t, n3.Server)
	alice3.LoginPlain(n3.Domain, "alice", "secret", "a3")
	alice3.Send(chat("bob@localhost/r", "after", "after-kill"))
	bob2.Expect("<body>after-kill</body>", 10*sec)

	// carol never resumes: once sm-timeout passes, the copies are gone, her
	// previd fails, and her unacknowledged message waits in offline storage.
	waitResume(t, n2, "carol's copy expired", func(s resumeStats) bool { return s.Orphans == 0 })
	waitResume(t, n3, "carol's copy expired", func(s resumeStats) bool { return s.Orphans == 0 })
	// The copy leaves the counters before the responsible survivor has
	// rerouted its queue (a raft write, applied on n3 a round later): carol
	// logs in once n3 holds her offline message.
	waitOfflineCount(t, n3, "carol", 1)
	c3 := testenv.DialTLS(t, n3.Server)
	c3.AuthPlain(n3.Domain, "carol", "secret")
	c3.Send("<resume xmlns='urn:xmpp:sm:3' previd='" + cid + "' h='0'/>")
	if got := c3.Expect("</failed>", 10*sec); !strings.Contains(got, "<item-not-found") {
		t.Fatalf("expired previd: %s", got)
	}
	c3.Send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>c2</resource></bind></iq><presence/>")
	if got := c3.Expect("<body>for-carol</body>", 10*sec); strings.Count(got, "for-carol") != 1 {
		t.Fatalf("offline copy: %s", got)
	}
}

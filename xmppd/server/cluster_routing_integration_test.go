//go:build integration

package server_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// routingLib is the Python helper shared by the cluster routing scripts: clients
// connect to a given node's port and collect every event in a queue.
const routingLib = `
import asyncio, sys, time, os, xmpptest as X
from slixmpp.xmlstream import ET

class C:
    def __init__(self, user, res, port, plugins=()):
        self.c = X.client(X.jid(user, res), 'secret', plugins=list(plugins))
        self.port = int(port)
        self.q = asyncio.Queue()
        self.seen = []
        c = self.c
        c.auto_authorize = True
        c.auto_subscribe = True
        for ev in ('message', 'presence_available', 'presence_unavailable', 'presence_subscribe',
                   'presence_subscribed', 'roster_update', 'carbon_received', 'carbon_sent', 'stream_error',
                   'disconnected'):
            c.add_event_handler(ev, (lambda ev: lambda d=None: self.q.put_nowait((ev, d)))(ev))

    async def start(self, presence=True, priority=None, roster=True):
        f = X.future()
        def ok(_):
            if not f.done(): f.set_result(True)
        def fail(_=None):
            if not f.done(): f.set_exception(RuntimeError('login failed for %s' % self.c.boundjid))
        self.c.add_event_handler('session_start', ok)
        self.c.add_event_handler('failed_all_auth', fail)
        self.c.add_event_handler('connection_failed', fail)
        self.c.connect((X.HOST, self.port))
        await asyncio.wait_for(f, 20)
        if roster:
            await self.c.get_roster()
        if presence:
            if priority is None:
                self.c.send_presence()
            else:
                self.c.send_presence(ppriority=priority)
        return self

    async def expect(self, pred, what, timeout=10):
        end = time.time() + timeout
        for i, e in enumerate(self.seen):
            if pred(*e):
                del self.seen[i]
                return e
        while True:
            left = end - time.time()
            if left <= 0:
                raise RuntimeError('%s: timed out waiting for %s; unmatched: %s' % (self.c.boundjid, what, [(k, str(d)[:200]) for k, d in self.seen]))
            try:
                e = await asyncio.wait_for(self.q.get(), left)
            except asyncio.TimeoutError:
                continue
            if pred(*e):
                return e
            self.seen.append(e)

    async def none(self, pred, what, wait=1.0):
        end = time.time() + wait
        while time.time() < end:
            try:
                e = await asyncio.wait_for(self.q.get(), end - time.time())
            except asyncio.TimeoutError:
                break
            self.seen.append(e)
        for e in self.seen:
            if pred(*e):
                raise RuntimeError('%s: unexpected %s: %s' % (self.c.boundjid, what, str(e[1])[:300]))

def body(b):
    return lambda k, d: k == 'message' and d['body'] == b

def pres(kind, frm):
    return lambda k, d: k == kind and str(d['from']) == frm

def ok(step):
    print('OK', step, flush=True)
`

// routingScript exercises routing between users on different nodes.
// argv: port1 port2 port3.
const routingScript = routingLib + `
p1, p2, p3 = sys.argv[1:4]

async def main():
    a1 = await C('alice', 'a1', p1, ['xep_0199', 'xep_0280']).start()
    b2 = await C('bob', 'b2', p2, ['xep_0199']).start(priority=5)
    b3 = await C('bob', 'b3', p3, ['xep_0199']).start(priority=1)
    c3 = await C('carol', 'c3', p3).start()
    await asyncio.sleep(0.5)

    # Subscription handshake across nodes: bob's clients (auto-authorize) answer.
    a1.c.send_presence(pto='bob@localhost', ptype='subscribe')
    await b2.expect(lambda k, d: k == 'presence_subscribe' and str(d['from']) == 'alice@localhost', 'subscribe at bob/b2 (node2)')
    await a1.expect(lambda k, d: k == 'presence_subscribed' and str(d['from']).startswith('bob@localhost'), 'subscribed from bob')
    ok('subscription-handshake')
    await a1.expect(lambda k, d: k == 'roster_update' and 'bob@localhost' in str(d) and ("subscription=\"to\"" in str(d) or "subscription=\"both\"" in str(d)), 'roster push for bob')
    ok('roster-push')
    await a1.expect(pres('presence_available', 'bob@localhost/b2'), 'presence of bob/b2 (node2)')
    await a1.expect(pres('presence_available', 'bob@localhost/b3'), 'presence of bob/b3 (node3)')
    ok('presence-broadcast')
    await asyncio.sleep(0.5)

    # RFC 6121 8.5.2.1.1: bare JID to the highest priority, across nodes.
    a1.c.send_message(mto='bob@localhost', mbody='m1', mtype='chat')
    await b2.expect(body('m1'), 'm1 at bob/b2 (priority 5, node2)')
    await b3.none(body('m1'), 'm1 at the lower priority bob/b3', 1.0)
    ok('bare-priority')
    b3.c.send_presence(ppriority=10)
    await a1.expect(lambda k, d: k == 'presence_available' and str(d['from']) == 'bob@localhost/b3' and d['priority'] == 10, 'priority 10 of bob/b3')
    await asyncio.sleep(0.5)
    a1.c.send_message(mto='bob@localhost', mbody='m2', mtype='chat')
    await b3.expect(body('m2'), 'm2 at bob/b3 (priority 10, node3)')
    await b2.none(body('m2'), 'm2 at bob/b2', 1.0)
    ok('bare-priority-change')
    a1.c.send_message(mto='bob@localhost/b2', mbody='m3', mtype='chat')
    await b2.expect(body('m3'), 'm3 at bob/b2 by full JID')
    ok('full-jid')

    # IQ to a full JID on another node, answered by the client there.
    await a1.c.plugin['xep_0199'].send_ping('bob@localhost/b3', timeout=10)
    await b2.c.plugin['xep_0199'].send_ping('alice@localhost/a1', timeout=10)
    ok('iq-full-jid')

    # Directed presence to a non-contact on another node.
    a1.c.send_presence(pto='carol@localhost/c3')
    await c3.expect(pres('presence_available', 'alice@localhost/a1'), 'directed presence from alice at carol (node3)')
    ok('directed-presence')

    # A new resource of alice on node3 probes her contacts: bob's two resources answer.
    a3 = C('alice', 'a3', p3, ['xep_0280'])
    await a3.start()
    await a3.expect(pres('presence_available', 'bob@localhost/b2'), 'probe answer of bob/b2 at alice/a3')
    await a3.expect(pres('presence_available', 'bob@localhost/b3'), 'probe answer of bob/b3 at alice/a3')
    await a3.expect(pres('presence_available', 'alice@localhost/a1'), 'alice/a1 presence at alice/a3')
    ok('probe')

    # Carbons: alice/a3 (node3) gets copies of what alice/a1 (node1) sends and receives.
    await a3.c.plugin['xep_0280'].enable()
    await asyncio.sleep(0.5)
    a1.c.send_message(mto='bob@localhost/b2', mbody='m4', mtype='chat')
    await b2.expect(body('m4'), 'm4 at bob/b2')
    await a3.expect(lambda k, d: k == 'carbon_sent' and 'm4' in str(d), 'sent carbon of m4 at alice/a3')
    b2.c.send_message(mto='alice@localhost/a1', mbody='m5', mtype='chat')
    await a1.expect(body('m5'), 'm5 at alice/a1')
    await a3.expect(lambda k, d: k == 'carbon_received' and 'm5' in str(d), 'received carbon of m5 at alice/a3')
    ok('carbons')

    # Offline: dave has no session; he logs in on node2 later.
    a1.c.send_message(mto='dave@localhost', mbody='m6', mtype='chat')
    await asyncio.sleep(0.5)
    d2 = await C('dave', 'd2', p2).start()
    await d2.expect(body('m6'), 'offline m6 at dave (node2)')
    ok('offline')

    # A subscription request and a message sent the moment their contact
    # comes up on another node: node1 may not see eve's session yet and store
    # them (pending request, offline message), and node2 may apply those
    # writes just after eve's initial presence looked for them (it looks again
    # a second later). No wait in between; each arrives once.
    for i in range(4):
        e = await C('eve%d' % i, 'e', p2).start()
        a1.c.send_presence(pto='eve%d@localhost' % i, ptype='subscribe')
        a1.c.send_message(mto='eve%d@localhost' % i, mbody='hello-eve%d' % i, mtype='chat')
        await e.expect(lambda k, d: k == 'presence_subscribe' and str(d['from']) == 'alice@localhost', 'subscribe at eve%d (node2) sent as she came up' % i, 5)
        await e.expect(body('hello-eve%d' % i), 'message to eve%d (node2) sent as she came up' % i, 5)
        await e.none(lambda k, d: (k == 'presence_subscribe' and str(d['from']) == 'alice@localhost') or (k == 'message' and d['body'] == 'hello-eve%d' % i), 'a second request or message at eve%d' % i, 1.5)
        await X.stop(e.c)
    ok('subscribe-as-contact-comes-up')

    # Unavailable presence across nodes on logout.
    await X.stop(b3.c)
    await a1.expect(pres('presence_unavailable', 'bob@localhost/b3'), 'unavailable of bob/b3 at alice/a1')
    ok('unavailable-logout')
    for c in (a1, b2, c3, a3, d2):
        await X.stop(c.c)

X.run(main, 120)
`

// Messages, presence (subscription handshake, broadcast, probes, directed,
// unavailable), roster pushes, IQs to full JIDs, carbons and offline delivery
// between slixmpp clients on three different xmppd nodes of one cluster.
func TestClusterRoutingAcrossNodes(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 3})
	nodes[0].Register(t, "alice", "secret", "bob", "secret", "carol", "secret", "dave", "secret",
		"eve0", "secret", "eve1", "secret", "eve2", "secret", "eve3", "secret")
	waitCtl(t, nodes[2], "alice\nbob\ncarol\ndave\neve0\neve1\neve2\neve3\n", "users")
	out := nodes[0].RunPython(t, 150*time.Second, routingScript, ports(nodes)...)
	for _, step := range []string{"subscription-handshake", "roster-push", "presence-broadcast", "bare-priority",
		"bare-priority-change", "full-jid", "iq-full-jid", "directed-presence", "probe", "carbons", "offline",
		"subscribe-as-contact-comes-up", "unavailable-logout"} {
		if !strings.Contains(out, "OK "+step+"\n") {
			t.Errorf("step %s not passed:\n%s", step, out)
		}
	}
	// xmppctl sessions --all-nodes and cluster members see all three nodes.
	o, e, code := nodes[1].Ctl("cluster", "members")
	if code != 0 {
		t.Fatalf("cluster members: %d %s", code, e)
	}
	for _, want := range []string{"node1", "node2", "node3", "up", "voter/durable", "/leader", "self", "connected"} {
		if !strings.Contains(o, want) {
			t.Errorf("cluster members lacks %q:\n%s", want, o)
		}
	}
	t.Logf("xmppctl cluster members on node2:\n%s", o)
}

func ports(nodes []*testenv.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, strconv.Itoa(n.Port))
	}
	return out
}

// nodeLossScript: carol (node2) and alice (node1) are mutual contacts; once set
// up the script writes the ready file and counts carol's unavailable presences at
// alice for 4 s after the go file appears. argv: port1 port2 ready go.
const nodeLossScript = routingLib + `
from slixmpp.exceptions import IqError
p1, p2, ready, go = sys.argv[1:5]

async def main():
    a1 = await C('alice', 'loss', p1).start()
    c2 = await C('carol', 'loss', p2).start()
    # Subscribe only once alice's node routes to carol's session: her session
    # row reaches node1 asynchronously, and a subscription request for a user
    # it sees offline is stored until her next login (RFC 6121 3.1.3), which
    # this script never does. An IQ to carol's full JID is answered with
    # service-unavailable by the server while it does not know her session,
    # by her client (feature-not-implemented) once it does.
    for attempt in range(200):
        try:
            await a1.c.make_iq_get(queryxmlns='urn:xmpp:ping', ito='carol@localhost/loss').send(timeout=5)
            break
        except IqError as e:
            if e.iq['error']['condition'] != 'service-unavailable':
                break
        await asyncio.sleep(0.02)
    else:
        raise RuntimeError('node1 never routed to carol@localhost/loss')
    a1.c.send_presence(pto='carol@localhost', ptype='subscribe')
    await a1.expect(pres('presence_available', 'carol@localhost/loss'), 'carol available at alice')
    await c2.expect(pres('presence_available', 'alice@localhost/loss'), 'alice available at carol')
    await asyncio.sleep(0.5)
    open(ready, 'w').close()
    while not os.path.exists(go):
        await asyncio.sleep(0.01)
    # Sent while node2 is frozen or just killed: it must come back offline.
    a1.c.send_message(mto='carol@localhost/loss', mbody='in-flight', mtype='chat')
    end = time.time() + 4
    n = 0
    while time.time() < end:
        try:
            k, d = await asyncio.wait_for(a1.q.get(), end - time.time())
        except asyncio.TimeoutError:
            break
        if k == 'presence_unavailable' and str(d['from']) == 'carol@localhost/loss':
            n += 1
            print('UNAVAILABLE', repr(time.time()), flush=True)
        if k == 'message' and d['type'] == 'error':
            print('BOUNCE', d['body'], flush=True)
    print('UNAVAILABLE-COUNT', n, flush=True)
    await X.stop(a1.c)

X.run(main, 90)
`

// SIGKILL of a node: every survivor drops its sessions, and alice (node1), a
// contact of carol (node2), receives carol's unavailable presence exactly once
// within 2 s. A message sent to carol while node2 is frozen (sent on the bus,
// never acknowledged) and then killed is stored offline, not lost: carol gets
// it when she logs in on node3. The cluster then also refuses a node with the
// wrong key, logging one line that names its address.
func TestClusterNodeLoss(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 3})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	nodeLoss(t, n1, n2, n3)
	// cluster members shows node2 down; forget removes it.
	o, _, _ := n1.Ctl("cluster", "members")
	if !strings.Contains(o, "node2") || !strings.Contains(o, "down") {
		t.Errorf("cluster members after the kill:\n%s", o)
	}
	t.Logf("xmppctl cluster members on node1 after the kill:\n%s", o)
	if o, e, code := n1.Ctl("cluster", "forget", "node2"); code != 0 {
		t.Errorf("cluster forget node2: %d %s %s", code, o, e)
	}
	for end := time.Now().Add(10 * time.Second); ; {
		o, _, _ = n1.Ctl("cluster", "members")
		if !strings.Contains(o, "node2") {
			break
		}
		if time.Now().After(end) {
			t.Errorf("node2 still a member after forget:\n%s", o)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A node with another key is refused; node1 logs one line naming it.
	wrongKey := testenv.WriteClusterKey(t)
	addr := testenv.FreeAddr(t, "127.0.0.1")
	bad := testenv.Start(t, testenv.Options{NoTLSListener: true, AllowExit: true,
		Args: append(testenv.ClusterNodeArgs("intruder", addr, wrongKey, fmt.Sprintf("file:%s/bad.img?size=%d", t.TempDir(), 64<<20), n1.ClusterAddr),
			"--join-timeout", "3s")})
	if code := bad.ExitCode(20 * time.Second); code == 0 {
		t.Errorf("a node with the wrong key joined (exit %d)", code)
	}
	lines := 0
	for _, l := range strings.Split(n1.Logs(), "\n") {
		// The refusing side's line (not a dialer's view of a dead peer).
		if strings.Contains(l, "refused cluster connection") && strings.Contains(l, "wrong cluster key") && strings.Contains(l, "127.0.0.1:") {
			lines++
		}
	}
	if lines != 1 {
		t.Errorf("node1 logged %d lines about the wrong cluster key, want 1:\n%s", lines, n1.Logs())
	}
	if !strings.Contains(bad.Logs(), "wrong cluster key") {
		t.Errorf("the refused node does not say why:\n%s", bad.Logs())
	}
}

// conflictScript: bob/same logs in on node1, then on node3: the older session
// (node1) gets a <conflict/> stream error. argv: port1 port3.
const conflictScript = routingLib + `
p1, p3 = sys.argv[1:3]

async def main():
    old = await C('bob', 'same', p1).start()
    await asyncio.sleep(0.5)
    new = await C('bob', 'same', p3).start()
    await old.expect(lambda k, d: k == 'stream_error' and 'conflict' in str(d), 'conflict stream error at the older session (node1)', 10)
    ok('conflict-older-closed')
    await new.none(lambda k, d: k in ('stream_error', 'disconnected'), 'the newer session closed', 2.0)
    ok('newer-kept')
    await X.stop(new.c)

X.run(main, 60)
`

// A resource bound on node3 replaces the same full JID bound earlier on node1
// (decided by the cluster-wide bind order): the older session is closed with
// <conflict/>, the newer one stays.
func TestClusterResourceConflict(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 3})
	nodes[0].Register(t, "bob", "secret")
	waitCtl(t, nodes[2], "bob\n", "users")
	out := nodes[0].RunPython(t, 60*time.Second, conflictScript, strconv.Itoa(nodes[0].Port), strconv.Itoa(nodes[2].Port))
	for _, step := range []string{"conflict-older-closed", "newer-kept"} {
		if !strings.Contains(out, "OK "+step+"\n") {
			t.Errorf("step %s not passed:\n%s", step, out)
		}
	}
}

// drainScript: alice on node1 is moved away by a drain; a new login on node1
// is refused while it drains; node2 takes her; after undrain node1 takes
// clients again. argv: port1 port2 dir (ready1, go1, ready2, go2 files).
const drainScript = routingLib + `
p1, p2, d = sys.argv[1:4]

async def wait_file(n):
    while not os.path.exists(os.path.join(d, n)):
        await asyncio.sleep(0.02)

async def main():
    a1 = await C('alice', 'd1', p1).start()
    open(os.path.join(d, 'ready1'), 'w').close()
    await a1.expect(lambda k, d: k == 'stream_error' and ('system-shutdown' in str(d) or 'see-other-host' in str(d)), 'drain stream error at alice on node1', 10)
    ok('drained-away')
    again = C('alice', 'd1b', p1)
    again.c.connect((X.HOST, again.port))
    await again.expect(lambda k, d: k in ('stream_error', 'disconnected'), 'refusal on the draining node', 10)
    again.c.disconnect()
    ok('refused-while-draining')
    a2 = await C('alice', 'd2', p2).start()
    ok('moved-to-node2')
    open(os.path.join(d, 'ready2'), 'w').close()
    await wait_file('go2')
    a3 = await C('alice', 'd3', p1).start()
    await a3.none(lambda k, d: k in ('stream_error', 'disconnected'), 'close after undrain', 1.5)
    ok('undrained')
    await X.stop(a2.c)
    await X.stop(a3.c)

X.run(main, 60)
`

// xmppctl cluster drain closes node1's client streams and sends new clients
// away; cluster members shows it draining; undrain takes clients again.
func TestClusterDrain(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 3})
	n1, n2 := nodes[0], nodes[1]
	n1.Register(t, "alice", "secret")
	waitCtl(t, n2, "alice\n", "users")
	dir := t.TempDir()
	done := make(chan testenv.PythonResult, 1)
	go func() {
		done <- n1.Python(60*time.Second, drainScript, strconv.Itoa(n1.Port), strconv.Itoa(n2.Port), dir)
	}()
	waitFile := func(name string) {
		deadline := time.Now().Add(40 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return
			}
			select {
			case r := <-done:
				t.Fatalf("script ended early: %v\n%s\n--- node1 ---\n%s", r.Err, r.Output, n1.Logs())
			default:
			}
			if time.Now().After(deadline) {
				r := <-done
				t.Fatalf("script did not reach %s: %v\n%s\n--- node1 ---\n%s", name, r.Err, r.Output, n1.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFile("ready1")
	o, e, code := n1.Ctl("cluster", "drain")
	if code != 0 || !strings.Contains(o, "draining") || !strings.Contains(o, "1 session") {
		t.Fatalf("cluster drain: %d %q %s", code, o, e)
	}
	t.Logf("xmppctl cluster drain: %s", strings.TrimSpace(o))
	waitFile("ready2")
	o, _, _ = n2.Ctl("cluster", "members")
	if !strings.Contains(o, "draining") {
		t.Errorf("cluster members on node2 does not show node1 draining:\n%s", o)
	}
	// undrain takes effect before xmppctl returns (c2s accepts again at once).
	if o, e, code := n1.Ctl("cluster", "undrain"); code != 0 {
		t.Fatalf("cluster undrain: %d %s %s", code, o, e)
	}
	os.WriteFile(filepath.Join(dir, "go2"), nil, 0o600)
	r := <-done
	if r.Err != nil {
		t.Fatalf("script: %v\n%s\n--- node1 ---\n%s", r.Err, r.Output, n1.Logs())
	}
	for _, step := range []string{"drained-away", "refused-while-draining", "moved-to-node2", "undrained"} {
		if !strings.Contains(r.Output, "OK "+step+"\n") {
			t.Errorf("step %s not passed:\n%s", step, r.Output)
		}
	}

	// cluster leave on node3: it leaves the configuration and stops.
	n3 := nodes[2]
	if o, e, code := n3.Ctl("cluster", "leave"); code != 0 || !strings.Contains(o, "left the cluster") {
		t.Fatalf("cluster leave: %d %q %s", code, o, e)
	}
	if code := n3.ExitCode(20 * time.Second); code != 0 {
		t.Errorf("node3 after cluster leave: exit %d\n%s", code, n3.Logs())
	}
	for end := time.Now().Add(10 * time.Second); ; {
		o, _, _ := n1.Ctl("cluster", "members")
		if !strings.Contains(o, "node3") {
			t.Logf("cluster members after node3 left:\n%s", o)
			break
		}
		if time.Now().After(end) {
			t.Errorf("node3 still listed after it left:\n%s", o)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nodeLoss runs nodeLossScript with alice on watcher and carol on victim,
// freezes and kills victim, and checks that alice gets carol's unavailable
// exactly once within 2 s of the kill, that watcher re-routed the message it
// had sent to the frozen node, and that carol gets it offline on other.
func nodeLoss(t *testing.T, watcher, victim, other *testenv.Node) {
	t.Helper()
	watcher.Register(t, "alice", "secret", "carol", "secret")
	waitCtl(t, other, "alice\ncarol\n", "users")
	waitCtl(t, victim, "alice\ncarol\n", "users")
	dir := t.TempDir()
	ready, gofile := filepath.Join(dir, "ready"), filepath.Join(dir, "go")
	done := make(chan testenv.PythonResult, 1)
	go func() {
		done <- watcher.Python(80*time.Second, nodeLossScript, strconv.Itoa(watcher.Port), strconv.Itoa(victim.Port), ready, gofile)
	}()
	waitScriptReady(t, ready, done, 60*time.Second, "script not ready")
	// Every node lists both sessions with their nodes.
	o, e, code := other.Ctl("sessions", "--all-nodes")
	if code != 0 || !strings.Contains(o, watcher.Name) || !strings.Contains(o, "alice@localhost/loss") ||
		!strings.Contains(o, victim.Name) || !strings.Contains(o, "carol@localhost/loss") {
		t.Errorf("sessions --all-nodes on %s (%d %s):\n%s", other.Name, code, e, o)
	}
	t.Logf("xmppctl sessions --all-nodes on %s:\n%s", other.Name, o)
	// cluster members (mnesia:info() habits): every node up, with its address,
	// incarnation, session count and storage role.
	o, e, code = other.Ctl("--json", "cluster", "members")
	var members []struct {
		Node, Addr, State, Incarnation, Storage string
		Sessions                                int
	}
	if err := json.Unmarshal([]byte(o), &members); code != 0 || err != nil || len(members) != 3 {
		t.Errorf("cluster members on %s: %d %v %s\n%s", other.Name, code, err, e, o)
	}
	for _, m := range members {
		var n *testenv.Node
		for _, c := range []*testenv.Node{watcher, victim, other} {
			if c.Name == m.Node {
				n = c
			}
		}
		wantSessions := 1
		if n == other {
			wantSessions = 0
		}
		if n == nil || m.State != "up" || m.Addr != n.ClusterAddr || m.Incarnation == "" || m.Sessions != wantSessions ||
			!strings.HasPrefix(m.Storage, "voter/durable") {
			t.Errorf("cluster members on %s: row %+v (want up, address, incarnation, %d session(s), voter/durable)", other.Name, m, wantSessions)
		}
	}
	// Both survivors hold the victim's session row before the kill.
	for _, n := range []*testenv.Node{watcher, other} {
		if nodes, err := sessionNodes(n); err != nil || !nodes[victim.Name] || !nodes[watcher.Name] {
			t.Fatalf("session rows on %s before the kill: %v %v", n.Name, nodes, err)
		}
	}
	// Freeze the victim: the bus to it stays connected, nothing is acknowledged.
	if err := syscall.Kill(victim.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(gofile, nil, 0o600)
	time.Sleep(150 * time.Millisecond) // the message is on the bus to the victim
	killed := time.Now()
	victim.Kill()
	syscall.Kill(victim.PID(), syscall.SIGCONT)
	// Every survivor drops the dead node's session rows within 2 s of the kill.
	dropped := make(chan string, 2)
	for _, n := range []*testenv.Node{watcher, other} {
		go func() {
			d, err := rowsDropped(n, victim.Name, killed)
			switch {
			case err != nil:
				dropped <- err.Error()
			case d > 2*time.Second:
				dropped <- fmt.Sprintf("%s dropped %s's session rows %v after the kill (want <= 2s)", n.Name, victim.Name, d.Round(time.Millisecond))
			default:
				t.Logf("kill of %s to its session rows gone on %s: <= %v", victim.Name, n.Name, d.Round(time.Millisecond))
				dropped <- ""
			}
		}()
	}
	r := <-done
	for range 2 {
		if msg := <-dropped; msg != "" {
			t.Error(msg)
		}
	}
	if r.Err != nil {
		t.Fatalf("script: %v\n%s\n--- %s ---\n%s", r.Err, r.Output, watcher.Name, watcher.Logs())
	}
	if !strings.Contains(r.Output, "UNAVAILABLE-COUNT 1\n") {
		t.Fatalf("want carol's unavailable exactly once:\n%s\n--- %s ---\n%s\n--- %s ---\n%s", r.Output, watcher.Name, watcher.Logs(), other.Name, other.Logs())
	}
	for _, l := range strings.Split(r.Output, "\n") {
		if ts, ok := strings.CutPrefix(l, "UNAVAILABLE "); ok {
			f, _ := strconv.ParseFloat(ts, 64)
			d := time.Unix(0, int64(f*1e9)).Sub(killed)
			t.Logf("kill of %s to unavailable at %s: %v", victim.Name, watcher.Name, d.Round(time.Millisecond))
			if d > 2*time.Second {
				t.Errorf("unavailable %v after the kill (want <= 2s)", d)
			}
		}
	}
	if !strings.Contains(watcher.Logs(), "not acknowledged by the node of its session") {
		t.Errorf("%s did not re-route the unacknowledged stanza:\n%s", watcher.Name, watcher.Logs())
	}
	// The in-flight message was stored offline: carol gets it on the third node.
	out := client(t, other, "recv", "carol")
	wantOut(t, out, "RECEIVED in-flight", "in-flight message stored offline")
}

// sessionNodes is the set of nodes owning a session row on n (`xmppctl --json
// sessions --all-nodes`: the rows n holds, its own and its peers').
func sessionNodes(n *testenv.Node) (map[string]bool, error) {
	o, e, code := n.Ctl("--json", "sessions", "--all-nodes")
	var rows []struct{ JID, Node string }
	if err := json.Unmarshal([]byte(o), &rows); code != 0 || err != nil {
		return nil, fmt.Errorf("sessions --all-nodes on %s: exit %d, %v %s\n%s", n.Name, code, err, e, o)
	}
	nodes := map[string]bool{}
	for _, r := range rows {
		nodes[r.Node] = true
	}
	return nodes, nil
}

// rowsDropped polls sessionNodes(n) until it has no row of node dead, and
// returns how long after since it saw that (an upper bound: it includes the
// xmppctl round trip); it gives up 10 s after since.
func rowsDropped(n *testenv.Node, dead string, since time.Time) (time.Duration, error) {
	for end := since.Add(10 * time.Second); ; {
		nodes, err := sessionNodes(n)
		if err == nil && !nodes[dead] {
			return time.Since(since), nil
		}
		if time.Now().After(end) {
			return 0, fmt.Errorf("%s still lists %s's sessions 10 s after the kill (%v): %v", n.Name, dead, err, nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The same when the killed node is the raft leader and the node with the
// smallest name (the one that would be responsible for others' cleanup):
// the survivors still send carol's unavailable exactly once.
func TestClusterLeaderLoss(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 3})
	if st, err := nodes[0].StorageStatus(); err != nil || st.Leader != "node1" {
		t.Logf("node1 is not the leader (%+v %v); the test still kills the smallest name", st, err)
	}
	nodeLoss(t, nodes[1], nodes[0], nodes[2])
}

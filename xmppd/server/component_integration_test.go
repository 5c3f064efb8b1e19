//go:build integration

package server_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// componentScript: a slixmpp ComponentXMPP (gw.localhost) on node1's component
// port and bob, a slixmpp client on node2, exchange messages and IQs both ways;
// then a second connection for gw.localhost gets <conflict/> and one with a wrong
// secret <not-authorized/>, and a connection for it to node2 <conflict/> too.
// argv: component-port port2 component-port2.
const componentScript = routingLib + `
from slixmpp import ComponentXMPP
pc, p2, pc2 = sys.argv[1:4]

class Comp(ComponentXMPP):
    def __init__(self, secret, port=pc):
        super().__init__('gw.localhost', secret, X.HOST, int(port))
        self.register_plugin('xep_0030')
        self.register_plugin('xep_0199')
        self.q = asyncio.Queue()
        for ev in ('session_start', 'stream_error', 'disconnected'):
            self.add_event_handler(ev, (lambda ev: lambda d=None: self.q.put_nowait((ev, d)))(ev))
        self.add_event_handler('message', self.echo)

    def echo(self, m):
        if m['type'] != 'error':
            m.reply('echo: ' + m['body']).send()

    async def wait(self, kind, timeout=10):
        end = time.time() + timeout
        while True:
            k, d = await asyncio.wait_for(self.q.get(), max(0.01, end - time.time()))
            if k == kind:
                return d

async def main():
    comp = Comp('s3cret')
    comp.connect()
    await comp.wait('session_start')
    ok('component-connected')
    b2 = await C('bob', 'b2', p2, ['xep_0030', 'xep_0199']).start()

    b2.c.send_message(mto='echo@gw.localhost', mbody='hello', mtype='chat')
    await b2.expect(body('echo: hello'), 'echo from the component on node1')
    ok('message-user-to-component')

    info = await b2.c['xep_0030'].get_info(jid='gw.localhost', timeout=10)
    assert info['type'] == 'result', info
    ok('iq-user-to-component')

    comp.send_message(mto='bob@localhost', mfrom='bot@gw.localhost', mbody='from the component', mtype='chat')
    await b2.expect(body('from the component'), 'message from the component')
    ok('message-component-to-user')

    await comp['xep_0199'].send_ping(jid=b2.c.boundjid, ifrom='gw.localhost', timeout=10)
    ok('iq-component-to-user')

    dup = Comp('s3cret')
    dup.connect()
    e = await dup.wait('stream_error')
    assert e['condition'] == 'conflict', e
    ok('conflict')
    other = Comp('s3cret', pc2)
    other.connect()
    e = await other.wait('stream_error')
    assert e['condition'] == 'conflict', e
    ok('conflict-other-node')
    bad = Comp('wrong')
    bad.connect()
    e = await bad.wait('stream_error')
    assert e['condition'] == 'not-authorized', e
    ok('not-authorized')

    # The first connection still serves.
    b2.c.send_message(mto='echo@gw.localhost', mbody='again', mtype='chat')
    await b2.expect(body('echo: again'), 'echo after the refused connections')
    ok('still-serving')
    comp.disconnect()
    await comp.wait('disconnected')
    b2.c.send_message(mto='echo@gw.localhost', mbody='gone', mtype='chat')
    await b2.expect(lambda k, d: k == 'message' and d['type'] == 'error' and d['error']['condition'] == 'service-unavailable', 'bounce for a disconnected component')
    ok('bounce-when-gone')
    await X.stop(b2.c)

X.run(main, 60)
`

// stormScript: alice (node2) sends the same presence 11 times: her stream is
// closed with <policy-violation/>; bob on the same node, who changes his
// presence as often, keeps serving. Then carol binds three resources with
// max-user-sessions 2: the oldest (on node1) is replaced with <conflict/>, the
// others keep serving. argv: port2 port1.
const stormScript = routingLib + `
p2, p1 = sys.argv[1:3]

async def main():
    a = await C('alice', 'storm', p2, ['xep_0199']).start(presence=False)
    b = await C('bob', 'calm', p2, ['xep_0199']).start(presence=False)
    # Exactly 11: the 11th is cut, and nothing unread behind it (a close with
    # unread input resets the connection and can lose the stream error).
    for i in range(11):
        a.c.send_presence(pshow='away', pstatus='looping')
        b.c.send_presence(pshow='away', pstatus='status %d' % i)
    e = await a.expect(lambda k, d: k == 'stream_error', 'stream error at alice')
    assert e[1]['condition'] == 'policy-violation', e[1]
    ok('storm-cut')
    await b.c['xep_0199'].send_ping(jid='localhost', timeout=10)
    ok('other-unaffected')
    await X.stop(b.c)

    c1 = await C('carol', 'c1', p1, ['xep_0199']).start()
    c2 = await C('carol', 'c2', p2, ['xep_0199']).start()
    # node2 sees c1 (its session row): c2 reaches it by full JID.
    c2.c.send_message(mto='carol@localhost/c1', mbody='seen', mtype='chat')
    await c1.expect(body('seen'), 'c2 -> c1 across nodes')
    await c1.none(lambda k, d: k in ('stream_error', 'disconnected'), 'closed within the cap', 0.3)
    c3 = await C('carol', 'c3', p2, ['xep_0199']).start()
    e = await c1.expect(lambda k, d: k == 'stream_error', 'stream error at the oldest session')
    assert e[1]['condition'] == 'conflict', e[1]
    await c2.c['xep_0199'].send_ping(jid='localhost', timeout=10)
    await c3.c['xep_0199'].send_ping(jid='localhost', timeout=10)
    ok('session-cap')

X.run(main, 60)
`

var componentAddrRE = regexp.MustCompile(`listening for components.*addr[=":]+([0-9.]+:[0-9]+)`)

// XEP-0114 across a cluster: a real slixmpp component connected to node1 is
// reached by a slixmpp user on node2 and reaches him (messages, IQs both ways);
// a second connection for its domain gets <conflict/>, a wrong secret
// <not-authorized/> (logged once); a disconnected component's domain bounces
// <service-unavailable/>. Then mod_sunshine's presence-storm killer on node2 and
// max-user-sessions across the two nodes.
func TestComponentAcrossClusterAndStorm(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 2,
		Args: []string{"--component", "127.0.0.1:0", "--components", "gw.localhost=s3cret", "--max-user-sessions", "2"}})
	nodes[0].Register(t, "alice", "secret", "bob", "secret", "carol", "secret")
	waitCtl(t, nodes[1], "alice\nbob\ncarol\n", "users")
	componentPort := func(n *testenv.Node) string {
		m := componentAddrRE.FindStringSubmatch(n.Logs())
		if m == nil {
			t.Fatalf("%s logs no component listener:\n%s", n.Name, n.Logs())
		}
		_, port, _ := strings.Cut(m[1], ":")
		return port
	}
	out := nodes[0].RunPython(t, 70*time.Second, componentScript, componentPort(nodes[0]), strconv.Itoa(nodes[1].Port), componentPort(nodes[1]))
	for _, step := range []string{"component-connected", "message-user-to-component", "iq-user-to-component",
		"message-component-to-user", "iq-component-to-user", "conflict", "conflict-other-node", "not-authorized", "still-serving", "bounce-when-gone"} {
		if !strings.Contains(out, "OK "+step+"\n") {
			t.Errorf("step %s not passed:\n%s", step, out)
		}
	}
	if o, e, code := nodes[1].Ctl("components"); code != 0 || !strings.Contains(o, "gw.localhost") {
		t.Errorf("xmppctl components: %d %s %s", code, o, e)
	}
	if n := strings.Count(nodes[0].Logs(), "component handshake failed: wrong secret"); n != 1 {
		t.Errorf("wrong secret logged %d times, want 1", n)
	}

	out = nodes[1].RunPython(t, 70*time.Second, stormScript, strconv.Itoa(nodes[1].Port), strconv.Itoa(nodes[0].Port))
	for _, step := range []string{"storm-cut", "other-unaffected", "session-cap"} {
		if !strings.Contains(out, "OK "+step+"\n") {
			t.Errorf("step %s not passed:\n%s", step, out)
		}
	}
	if n := strings.Count(nodes[1].Logs(), "presence storm: closing the session"); n != 1 {
		t.Errorf("presence storm logged %d times, want 1:\n%s", n, nodes[1].Logs())
	}
}

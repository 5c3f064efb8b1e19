//go:build integration

package server_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// lastActivityScript: alice logs in on node1 and out again with a status;
// bob (her contact, subscription both) on node2 asks jabber:iq:last of her
// bare JID and gets the seconds since and the status (0 while she was
// online), carol (no subscription) is refused; a query to alice's full JID
// is answered by her client for bob, and refused by the server for carol;
// the server's JID answers its uptime and advertises the feature. Then the real xmppctl on node1: get_last, and
// delete_old_users 30 with dave's record dated 40 days back (deleted), erin
// online on node2 with a record as old (kept), frank's 2 days old (kept) and
// gina never seen (no record: kept and dated). Arguments: xmppctl, node1's
// admin socket, node1's c2s port.
const lastActivityScript = `
import asyncio, subprocess, sys, time, xml.etree.ElementTree as ET, xmpptest as X

CTL, SOCK, PORT1 = sys.argv[1], sys.argv[2], int(sys.argv[3])
T = 15
NS = "{jabber:iq:last}"

def ctl(*args):
    r = subprocess.run([CTL, "--socket", SOCK] + list(args), capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr.strip()

def ok(*args):
    code, out, err = ctl(*args)
    assert code == 0, (args, code, out, err)
    return out

async def login(j, pw, port=None, plugins=()):
    c = X.client(j, pw, plugins=["xep_0030"] + list(plugins))
    if port is None:
        return await X.start(c)
    saved, X.PORT = X.PORT, port
    try:
        return await X.start(c)
    finally:
        X.PORT = saved

async def last(c, to):
    # (seconds, status) of a result, or the error condition.
    iq = c.make_iq_get(ito=to)
    iq.xml.append(ET.fromstring("<query xmlns='jabber:iq:last'/>"))
    try:
        r = await iq.send(timeout=T)
    except Exception as e:
        return getattr(e, "condition", repr(e))
    q = r.xml.find(NS + "query")
    return int(q.get("seconds")), (q.text or "")

async def eventually(what, fn, check):
    # node2 answers from its replica and its view of the sessions: asked
    # again (bounded) until node1's commit and session end reached it.
    for i in range(100):
        r = await fn()
        if check(r):
            print(what, "seen after", i, "retries")
            return r
        await asyncio.sleep(0.1)
    raise AssertionError("%s: %s" % (what, r))

async def main():
    b = await login("bob@localhost/r", "pb")
    c = await login("carol@localhost/r", "pc")
    online = X.event(b, "presence", lambda p: str(p["from"]) == "alice@localhost/r" and p["type"] != "unavailable")
    a = await login("alice@localhost/r", "pa", port=PORT1, plugins=["xep_0012"])
    await asyncio.wait_for(online, T)

    # Online on node1: 0 for a contact on node2, forbidden for a stranger.
    r = await eventually("alice online", lambda: last(b, "alice@localhost"), lambda r: r == (0, ""))
    assert await last(c, "alice@localhost") == "forbidden"
    # A full JID is the client's to answer (slixmpp's xep_0012 here).
    await a["xep_0012"].set_last_activity(jid=a.boundjid, seconds=4242, status="client side")
    r = await last(b, "alice@localhost/r")
    assert isinstance(r, tuple) and 4242 <= r[0] < 4300 and r[1] == "client side", r
    # ... but only for who may see her presence (XEP-0012 §3): carol's is
    # refused by the server (slixmpp's plugin would answer her).
    assert await last(c, "alice@localhost/r") == "forbidden"
    # The server: uptime, and the feature in disco#info.
    r = await last(b, "localhost")
    assert isinstance(r, tuple) and r[0] >= 0 and r[1] == "", r
    info = await b["xep_0030"].get_info(jid="localhost", local=False, cached=False, timeout=T)
    assert "jabber:iq:last" in info["disco_info"]["features"], info["disco_info"]["features"]

    # alice logs out on node1 with a status: bob on node2 gets it.
    gone = X.event(b, "presence", lambda p: str(p["from"]) == "alice@localhost/r" and p["type"] == "unavailable")
    a.send_presence(ptype="unavailable", pstatus="Heading home")
    await asyncio.wait_for(gone, T)
    t0 = time.time()
    await X.stop(a)
    r = await eventually("alice's logout", lambda: last(b, "alice@localhost"), lambda r: isinstance(r, tuple) and r[1] == "Heading home")
    assert 0 <= r[0] <= time.time() - t0 + 5, r
    assert await last(c, "alice@localhost") == "forbidden"
    out = ok("get_last", "alice", "localhost")
    stamp, status = out.rstrip("\n").split("\t")
    assert status == "Heading home" and time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"), out
    assert ok("get_last", "bob", "localhost").rstrip("\n").endswith("\tONLINE")
    assert ok("get_last", "gina", "localhost").rstrip("\n").endswith("\tNOT FOUND")

    # delete_old_users 30: dave (40 days) goes, erin (as old, online) and
    # frank (2 days) stay, gina (no record) stays and is dated.
    e = await login("erin@localhost/r", "pe")
    now = int(time.time())
    assert ok("set_last", "dave", "localhost", str(now - 40*86400), "long gone") == ""
    assert ok("set_last", "erin", "localhost", str(now - 40*86400), "old") == ""
    assert ok("set_last", "frank", "localhost", str(now - 2*86400), "recent") == ""
    out = ok("delete_old_users", "30")
    assert out == "Deleted 1 users: [dave@localhost]\n", out
    users = sorted(ok("users").split())
    assert users == ["alice", "bob", "carol", "erin", "frank", "gina"], users
    assert ctl("check_account", "dave", "localhost")[0] == 1
    # Its data went with it: registered again, dave has no record.
    ok("register", "dave", "localhost", "pd")
    assert ok("get_last", "dave", "localhost").rstrip("\n").endswith("\tNOT FOUND")
    assert ok("get_last", "gina", "localhost").rstrip("\n").endswith("\tNOT FOUND")
    # erin logs out: her record is new, delete_old_users_vhost keeps her.
    await X.stop(e)
    await eventually("erin's logout", lambda: asyncio.sleep(0, ok("get_last", "erin", "localhost")), lambda o: o.rstrip("\n").endswith("\t"))
    assert ok("delete_old_users_vhost", "localhost", "30") == "Deleted 0 users: []\n"
    code, out, err = ctl("delete_old_users_vhost", "c.example", "30")
    assert code == 1 and "unknown host" in err, (code, out, err)
    for x in (b, c):
        await X.stop(x)

X.run(main, timeout=120)
`

// TestLastActivityCluster: XEP-0012 and ejabberdctl's last-activity commands
// on a two-node cluster (see lastActivityScript): the record written on
// node1 at alice's logout answers bob's query on node2, and the real xmppctl
// deletes only the old offline account.
func TestLastActivityCluster(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 2})
	n1, n2 := nodes[0], nodes[1]
	n1.Register(t, "alice", "pa", "bob", "pb", "carol", "pc", "dave", "pd", "erin", "pe", "frank", "pf", "gina", "pg")
	for _, args := range [][]string{
		{"add_rosteritem", "alice", "localhost", "bob", "localhost", "Bob", "", "both"},
		{"add_rosteritem", "bob", "localhost", "alice", "localhost", "Alice", "", "both"},
	} {
		if o, e, code := n1.Ctl(args...); code != 0 {
			t.Fatalf("xmppctl %v: exit %d %s%s", args, code, o, e)
		}
	}
	waitCtl(t, n2, "alice\nbob\ncarol\ndave\nerin\nfrank\ngina\n", "users")
	start := time.Now()
	out := n2.RunPython(t, 150*time.Second, lastActivityScript, n1.Ctlbin, n1.Socket, strconv.Itoa(n1.Port))
	t.Logf("slixmpp script: %.1fs", time.Since(start).Seconds())
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "retries") {
			t.Log(l)
		}
	}
	if !strings.Contains(out, "PASS") {
		t.Fatalf("script:\n%s\n--- node1 ---\n%s\n--- node2 ---\n%s", out, n1.Logs(), n2.Logs())
	}
}

// lastNodeLossScript: carol logs in on the node the test kills and waits for
// the connection to die. Arguments: the file it writes once logged in.
const lastNodeLossScript = `
import asyncio, sys, xmpptest as X

async def main():
    c = X.client("carol@localhost/r", "pc")
    gone = X.event(c, "disconnected")
    await X.start(c)
    c.send_presence(pstatus="here")
    open(sys.argv[1], "w").close()
    await asyncio.wait_for(gone, 90)

X.run(main, timeout=120)
`

// TestLastActivityNodeLoss: carol's only session is on node3, which is
// killed; the survivor responsible for the lost node's sessions records her
// last activity (dated at the loss, no status), so she is neither "ONLINE"
// forever nor without a record, on both survivors.
func TestLastActivityNodeLoss(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 3})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n1.Register(t, "carol", "pc")
	waitCtl(t, n3, "carol\n", "users")
	ready := filepath.Join(t.TempDir(), "ready")
	done := make(chan testenv.PythonResult, 1)
	go func() { done <- n3.Python(100*time.Second, lastNodeLossScript, ready) }()
	waitScriptReady(t, ready, done, 60*time.Second, "carol not logged in on node3")
	getLast := func(n *testenv.Node) (stamp, status string) {
		o, e, code := n.Ctl("get_last", "carol", "localhost")
		if code != 0 {
			t.Fatalf("get_last on %s: exit %d %s", n.Name, code, e)
		}
		stamp, status, _ = strings.Cut(strings.TrimSuffix(o, "\n"), "\t")
		return stamp, status
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, st := getLast(n1); st == "ONLINE" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node1 never saw carol online")
		}
		time.Sleep(50 * time.Millisecond)
	}
	killed := time.Now().Truncate(time.Second)
	n3.Kill()
	for _, n := range []*testenv.Node{n1, n2} {
		for deadline := time.Now().Add(20 * time.Second); ; {
			stamp, st := getLast(n)
			if st != "ONLINE" && st != "NOT FOUND" {
				at, err := time.Parse("2006-01-02T15:04:05Z", stamp)
				if err != nil || st != "" || at.Before(killed) || at.After(time.Now()) {
					t.Fatalf("carol's record on %s after the loss of node3: %q %q (killed at %s)", n.Name, stamp, st, killed)
				}
				t.Logf("%s: carol's last activity %s, %v after the kill", n.Name, stamp, time.Since(killed).Round(10*time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: carol still %q 20 s after node3 was killed\n%s", n.Name, st, n.Logs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if r := <-done; r.Err != nil || !strings.Contains(r.Output, "PASS") {
		t.Fatalf("script: %v\n%s", r.Err, r.Output)
	}
}

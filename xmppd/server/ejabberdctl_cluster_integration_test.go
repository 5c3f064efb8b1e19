//go:build integration

package server_test

import (
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// ejabberdctlAdminScript: slixmpp users of node2 see what the real xmppctl
// does through node1's admin socket: set_presence (bob gets alice's new
// presence), private_set read back by a client's XEP-0049 get and a client's
// store read by private_get, MUC room administration (occupants, options in
// disco#info, affiliations, a ban), delete_old_mam_messages (the archive a
// client queries, a room's history on join) and delete_old_messages (what a
// user gets at login). Arguments: xmppctl, node1's admin socket.
const ejabberdctlAdminScript = `
import asyncio, subprocess, sys, time, xml.etree.ElementTree as ET, xmpptest as X

CTL, SOCK = sys.argv[1], sys.argv[2]
T = 15
ROOM = "ops@conference.localhost"
MUCUSER = "{http://jabber.org/protocol/muc#user}"

def ctl(*args):
    r = subprocess.run([CTL, "--socket", SOCK] + list(args), capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr.strip()

def ok(*args):
    code, out, err = ctl(*args)
    assert code == 0, (args, code, out, err)
    return out

def refused(want, *args):
    code, out, err = ctl(*args)
    assert code == 1 and want in err and out == "", (args, code, out, err)

async def until(what, fn, timeout=10):
    end = time.monotonic() + timeout
    while True:
        if fn():
            return
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.1)

async def eventually(what, fn, check):
    # Reads on node2 see node1's commit once node2's replica applied it (a
    # moment later): asked again until then (bounded).
    for i in range(50):
        r = await fn()
        if check(r):
            print(what, "seen by the client after", i, "retries")
            return r
        await asyncio.sleep(0.1)
    raise AssertionError("%s: %s" % (what, r))

async def login(j, pw):
    return await X.start(X.client(j, pw, plugins=["xep_0030", "xep_0045", "xep_0059", "xep_0313"]))

async def main():
    b = await login("bob@localhost/r", "pb")
    online = X.event(b, "presence", lambda p: str(p["from"]) == "alice@localhost/r" and p["show"] == "")
    a = await login("alice@localhost/r", "pa")
    await asyncio.wait_for(online, T)  # alice's own initial presence went out

    # set_presence through node1 of alice's session on node2: bob gets it.
    away = X.event(b, "presence", lambda p: str(p["from"]) == "alice@localhost/r" and p["show"] == "away")
    last = []
    def set_presence():
        last[:] = ctl("set_presence", "alice", "localhost", "r", "available", "away", "In a meeting", "5")
        return last[0] == 0
    await until("set_presence (node1 sees alice's session)", set_presence)
    assert last[1] == "", last
    p = await asyncio.wait_for(away, T)
    assert p["status"] == "In a meeting" and int(p["priority"]) == 5, p
    refused("not found", "set_presence", "alice", "localhost", "nope", "available", "away", "x", "0")

    # private_set, read by the client; the client's store, read by private_get.
    bm = "<storage xmlns='storage:bookmarks'><conference jid='" + ROOM + "' name='Ops' autojoin='1'><nick>al</nick></conference></storage>"
    assert ok("private_set", "alice", "localhost", bm) == ""
    async def bookmarks():
        iq = a.make_iq_get()
        iq.xml.append(ET.fromstring("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>"))
        r = await iq.send(timeout=T)
        return r.xml.find("{jabber:iq:private}query/{storage:bookmarks}storage/{storage:bookmarks}conference")
    conf = await eventually("private_set", bookmarks, lambda c: c is not None)
    assert conf.get("jid") == ROOM and conf.get("name") == "Ops" and conf.find("{storage:bookmarks}nick").text == "al", ET.tostring(conf)
    iq = a.make_iq_set()
    iq.xml.append(ET.fromstring("<query xmlns='jabber:iq:private'><notes xmlns='urn:example:notes'>call bob</notes></query>"))
    await iq.send(timeout=T)
    out = ok("private_get", "alice", "localhost", "notes", "urn:example:notes")
    assert out == "<query xmlns='jabber:iq:private'><notes xmlns='urn:example:notes'>call bob</notes></query>\n", out
    refused("reserved", "private_set", "alice", "localhost", "<query xmlns='jabber:iq:roster'/>")

    # A room with alice (owner) and bob; a groupchat and a chat message.
    assert ok("create_room", "ops", "conference.localhost", "localhost", "alice@localhost") != ""
    await a["xep_0045"].join_muc_wait(ROOM, "al", maxstanzas=0, timeout=T)
    await b["xep_0045"].join_muc_wait(ROOM, "bo", maxstanzas=0, timeout=T)
    got = X.event(b, "groupchat_message", lambda m: m["body"] == "in the room")
    a.send_message(mto=ROOM, mbody="in the room", mtype="groupchat")
    await asyncio.wait_for(got, T)
    got = X.event(b, "message", lambda m: m["body"] == "hello bob")
    a.send_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
    await asyncio.wait_for(got, T)
    out = ok("get_room_occupants", "ops", "conference.localhost")
    assert sorted(out.splitlines()) == ["alice@localhost/r\tal\tmoderator", "bob@localhost/r\tbo\tparticipant"], out
    assert ok("get_room_occupants_number", "ops", "conference.localhost") == "2\n"

    # delete_old_mam_messages: what a client's query and a join's history show.
    async def archived(c):
        r = await c["xep_0313"].retrieve(rsm={"max": 10}, timeout=T)
        return [m["mam_result"]["forwarded"]["stanza"]["body"] for m in r["mam"]["results"]]
    async def rejoin_history():
        # A fresh client (dave) joins and reports the history it is sent.
        d = await login("dave@localhost/r", "pd")
        _, _, _, hist = await d["xep_0045"].join_muc_wait(ROOM, "da", maxstanzas=20, timeout=T)
        await X.stop(d)
        return [m["body"] for m in hist]
    assert await archived(b) == ["hello bob"]
    assert await rejoin_history() == ["in the room"]
    assert ctl("delete_old_mam_messages", "all", "1")[:2] == (0, "")
    assert await archived(b) == ["hello bob"]
    assert await rejoin_history() == ["in the room"]
    assert ctl("delete_old_mam_messages", "groupchat", "0")[:2] == (0, "")
    await eventually("groupchat purge", rejoin_history, lambda h: h == [])
    assert await archived(b) == ["hello bob"]
    assert ctl("delete_old_mam_messages", "chat", "0")[:2] == (0, "")
    await eventually("chat purge (bob)", lambda: archived(b), lambda l: l == [])
    await eventually("chat purge (alice)", lambda: archived(a), lambda l: l == [])
    refused("chat, groupchat or all", "delete_old_mam_messages", "old", "0")

    # Room options and affiliations, as clients see them.
    assert ok("change_room_option", "ops", "conference.localhost", "title", "Ops room") == ""
    info = lambda: b["xep_0030"].get_info(jid=ROOM, local=False, cached=False, timeout=T)
    await eventually("title", info, lambda r: [i[3] for i in r["disco_info"]["identities"]] == ["Ops room"])
    member = X.event(b, "groupchat_presence", lambda p: str(p["from"]) == ROOM + "/bo" and p["muc"]["affiliation"] == "member")
    assert ok("set_room_affiliation", "ops", "conference.localhost", "bob@localhost", "member") == ""
    await asyncio.wait_for(member, T)
    assert ok("get_room_affiliations", "ops", "conference.localhost") == "alice@localhost\towner\t\nbob@localhost\tmember\t\n"
    assert ok("change_room_option", "ops", "conference.localhost", "members_only", "true") == ""
    await eventually("members_only", info, lambda r: "muc_membersonly" in r["disco_info"]["features"])
    opts = ok("get_room_options", "ops", "conference.localhost").splitlines()
    assert "title\tOps room" in opts and "members_only\ttrue" in opts and "persistent\ttrue" in opts, opts
    banned = X.event(b, "groupchat_presence", lambda p: p["type"] == "unavailable" and str(p["from"]) == ROOM + "/bo")
    assert ok("set_room_affiliation", "ops", "conference.localhost", "bob", "localhost", "outcast") == ""  # ejabberd 24.12's form
    p = await asyncio.wait_for(banned, T)
    codes = [s.get("code") for s in p.xml.iter(MUCUSER + "status")]
    assert "301" in codes, codes
    assert ok("get_room_occupants_number", "ops", "conference.localhost") == "1\n"
    refused("does not exist", "get_room_options", "nope", "conference.localhost")
    refused("unknown MUC service", "get_room_occupants", "ops", "conference.c.example")
    refused("unknown room option", "change_room_option", "ops", "conference.localhost", "max_users", "5")
    refused("invalid affiliation", "set_room_affiliation", "ops", "conference.localhost", "bob@localhost", "boss")

    # delete_old_messages: carol (never online) gets only what is left.
    a.send_message(mto="carol@localhost", mbody="before", mtype="chat")
    await until("carol's offline message", lambda: ok("get_offline_count", "carol", "localhost") == "1\n")
    assert ctl("delete_old_messages", "1")[:2] == (0, "")
    assert ok("get_offline_count", "carol", "localhost") == "1\n"
    assert ctl("delete_old_messages", "0")[:2] == (0, "")
    assert ok("get_offline_count", "carol", "localhost") == "0\n"
    a.send_message(mto="carol@localhost", mbody="after", mtype="chat")
    await until("carol's second offline message", lambda: ok("get_offline_count", "carol", "localhost") == "1\n")
    c = X.client("carol@localhost/r", "pc")
    first = X.event(c, "message")
    await X.start(c)
    m = await asyncio.wait_for(first, T)
    assert m["body"] == "after", m

    # Shared roster groups: carol and dave, members of team (which displays
    # itself), get each other in their rosters and dave's presence reaches carol.
    await c.get_roster(timeout=T)
    assert ok("srg_create", "team", "localhost", "Team", "the team", "team") == ""
    assert ok("srg_user_add", "carol", "localhost", "team", "localhost") == ""
    pushed = X.event(c, "roster_update", lambda r: "dave@localhost" in r["roster"]["items"])
    assert ok("srg_user_add", "dave", "localhost", "team", "localhost") == ""
    await asyncio.wait_for(pushed, T)
    item = c.client_roster["dave@localhost"]
    assert item["subscription"] == "both" and item["groups"] == ["Team"], item
    assert ok("srg_list", "localhost") == "team\n"
    assert ok("srg_get_members", "team", "localhost") == "carol@localhost\ndave@localhost\n"
    assert ok("srg_get_info", "team", "localhost") == "label\tTeam\ndisplayed_groups\tteam\ndescription\tthe team\n"
    online = X.event(c, "presence", lambda p: str(p["from"]) == "dave@localhost/r" and p["type"] != "unavailable")
    d = await login("dave@localhost/r", "pd")
    await asyncio.wait_for(online, T)
    removed = X.event(c, "roster_update", lambda r: r["roster"]["items"].get("dave@localhost", {}).get("subscription") == "remove")
    assert ok("srg_user_del", "dave", "localhost", "team", "localhost") == ""
    await asyncio.wait_for(removed, T)
    refused("does not exist", "srg_user_add", "mallory", "localhost", "team", "localhost")
    refused("unknown host", "srg_list", "c.example")
    for x in (a, b, c, d):
        await X.stop(x)

X.run(main, timeout=120)
`

// TestEjabberdctlAdminCluster: a two-node cluster; slixmpp users connect to
// node2 and the real xmppctl talks to node1, so every command acts on the
// replicated data (and set_presence on a session of the other node): the
// script checks each effect from the clients' side. The commands refuse an
// unknown host with exit 1.
func TestEjabberdctlAdminCluster(t *testing.T) {
	testenv.NeedSlixmpp(t)
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 2})
	n1, n2 := nodes[0], nodes[1]
	ctl := func(want int, args ...string) string {
		t.Helper()
		o, e, code := n1.Ctl(args...)
		if code != want {
			t.Fatalf("xmppctl %v: exit %d, want %d\n%s%s", args, code, want, o, e)
		}
		return strings.TrimSpace(o + e)
	}
	n1.Register(t, "alice", "pa", "bob", "pb", "carol", "pc", "dave", "pd")
	ctl(0, "add_rosteritem", "alice", "localhost", "bob", "localhost", "Bob", "", "both")
	ctl(0, "add_rosteritem", "bob", "localhost", "alice", "localhost", "Alice", "", "both")
	waitCtl(t, n2, "alice\nbob\ncarol\ndave\n", "users")
	for _, args := range [][]string{
		{"set_presence", "alice", "c.example", "r", "available", "away", "x", "0"},
		{"private_get", "alice", "c.example", "storage", "storage:bookmarks"},
		{"private_set", "alice", "c.example", "<storage xmlns='storage:bookmarks'/>"},
	} {
		if out := ctl(1, args...); !strings.Contains(out, "unknown host") {
			t.Fatalf("%v: %s", args, out)
		}
	}
	if out := ctl(1, "private_get", "mallory", "localhost", "storage", "storage:bookmarks"); !strings.Contains(out, "does not exist") {
		t.Fatalf("private_get of a missing account: %s", out)
	}
	if out := ctl(2, "create_room_with_opts", "r", "conference.localhost", "localhost", "[]"); !strings.Contains(out, "unknown command") {
		t.Fatalf("create_room_with_opts: %s", out) // not offered
	}

	start := time.Now()
	out := n2.RunPython(t, 150*time.Second, ejabberdctlAdminScript, n1.Ctlbin, n1.Socket)
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

//go:build integration

package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// vhostsOpsScript: slixmpp users of a.example and b.example (both named
// alice) log in, the real xmppctl sees each host's sessions apart, and each
// joins the room "room" of its own host's MUC service with the same nick: two
// rooms, a message in one never reaches the other. Arguments: xmppctl, admin
// socket.
const vhostsOpsScript = `
import asyncio, subprocess, sys, xmpptest as X

CTL, SOCK = sys.argv[1], sys.argv[2]
T = 15

def ctl(*args):
    r = subprocess.run([CTL, "--socket", SOCK] + list(args), capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout.strip()

async def login(j, pw):
    return await X.start(X.client(j, pw, plugins=["xep_0045", "xep_0054"]))

async def main():
    a = await login("alice@a.example/r", "pa")
    b = await login("alice@b.example/r", "pb")
    try:
        await login("alice@a.example/x", "pb")
        raise AssertionError("alice@a.example logged in with alice@b.example's password")
    except RuntimeError:
        pass
    for host, want in (("a.example", "alice@a.example/r"), ("b.example", "alice@b.example/r")):
        code, out = ctl("connected_users_vhost", host)
        assert code == 0 and out == want, (host, code, out)
    code, out = ctl("stats_host", "onlineusers", "b.example")
    assert code == 0 and out == "1", ("stats_host", code, out)
    code, out = ctl("num_resources", "alice", "a.example")
    assert code == 0 and out == "1", ("num_resources", code, out)
    for c, room in ((a, "room@conference.a.example"), (b, "room@conference.b.example")):
        pres, _, _, _ = await c["xep_0045"].join_muc_wait(room, "al", maxstanzas=0, timeout=T)
        codes = {int(s.get("code", 0)) for s in pres.xml.iter("{http://jabber.org/protocol/muc#user}status")}
        assert 201 in codes, (room, "not a new room", codes)
        form = await c["xep_0045"].get_room_config(room, timeout=T)
        form["type"] = "submit"
        await c["xep_0045"].set_room_config(room, form, timeout=T)
    for svc, want in (("conference.a.example", "room@conference.a.example"), ("conference.b.example", "room@conference.b.example")):
        code, out = ctl("muc_online_rooms", svc)
        assert code == 0 and out == want, (svc, code, out)
    got = {"a": [], "b": []}
    a.add_event_handler("groupchat_message", lambda m: got["a"].append(str(m["from"]) + " " + m["body"]))
    done = X.event(b, "groupchat_message", lambda m: m["body"] == "in b's room")
    b.send_message(mto="room@conference.b.example", mbody="in b's room", mtype="groupchat")
    m = await asyncio.wait_for(done, T)
    assert str(m["from"]) == "room@conference.b.example/al", m["from"]
    # alice@a.example's room is another room: a round trip to her own room
    # (her message comes back) orders the check after b's message.
    mine = X.event(a, "groupchat_message", lambda m: m["body"] == "in a's room")
    a.send_message(mto="room@conference.a.example", mbody="in a's room", mtype="groupchat")
    await asyncio.wait_for(mine, T)
    assert got["a"] == ["room@conference.a.example/al in a's room"], got["a"]

    # ejabberdctl's per-host data commands act on b.example's alice only.
    # Both fetch their roster first: pushes go to interested resources (RFC 6121 2.1.6).
    await a.get_roster(timeout=T); await b.get_roster(timeout=T)
    pushes = {"a": 0, "b": 0}
    a.add_event_handler("roster_update", lambda _: pushes.__setitem__("a", pushes["a"] + 1))
    push = X.event(b, "roster_update")
    code, out = ctl("add_rosteritem", "alice", "b.example", "bob", "c.example", "Bob", "ops;b", "both")
    assert code == 0, ("add_rosteritem", code, out)
    await asyncio.wait_for(push, T)
    # The push as slixmpp applied it to its roster.
    assert "bob@c.example" in b.client_roster, b.client_roster
    item = b.client_roster["bob@c.example"]
    assert item["subscription"] == "both" and item["name"] == "Bob" and sorted(item["groups"]) == ["b", "ops"], item
    code, out = ctl("get_roster", "alice", "b.example")
    assert code == 0 and out == "bob@c.example\tBob\tboth\tnone\tops;b", ("get_roster b", code, out)
    code, out = ctl("get_roster", "alice", "a.example")
    assert code == 0 and out == "", ("get_roster a", code, out)
    assert "bob@c.example" not in a.client_roster and pushes["a"] == 0, pushes

    code, out = ctl("set_vcard", "alice", "b.example", "FN", "Alice of B")
    assert code == 0, ("set_vcard", code, out)
    v = await b["xep_0054"].get_vcard("alice@b.example", local=False, timeout=T)
    assert v["vcard_temp"]["FN"] == "Alice of B", v
    v = await a["xep_0054"].get_vcard("alice@a.example", local=False, timeout=T)
    assert v["vcard_temp"]["FN"] == "", v
    code, out = ctl("get_vcard", "alice", "b.example", "FN")
    assert code == 0 and out == "Alice of B", ("get_vcard", code, out)

    got_msg = {"a": [], "b": []}
    a.add_event_handler("message", lambda m: got_msg["a"].append(m["body"]))
    msg = X.event(b, "message", lambda m: m["body"] == "maintenance at 22:00")
    code, out = ctl("send_message", "chat", "b.example", "alice@b.example", "Notice", "maintenance at 22:00")
    assert code == 0, ("send_message", code, out)
    m = await asyncio.wait_for(msg, T)
    assert str(m["from"]) == "b.example" and m["subject"] == "Notice", m
    mine = X.event(a, "message", lambda m: m["body"] == "for a")
    code, out = ctl("send_message", "chat", "a.example", "alice@a.example", "", "for a")
    await asyncio.wait_for(mine, T)
    assert got_msg["a"] == ["for a"], got_msg["a"]
    # bob@b.example has no session: the message is stored for him, not for a bob of a.example.
    code, out = ctl("send_message", "chat", "a.example", "bob@b.example", "", "for bob")
    assert code == 0, ("send_message bob", code, out)
    code, out = ctl("get_offline_count", "bob", "b.example")
    assert code == 0 and out == "1", ("get_offline_count bob b.example", code, out)
    code, out = ctl("get_offline_count", "alice", "a.example")
    assert code == 0 and out == "0", ("get_offline_count alice a.example", code, out)

    code, out = ctl("create_room", "ops", "conference.b.example", "b.example", "alice@b.example")
    assert code == 0, ("create_room", code, out)
    code, out = ctl("muc_online_rooms", "conference.b.example")
    assert code == 0 and out.split() == ["ops@conference.b.example", "room@conference.b.example"], ("muc_online_rooms", code, out)
    code, out = ctl("muc_online_rooms", "conference.a.example")
    assert code == 0 and out == "room@conference.a.example", ("muc_online_rooms a", code, out)
    pres, _, _, _ = await b["xep_0045"].join_muc_wait("ops@conference.b.example", "al", maxstanzas=0, timeout=T)
    codes = {int(s.get("code", 0)) for s in pres.xml.iter("{http://jabber.org/protocol/muc#user}status")}
    assert 201 not in codes, ("ops was created by create_room, not by the join", codes)
    item = pres.xml.find("{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item")
    assert item is not None and item.get("affiliation") == "owner", ("create_room's OWNER", pres)
    await b["xep_0045"].get_room_config("ops@conference.b.example", timeout=T)  # an owner's request
    gone = X.event(b, "groupchat_presence", lambda p: p["type"] == "unavailable" and str(p["from"]) == "ops@conference.b.example/al")
    code, out = ctl("destroy_room", "ops", "conference.b.example")
    assert code == 0, ("destroy_room", code, out)
    p = await asyncio.wait_for(gone, T)
    assert p.xml.find(".//{http://jabber.org/protocol/muc#user}destroy") is not None, p

    # ban_account: b.example's alice is kicked and cannot log in again;
    # a.example's alice stays (a round trip to her own vCard afterwards).
    down = X.event(b, "disconnected")
    code, out = ctl("ban_account", "alice", "b.example", "spam")
    assert code == 0 and "1 session(s) kicked" in out, ("ban_account", code, out)
    await asyncio.wait_for(down, T)
    try:
        await login("alice@b.example/again", "pb")
        raise AssertionError("banned alice@b.example logged in")
    except RuntimeError:
        pass
    await a["xep_0054"].get_vcard("alice@a.example", local=False, timeout=T)
    await X.stop(a)

X.run(main, timeout=90)
`

// twoHostFile is a XEP-0227 file with users of both hosts (carol on both,
// with other passwords and rosters).
const twoHostFile = `<?xml version='1.0' encoding='UTF-8'?>
<server-data xmlns='urn:xmpp:pie:0'>
 <host jid='a.example'><user name='carol' password='ca'><query xmlns='jabber:iq:roster'><item jid='carol@b.example' subscription='both'/></query></user></host>
 <host jid='b.example'><user name='carol' password='cb'/><user name='dave' password='db'/></host>
</server-data>
`

// TestVirtualHostsOperator: one xmppd serves a.example and b.example; the
// real xmppctl creates alice on each host (ejabberdctl's USER HOST forms and
// user@host), refuses a host not served ("unknown host", exit 1), lists each
// host's accounts and sessions apart; slixmpp users of both hosts get their
// own MUC rooms of the same name (muc_online_rooms per service); a two-host
// XEP-0227 file imports each host's users into that host and exports back
// as one file per host (ejabberd's layout).
func TestVirtualHostsOperator(t *testing.T) {
	testenv.NeedSlixmpp(t)
	x := testenv.Start(t, testenv.Options{Domain: "a.example", Config: "hosts: [a.example, b.example]\n"})
	ctl := func(want int, args ...string) string {
		t.Helper()
		o, e, code := x.Ctl(args...)
		if code != want {
			t.Fatalf("xmppctl %v: exit %d, want %d\n%s%s", args, code, want, o, e)
		}
		return strings.TrimSpace(o + e)
	}
	ctl(0, "register", "alice", "a.example", "pa")
	ctl(0, "register", "alice", "b.example", "pb")
	ctl(0, "register", "bob@b.example", "pbob")
	if out := ctl(1, "register", "mallory", "c.example", "pm"); !strings.Contains(out, "unknown host") {
		t.Fatalf("register on c.example: %s", out)
	}
	if out := ctl(1, "registered_users", "c.example"); !strings.Contains(out, "unknown host") {
		t.Fatalf("registered_users c.example: %s", out)
	}
	for host, want := range map[string]string{"a.example": "alice", "b.example": "alice\nbob"} {
		if out := ctl(0, "registered_users", host); out != want {
			t.Fatalf("registered_users %s: %q, want %q", host, out, want)
		}
	}
	if out := ctl(0, "registered_vhosts"); out != "a.example\nb.example" {
		t.Fatalf("registered_vhosts: %q", out)
	}
	ctl(0, "check_password", "alice", "b.example", "pb")
	ctl(1, "check_password", "alice", "a.example", "pb")
	for _, args := range [][]string{
		{"ban_account", "alice", "c.example", "spam"}, {"get_roster", "alice", "c.example"},
		{"add_rosteritem", "alice", "c.example", "bob", "b.example", "Bob", "", "both"}, {"delete_rosteritem", "alice", "c.example", "bob", "b.example"},
		{"get_vcard", "alice", "c.example", "FN"}, {"set_vcard", "alice", "c.example", "FN", "x"},
		{"send_message", "chat", "c.example", "alice@a.example", "", "x"}, {"create_room", "r", "conference.c.example", "c.example"},
		{"connected_users_vhost", "c.example"}, {"stats_host", "onlineusers", "c.example"}, {"kick_user", "alice", "c.example"},
		{"num_resources", "alice", "c.example"}, {"get_offline_count", "alice", "c.example"}, {"export_piefxis_host", "/tmp", "c.example"},
	} {
		if out := ctl(1, args...); !strings.Contains(out, "unknown host") {
			t.Fatalf("%v: %s", args, out)
		}
	}
	if out := ctl(0, "status"); !strings.Contains(out, "hosts:") || !strings.Contains(out, "a.example,b.example") {
		t.Fatalf("status lists no hosts:\n%s", out)
	}

	start := time.Now()
	out := x.RunPython(t, 100*time.Second, vhostsOpsScript, x.Ctlbin, x.Socket)
	t.Logf("slixmpp script: %.1fs", time.Since(start).Seconds())
	if !strings.Contains(out, "PASS") {
		t.Fatalf("script:\n%s\n--- xmppd ---\n%s", out, x.Logs())
	}

	// XEP-0227 with two hosts: each host's carol into her host.
	dir := t.TempDir()
	src := filepath.Join(dir, "two.xml")
	if err := os.WriteFile(src, []byte(twoHostFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := ctl(0, "import-piefxis", src); !strings.Contains(out, "a.example:  1") || !strings.Contains(out, "b.example:  2") {
		t.Fatalf("import summary:\n%s", out)
	}
	ctl(0, "check_password", "carol", "a.example", "ca")
	ctl(0, "check_password", "carol@b.example", "cb")
	ctl(1, "check_password", "carol", "a.example", "cb")
	ctl(1, "check_account", "dave", "a.example")
	exp := filepath.Join(dir, "export")
	ctl(0, "export_piefxis", exp) // ejabberdctl's spelling
	files, _ := filepath.Glob(filepath.Join(exp, "*.xml"))
	if len(files) != 3 {
		t.Fatalf("export wrote %v", files)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		s := string(b)
		switch {
		case strings.HasSuffix(f, "_a.example.xml"):
			if !strings.Contains(s, "jid='a.example'") || !strings.Contains(s, "name='alice'") || !strings.Contains(s, "name='carol'") || strings.Contains(s, "name='dave'") {
				t.Fatalf("%s:\n%s", f, s)
			}
		case strings.HasSuffix(f, "_b.example.xml"):
			if !strings.Contains(s, "jid='b.example'") || !strings.Contains(s, "name='bob'") || !strings.Contains(s, "name='dave'") {
				t.Fatalf("%s:\n%s", f, s)
			}
		default:
			if strings.Count(s, "xi:include") != 2 {
				t.Fatalf("main file %s:\n%s", f, s)
			}
		}
	}
	// ejabberdctl export_piefxis_host DIR HOST: b.example's file only.
	one := filepath.Join(dir, "one")
	if out := ctl(1, "export_piefxis_host", one, "c.example"); !strings.Contains(out, "unknown host") {
		t.Fatalf("export_piefxis_host c.example: %s", out)
	}
	ctl(0, "export_piefxis_host", one, "b.example")
	files, _ = filepath.Glob(filepath.Join(one, "*.xml"))
	if len(files) != 2 {
		t.Fatalf("export_piefxis_host wrote %v", files)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if s := string(b); strings.Contains(s, "jid='a.example'") || strings.Contains(s, "_a.example.xml") || (strings.HasSuffix(f, "_b.example.xml") && !strings.Contains(s, "name='dave'")) {
			t.Fatalf("%s:\n%s", f, s)
		}
	}
}

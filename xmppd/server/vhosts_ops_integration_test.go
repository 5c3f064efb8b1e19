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
    return await X.start(X.client(j, pw, plugins=["xep_0045"]))

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
    await X.stop(a); await X.stop(b)

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
	ctl(0, "export-piefxis", exp)
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
}

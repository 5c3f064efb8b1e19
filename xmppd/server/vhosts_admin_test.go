package server

import (
	"context"
	"strings"
	"sync"
	"testing"

	"xedge/xmppd/config"
	"xedge/xmppd/jid"
	"xedge/xmppd/mod/muc"
	"xedge/xmppd/mod/offline"
	"xedge/xmppd/mod/roster"
	"xedge/xmppd/mod/vcard"
	"xedge/xmppd/xmlstream"
)

// recSess records what it is sent and why it was closed.
type recSess struct {
	adminSess
	mu     sync.Mutex
	got    []*xmlstream.Element
	closed string
}

func (s *recSess) Send(st *xmlstream.Element) { s.mu.Lock(); s.got = append(s.got, st); s.mu.Unlock() }
func (s *recSess) Interested() bool           { return true }
func (s *recSess) Close(_, text string)       { s.mu.Lock(); s.closed = text; s.mu.Unlock() }
func (s *recSess) take() []*xmlstream.Element {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}

// ejabberdctl's per-host account data commands act on the named host's
// account only (alice@a.example and alice@b.example are two users), refuse a
// domain not served with "unknown host", and a user of a served host that
// does not exist with "does not exist".
func TestAdminVhostAccountData(t *testing.T) {
	ctx := context.Background()
	s := hostsServer(t)
	ros, vc, mu := roster.New(), vcard.New(0), muc.New()
	if err := ros.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	if err := vc.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	if err := mu.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	defer mu.Stop(ctx)
	s.vhostAdminHandlers(ros, vc, mu)
	a := &recSess{adminSess: adminSess{j: jid.MustParse("alice@a.example/r")}}
	b := &recSess{adminSess: adminSess{j: jid.MustParse("alice@b.example/r")}}
	s.Router.Bind(ctx, a)
	s.Router.Bind(ctx, b)
	steps := []struct {
		cmd  []string
		want string // the result or, after "!", a part of the error
	}{
		{[]string{"register", "alice", "a.example", "pa"}, "user alice@a.example registered"},
		{[]string{"register", "alice", "b.example", "pb"}, "user alice@b.example registered"},
		{[]string{"add_rosteritem", "alice", "b.example", "bob", "c.example", "Bob", "ops;b", "both"}, "bob@c.example added to the roster of alice@b.example (subscription both)"},
		{[]string{"add_rosteritem", "alice", "c.example", "bob", "c.example", "Bob", "", "both"}, "!unknown host"},
		{[]string{"add_rosteritem", "mallory", "b.example", "bob", "c.example", "Bob", "", "both"}, "!account mallory@b.example does not exist"},
		{[]string{"add_rosteritem", "alice", "b.example", "bob", "c.example", "Bob", "", "maybe"}, "!none, to, from or both"},
		{[]string{"get_roster", "alice", "c.example"}, "!unknown host"},
		{[]string{"set_vcard", "alice", "b.example", "FN", "Alice of B"}, "FN of alice@b.example's vCard set"},
		{[]string{"set_vcard2", "alice", "b.example", "N", "FAMILY", "Liddell"}, "N FAMILY of alice@b.example's vCard set"},
		{[]string{"get_vcard", "alice", "b.example", "FN"}, "Alice of B"},
		{[]string{"get_vcard2", "alice", "b.example", "n", "family"}, "Liddell"},
		{[]string{"set_nickname", "alice", "b.example", "al"}, "NICKNAME of alice@b.example's vCard set"},
		{[]string{"get_vcard", "alice", "b.example", "NICKNAME"}, "al"},
		{[]string{"set_nickname", "alice", "c.example", "al"}, "!unknown host"},
		{[]string{"get_vcard", "alice", "a.example", "FN"}, "!alice@a.example's vCard has no FN"},
		{[]string{"get_vcard", "alice", "c.example", "FN"}, "!unknown host"},
		{[]string{"set_vcard", "alice", "c.example", "FN", "x"}, "!unknown host"},
		{[]string{"send_message", "headline", "b.example", "alice@b.example/r", "Notice", "maintenance at 22:00"}, "message sent from b.example to alice@b.example/r"},
		{[]string{"send_message", "chat", "c.example", "alice@b.example/r", "", "x"}, "!unknown host"},
		{[]string{"send_message", "shout", "b.example", "alice@b.example/r", "", "x"}, "!chat, normal, headline or groupchat"},
		{[]string{"create_room", "ops", "conference.b.example", "b.example", "alice@b.example/r"}, "!want a bare JID"},
		{[]string{"create_room", "ops", "conference.b.example", "b.example", "alice@b.example"}, "room ops@conference.b.example created"},
		{[]string{"create_room", "ops", "conference.b.example", "b.example"}, "!exists"},
		{[]string{"create_room", "ops", "conference.a.example", "b.example"}, "!not the MUC service of b.example"},
		{[]string{"create_room", "ops", "conference.c.example", "c.example"}, "!unknown host"},
		{[]string{"destroy_room", "ops", "conference.c.example"}, "!unknown MUC service"},
		{[]string{"num_resources", "alice", "c.example"}, "!unknown host"},
		{[]string{"ban_account", "alice", "c.example", "spam"}, "!unknown host"},
		{[]string{"ban_account", "alice", "b.example", "spam"}, "account alice@b.example banned (password replaced by a random one), 1 session(s) kicked"},
		{[]string{"check_password", "alice", "b.example", "pb"}, "!does not match"},
		{[]string{"check_password", "alice", "a.example", "pa"}, "password matches"},
		{[]string{"delete_rosteritem", "alice", "b.example", "bob", "c.example"}, "bob@c.example removed from the roster of alice@b.example"},
		{[]string{"delete_rosteritem", "alice", "b.example", "bob", "c.example"}, "!not in the roster"},
		{[]string{"destroy_room", "ops", "conference.b.example"}, "room ops@conference.b.example destroyed"},
		{[]string{"destroy_room", "ops", "conference.b.example"}, "!does not exist"},
	}
	for i, st := range steps {
		out, err := call(t, s, st.cmd[0], st.cmd[1:]...)
		if want, ok := strings.CutPrefix(st.want, "!"); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%v: %q, %v; want an error with %q", st.cmd, out, err, want)
			}
		} else if err != nil || out != st.want {
			t.Fatalf("%v: %q, %v; want %q", st.cmd, out, err, st.want)
		}
		switch st.cmd[0] + " " + st.cmd[1] {
		case "add_rosteritem alice":
			if i != 2 {
				break
			}
			res, err := s.Admin.Call(ctx, "get_roster", []string{"alice", "b.example"})
			if l, _ := res.([]RosterItem); err != nil || len(l) != 1 || l[0].JID != "bob@c.example" || l[0].Nick != "Bob" || l[0].Subscription != "both" || strings.Join(l[0].Groups, ";") != "ops;b" {
				t.Fatalf("get_roster alice b.example: %+v %v", res, err)
			}
			if res, err := s.Admin.Call(ctx, "get_roster", []string{"alice", "a.example"}); err != nil || len(res.([]RosterItem)) != 0 {
				t.Fatalf("get_roster alice a.example: %+v %v", res, err)
			}
			if p := b.take(); len(p) != 1 || p[0].Child(roster.NS, "query") == nil {
				t.Fatalf("alice@b.example's roster push: %v", p)
			}
			if p := a.take(); len(p) != 0 {
				t.Fatalf("alice@a.example got %v", p)
			}
		case "send_message headline":
			p := b.take()
			if len(p) != 1 || p[0].Attr("from") != "b.example" || p[0].Attr("type") != "headline" || p[0].ChildText(xmlstream.NSClient, "body") != "maintenance at 22:00" || p[0].ChildText(xmlstream.NSClient, "subject") != "Notice" {
				t.Fatalf("alice@b.example got %v", p)
			}
		case "create_room ops":
			if strings.HasPrefix(st.want, "!") {
				break
			}
			if got := strings.Join(mu.RoomJIDs(""), ","); got != "ops@conference.b.example" {
				t.Fatalf("rooms: %s", got)
			}
			if len(st.cmd) == 5 {
				// alice@b.example is its owner: she gets the owner's configuration form.
				s.Router.Route(ctx, xmlstream.New(xmlstream.NSClient, "iq", "type", "get", "id", "cfg", "from", "alice@b.example/r", "to", "ops@conference.b.example").
					Append(xmlstream.New(muc.NSOwner, "query")))
				if p := b.take(); len(p) != 1 || p[0].Attr("type") != "result" {
					t.Fatalf("owner's configuration form: %v", p)
				}
			}
		case "ban_account alice":
			b.mu.Lock()
			closed := b.closed
			b.mu.Unlock()
			if st.cmd[2] == "b.example" && closed != "Account banned: spam" {
				t.Fatalf("alice@b.example's session closed with %q", closed)
			}
			a.mu.Lock()
			if a.closed != "" {
				t.Fatalf("alice@a.example's session closed: %q", a.closed)
			}
			a.mu.Unlock()
		}
	}
	if got := mu.RoomJIDs(""); len(got) != 0 {
		t.Fatalf("rooms left: %v", got)
	}
	s.Router.Bind(ctx, &recSess{adminSess: adminSess{j: jid.MustParse("alice@a.example/r2")}})
	for host, want := range map[string]int{"a.example": 2, "b.example": 1} { // b's test session stays bound after its Close
		if n, err := s.Admin.Call(ctx, "num_resources", []string{"alice", host}); err != nil || n != want {
			t.Fatalf("num_resources alice %s: %v %v, want %d", host, n, err, want)
		}
	}
}

// A host whose backend cannot write accounts is named with its own auth
// method in the refusal (it named the default host's: "auth-method internal"
// for b.example's LDAP directory).
func TestAdminHostDirErrNamesTheHostsMethod(t *testing.T) {
	s := adminServer(t, func(*config.AuthConfig) {})
	s.cfg.Data = t.TempDir() // buildAuth makes the hosts' certificates there
	s.cfg.Hosts = config.StringList{"localhost", "b.example"}
	s.cfg.HostConfig = config.HostOverrides{"b.example": {"auth-method": "ldap", "ldap-servers": "127.0.0.1", "ldap-base": "dc=example,dc=org"}}
	if _, err := buildAuth(s); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"register", "alice", "b.example", "pw"}, {"change_password", "alice", "b.example", "pw2"},
		{"unregister", "alice", "b.example"}, {"registered_users", "b.example"}, {"stats_host", "registeredusers", "b.example"},
	} {
		out, err := call(t, s, c[0], c[1:]...)
		if err == nil || !strings.Contains(err.Error(), "b.example's auth-method ldap") {
			t.Errorf("%v: %q, %v; want an error naming b.example's auth-method ldap", c, out, err)
		}
	}
	if out, err := call(t, s, "register", "alice", "localhost", "pw"); err != nil {
		t.Fatalf("register on the internal default host: %q %v", out, err)
	}
}

// get_offline_count USER HOST counts that host's account's stored messages:
// a message to bob@b.example (no session) is bob@b.example's, not another
// host's bob.
func TestAdminOfflineCountPerHost(t *testing.T) {
	ctx := context.Background()
	s := hostsServer(t)
	off := offline.New(100)
	if err := off.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	defer off.Stop(ctx)
	s.vhostAdminHandlers(nil, nil, nil)
	s.offlineCountHandler(off)
	for _, c := range [][]string{{"bob", "a.example", "p1"}, {"bob", "b.example", "p2"}} {
		if _, err := call(t, s, "register", c...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := call(t, s, "send_message", "chat", "a.example", "bob@b.example", "", "kept for bob of b"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host string
		want any // count, or an error text
	}{{"b.example", 1}, {"a.example", 0}, {"c.example", "unknown host"}} {
		n, err := s.Admin.Call(ctx, "get_offline_count", []string{"bob", c.host})
		if want, ok := c.want.(string); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("get_offline_count bob %s: %v %v, want %q", c.host, n, err, want)
			}
		} else if err != nil || n != c.want {
			t.Fatalf("get_offline_count bob %s: %v %v, want %v", c.host, n, err, c.want)
		}
	}
}

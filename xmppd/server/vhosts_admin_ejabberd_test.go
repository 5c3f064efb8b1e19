package server

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/muc"
	"xedge/xmppd/mod/offline"
	"xedge/xmppd/mod/private"
	"xedge/xmppd/xmlstream"
)

// presSess records the presence set on it.
type presSess struct {
	recSess
	pmu  sync.Mutex
	pres *xmlstream.Element
	set  int
}

func (s *presSess) SetPresence(p *xmlstream.Element) {
	s.pmu.Lock()
	s.pres, s.set = p, s.set+1
	s.pmu.Unlock()
}

func (s *presSess) Presence() *xmlstream.Element { s.pmu.Lock(); defer s.pmu.Unlock(); return s.pres }

// asJSON is a command's result as the admin socket would send it.
func asJSON(t *testing.T, s *Server, cmd string, args ...string) (string, error) {
	t.Helper()
	res, err := s.Admin.Call(context.Background(), cmd, args)
	if err != nil {
		return "", err
	}
	b, _ := json.Marshal(res)
	return string(b), nil
}

// ejabberdctl's room administration, set_presence, private storage and
// purges: each acts on the named host's data, and refuses a host, room,
// service, option or session that does not exist.
func TestAdminEjabberdRoomsPresencePrivatePurge(t *testing.T) {
	ctx := context.Background()
	s := hostsServer(t)
	mu, prv, off := muc.New(), private.New(), offline.New(100)
	if err := mu.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	defer mu.Stop(ctx)
	if err := prv.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	if err := off.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	defer off.Stop(ctx)
	s.vhostAdminHandlers(nil, nil, mu)
	s.roomAdminHandlers(mu)
	s.sessionAdminHandlers(prv)
	s.purgeHandlers(off, nil)
	s.offlineCountHandler(off)
	for _, c := range [][]string{{"alice", "b.example", "pa"}, {"bob", "b.example", "pb"}, {"bob", "a.example", "pb"}} {
		if _, err := call(t, s, "register", c...); err != nil {
			t.Fatal(err)
		}
	}
	bob := &presSess{recSess: recSess{adminSess: adminSess{j: jid.MustParse("bob@b.example/r")}}}
	s.Router.Bind(ctx, bob)
	const room = "ops@conference.b.example"

	steps := []struct {
		cmd  []string
		want string // the result as JSON or, after "!", a part of the error
	}{
		{[]string{"create_room", "ops", "conference.b.example", "b.example", "alice@b.example"}, `"room ops@conference.b.example created"`},
		{[]string{"get_room_options", "ops", "conference.b.example"}, `[{"name":"title","value":""},{"name":"description","value":""},{"name":"allow_change_subj","value":"false"},{"name":"public","value":"true"},{"name":"persistent","value":"true"},{"name":"moderated","value":"false"},{"name":"members_only","value":"false"},{"name":"allow_user_invites","value":"false"},{"name":"password_protected","value":"false"},{"name":"password","value":""},{"name":"anonymous","value":"true"},{"name":"mam","value":"true"},{"name":"history_size","value":"20"}]`},
		{[]string{"get_room_options", "nope", "conference.b.example"}, "!room nope@conference.b.example does not exist"},
		{[]string{"get_room_options", "ops", "conference.c.example"}, "!unknown MUC service"},
		{[]string{"change_room_option", "ops", "conference.b.example", "title", "Ops room"}, `"title of room ops@conference.b.example set to Ops room"`},
		{[]string{"change_room_option", "ops", "conference.b.example", "public", "maybe"}, "!true or false"},
		{[]string{"change_room_option", "ops", "conference.b.example", "max_users", "10"}, `!unknown room option "max_users"`},
		{[]string{"change_room_option", "ops", "conference.b.example", "password_protected", "true"}, "!set the password option"},
		{[]string{"change_room_option", "nope", "conference.b.example", "title", "x"}, "!does not exist"},
		{[]string{"get_room_occupants", "ops", "conference.b.example"}, `[{"jid":"bob@b.example/r","nick":"bobby","role":"participant"}]`},
		{[]string{"get_room_occupants_number", "ops", "conference.b.example"}, `1`},
		{[]string{"set_room_affiliation", "ops", "conference.b.example", "carol@c.example", "member"}, `"carol@c.example is member of room ops@conference.b.example"`},
		{[]string{"set_room_affiliation", "ops", "conference.b.example", "dave", "c.example", "admin"}, `"dave@c.example is admin of room ops@conference.b.example"`},
		{[]string{"set_room_affiliation", "ops", "conference.b.example", "carol@c.example", "boss"}, "!invalid affiliation"},
		{[]string{"get_room_affiliations", "ops", "conference.b.example"}, `[{"jid":"alice@b.example","affiliation":"owner","reason":""},{"jid":"carol@c.example","affiliation":"member","reason":""},{"jid":"dave@c.example","affiliation":"admin","reason":""}]`},
		{[]string{"set_room_affiliation", "ops", "conference.b.example", "dave@c.example", "none"}, `"dave@c.example is none of room ops@conference.b.example"`},
		// members-only: bob, no member, is sent out (322).
		{[]string{"change_room_option", "ops", "conference.b.example", "members_only", "true"}, `"members_only of room ops@conference.b.example set to true"`},
		{[]string{"get_room_occupants_number", "ops", "conference.b.example"}, `0`},

		{[]string{"set_presence", "bob", "b.example", "r", "available", "away", "In a meeting", "5"}, `"presence of bob@b.example/r set"`},
		{[]string{"set_presence", "bob", "b.example", "gone", "available", "away", "x", "5"}, "!session bob@b.example/gone not found"},
		{[]string{"set_presence", "bob", "c.example", "r", "available", "away", "x", "5"}, "!unknown host"},
		{[]string{"set_presence", "bob", "b.example", "r", "available", "sleepy", "x", "5"}, "!away, chat, dnd or xa"},
		{[]string{"set_presence", "bob", "b.example", "r", "available", "away", "x", "high"}, "!priority"},

		{[]string{"private_set", "alice", "b.example", "<storage xmlns='storage:rosternotes'><note jid='bob@b.example'>met at FOSDEM</note></storage>"}, `"\u003cstorage xmlns='storage:rosternotes'/\u003e of alice@b.example stored"`},
		{[]string{"private_get", "alice", "b.example", "storage", "storage:rosternotes"}, `"\u003cquery xmlns='jabber:iq:private'\u003e\u003cstorage xmlns='storage:rosternotes'\u003e\u003cnote jid='bob@b.example'\u003emet at FOSDEM\u003c/note\u003e\u003c/storage\u003e\u003c/query\u003e"`},
		{[]string{"private_get", "alice", "a.example", "storage", "storage:rosternotes"}, "!account alice@a.example does not exist"},
		{[]string{"private_get", "bob", "a.example", "storage", "storage:rosternotes"}, `"\u003cquery xmlns='jabber:iq:private'\u003e\u003cstorage xmlns='storage:rosternotes'/\u003e\u003c/query\u003e"`},
		{[]string{"private_set", "alice", "b.example", "<query xmlns='jabber:iq:roster'/>"}, "!reserved namespace"},
		{[]string{"private_set", "alice", "b.example", "<storage xmlns='x'>"}, "!not one XML element"},
		{[]string{"private_set", "alice", "c.example", "<storage xmlns='x'/>"}, "!unknown host"},

		{[]string{"send_message", "chat", "b.example", "alice@b.example", "", "kept"}, `"message sent from b.example to alice@b.example"`},
		{[]string{"delete_old_messages", "1"}, `"0 offline message(s) older than 1 day(s) deleted"`},
		{[]string{"get_offline_count", "alice", "b.example"}, `1`},
		{[]string{"delete_old_messages", "0"}, `"1 offline message(s) older than 0 day(s) deleted"`},
		{[]string{"get_offline_count", "alice", "b.example"}, `0`},
		{[]string{"delete_old_messages", "-1"}, "!invalid DAYS"},
		{[]string{"delete_old_mam_messages", "all", "1"}, "!the mam module is not loaded"},
	}
	for _, st := range steps {
		if st.cmd[0] == "get_room_occupants" {
			s.Router.Route(ctx, xmlstream.New(xmlstream.NSClient, "presence", "from", "bob@b.example/r", "to", room+"/bobby").
				Append(xmlstream.New(muc.NS, "x")))
			bob.take()
		}
		out, err := asJSON(t, s, st.cmd[0], st.cmd[1:]...)
		if want, ok := strings.CutPrefix(st.want, "!"); ok {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%v: %s, %v; want an error with %q", st.cmd, out, err, want)
			}
			continue
		} else if err != nil || out != st.want {
			t.Fatalf("%v: %s, %v;\nwant %s", st.cmd, out, err, st.want)
		}
		switch strings.Join(st.cmd[:min(4, len(st.cmd))], " ") {
		case "change_room_option ops conference.b.example members_only":
			var codes []string
			for _, p := range bob.take() {
				if p.Attr("type") == "unavailable" && p.Attr("from") == room+"/bobby" {
					for _, c := range p.Child(muc.NSUser, "x").Children() {
						codes = append(codes, c.Attr("code"))
					}
				}
			}
			if !strings.Contains(strings.Join(codes, ","), "322") {
				t.Fatalf("bob was not sent out with 322: %v", codes)
			}
		case "set_presence bob b.example r":
			p := bob.Presence()
			if p == nil || p.ChildText(xmlstream.NSClient, "show") != "away" || p.ChildText(xmlstream.NSClient, "status") != "In a meeting" ||
				p.ChildText(xmlstream.NSClient, "priority") != "5" || p.Attr("from") != "bob@b.example/r" {
				t.Fatalf("bob's session presence: %v", p)
			}
		}
	}
	if _, err := call(t, s, "set_presence", "bob", "b.example", "r", "unavailable", "", "", "0"); err != nil || bob.Presence() != nil {
		t.Fatalf("unavailable: %v %v", err, bob.Presence())
	}
}

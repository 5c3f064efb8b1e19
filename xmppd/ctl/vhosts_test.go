package ctl

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"xedge/xmppd/admin"
)

// ejabberdctl's per-host data commands reach xmppd with their arguments as
// given; get_roster prints ejabberdctl's tab-separated lines; an error of
// xmppd (an unknown host) is exit 1 with its message; a wrong argument count
// is a usage error that sends nothing.
func TestVhostDataCommandForms(t *testing.T) {
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	srv := admin.New(sock, nil)
	var got []string
	for _, name := range []string{"ban_account", "num_resources", "get_offline_count", "get_roster", "add_rosteritem", "delete_rosteritem", "get_vcard", "get_vcard2",
		"set_vcard", "set_vcard2", "set_nickname", "send_message", "create_room", "destroy_room"} {
		name := name
		srv.Handle(name, func(_ context.Context, a []string) (any, error) {
			got = append(got, name+" "+strings.Join(a, " "))
			if len(a) > 1 && a[1] == "c.example" {
				return nil, errors.New(`unknown host: host "c.example" is not served here (served: a.example, b.example)`)
			}
			switch name {
			case "get_roster":
				return []map[string]any{
					{"jid": "bob@c.example", "nick": "Bob", "subscription": "both", "ask": "none", "groups": []string{"friends", "work"}},
					{"jid": "carol@b.example", "nick": "", "subscription": "to", "ask": "none", "groups": []string{}},
				}, nil
			case "get_vcard":
				return "Alice of B", nil
			case "num_resources", "get_offline_count":
				return 2, nil
			}
			return "ok " + name, nil
		})
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(ctx) })
	checkForms(t, sock, &got, []formCase{
		{[]string{"ban_account", "alice", "b.example", "spam bot"}, 0, "ban_account alice b.example spam bot", "ok ban_account"},
		{[]string{"ban_account", "alice", "c.example", "x"}, 1, "ban_account alice c.example x", ""},
		{[]string{"ban_account", "alice", "b.example"}, 2, "", ""},
		{[]string{"num_resources", "alice", "b.example"}, 0, "num_resources alice b.example", "2\n"},
		{[]string{"get_offline_count", "alice", "b.example"}, 0, "get_offline_count alice b.example", "2\n"},
		{[]string{"get_roster", "alice", "b.example"}, 0, "get_roster alice b.example", "bob@c.example\tBob\tboth\tnone\tfriends;work\ncarol@b.example\t\tto\tnone\t\n"},
		{[]string{"add_rosteritem", "alice", "b.example", "bob", "c.example", "Bob", "friends;work", "both"}, 0, "add_rosteritem alice b.example bob c.example Bob friends;work both", ""},
		{[]string{"delete_rosteritem", "alice", "b.example", "bob", "c.example"}, 0, "delete_rosteritem alice b.example bob c.example", ""},
		{[]string{"get_vcard", "alice", "b.example", "FN"}, 0, "get_vcard alice b.example FN", "Alice of B\n"},
		{[]string{"get_vcard2", "alice", "b.example", "N", "FAMILY"}, 0, "get_vcard2 alice b.example N FAMILY", ""},
		{[]string{"set_vcard", "alice", "b.example", "FN", "Alice"}, 0, "set_vcard alice b.example FN Alice", ""},
		{[]string{"set_vcard2", "alice", "b.example", "N", "FAMILY", "Liddell"}, 0, "set_vcard2 alice b.example N FAMILY Liddell", ""},
		{[]string{"set_nickname", "alice", "b.example", "al"}, 0, "set_nickname alice b.example al", ""},
		{[]string{"send_message", "chat", "b.example", "alice@b.example", "", "hi"}, 0, "send_message chat b.example alice@b.example  hi", ""},
		{[]string{"create_room", "ops", "conference.b.example", "b.example"}, 0, "create_room ops conference.b.example b.example", ""},
		{[]string{"destroy_room", "ops", "conference.b.example"}, 0, "destroy_room ops conference.b.example", ""},
		{[]string{"destroy_room", "ops"}, 2, "", ""},
	}, "unknown host", false)
	for _, name := range []string{"import_piefxis", "export_piefxis", "export_piefxis_host", "get_roster", "create_room"} {
		if _, ok := Lookup(name); !ok {
			t.Errorf("%s is not a command", name)
		}
	}
}

package ctl

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"xedge/xmppd/admin"
)

// The room, purge, presence and private storage commands reach xmppd with
// their arguments as given and print as ejabberdctl does: nothing for a
// return-code command, one tab-separated line per option, affiliation or
// occupant; a refusal is exit 1 with the reason; a wrong count is exit 2.
func TestEjabberdAdminCommandForms(t *testing.T) {
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	srv := admin.New(sock, nil)
	var got []string
	for _, name := range []string{"get_room_options", "change_room_option", "set_room_affiliation", "get_room_affiliations", "get_room_occupants",
		"get_room_occupants_number", "delete_old_messages", "delete_old_mam_messages", "set_presence", "private_get", "private_set",
		"srg_create", "srg_delete", "srg_list", "srg_get_info", "srg_get_members", "srg_user_add", "srg_user_del"} {
		name := name
		srv.Handle(name, func(_ context.Context, a []string) (any, error) {
			got = append(got, name+" "+strings.Join(a, " "))
			if len(a) > 1 && a[0] == "nope" {
				return nil, errors.New("room nope@conference.b.example does not exist")
			}
			switch name {
			case "get_room_options":
				return []map[string]string{{"name": "title", "value": "Ops"}, {"name": "members_only", "value": "true"}}, nil
			case "get_room_affiliations":
				return []map[string]string{{"jid": "alice@b.example", "affiliation": "owner", "reason": ""}}, nil
			case "get_room_occupants":
				return []map[string]string{{"jid": "bob@b.example/r", "nick": "bobby", "role": "participant"}}, nil
			case "get_room_occupants_number":
				return 1, nil
			case "srg_list":
				return []string{"staff", "team"}, nil
			case "srg_get_members":
				return []string{"alice@b.example", "bob@b.example"}, nil
			case "srg_get_info":
				return []map[string]string{{"key": "label", "value": "Staff"}, {"key": "displayed_groups", "value": "staff"}, {"key": "description", "value": ""}}, nil
			case "private_get":
				return "<query xmlns='jabber:iq:private'><storage xmlns='storage:rosternotes'/></query>", nil
			}
			return "done " + name, nil
		})
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(ctx) })
	checkForms(t, sock, &got, []formCase{
		{[]string{"get_room_options", "ops", "conference.b.example"}, 0, "get_room_options ops conference.b.example", "title\tOps\nmembers_only\ttrue\n"},
		{[]string{"get_room_options", "nope", "conference.b.example"}, 1, "get_room_options nope conference.b.example", ""},
		{[]string{"change_room_option", "ops", "conference.b.example", "title", "Ops room"}, 0, "change_room_option ops conference.b.example title Ops room", ""},
		{[]string{"change_room_option", "ops", "conference.b.example", "title"}, 2, "", ""},
		{[]string{"set_room_affiliation", "ops", "conference.b.example", "bob@b.example", "member"}, 0, "set_room_affiliation ops conference.b.example bob@b.example member", ""},
		{[]string{"set_room_affiliation", "ops", "conference.b.example", "bob", "b.example", "member"}, 0, "set_room_affiliation ops conference.b.example bob b.example member", ""},
		{[]string{"get_room_affiliations", "ops", "conference.b.example"}, 0, "get_room_affiliations ops conference.b.example", "alice@b.example\towner\t\n"},
		{[]string{"get_room_occupants", "ops", "conference.b.example"}, 0, "get_room_occupants ops conference.b.example", "bob@b.example/r\tbobby\tparticipant\n"},
		{[]string{"get_room_occupants_number", "ops", "conference.b.example"}, 0, "get_room_occupants_number ops conference.b.example", "1\n"},
		{[]string{"delete_old_messages", "31"}, 0, "delete_old_messages 31", ""},
		{[]string{"delete_old_mam_messages", "all", "31"}, 0, "delete_old_mam_messages all 31", ""},
		{[]string{"delete_old_mam_messages", "31"}, 2, "", ""},
		{[]string{"set_presence", "bob", "b.example", "r", "available", "away", "In a meeting", "5"}, 0, "set_presence bob b.example r available away In a meeting 5", ""},
		{[]string{"private_get", "alice", "b.example", "storage", "storage:rosternotes"}, 0, "private_get alice b.example storage storage:rosternotes", "<query xmlns='jabber:iq:private'><storage xmlns='storage:rosternotes'/></query>\n"},
		{[]string{"private_set", "alice", "b.example", "<storage xmlns='storage:rosternotes'/>"}, 0, "private_set alice b.example <storage xmlns='storage:rosternotes'/>", ""},
		{[]string{"srg_create", "staff", "b.example", "Staff", "All staff", "staff"}, 0, "srg_create staff b.example Staff All staff staff", ""},
		{[]string{"srg_create", "staff", "b.example", "Staff", "All staff"}, 2, "", ""},
		{[]string{"srg_delete", "staff", "b.example"}, 0, "srg_delete staff b.example", ""},
		{[]string{"srg_list", "b.example"}, 0, "srg_list b.example", "staff\nteam\n"},
		{[]string{"srg_get_info", "staff", "b.example"}, 0, "srg_get_info staff b.example", "label\tStaff\ndisplayed_groups\tstaff\ndescription\t\n"},
		{[]string{"srg_get_members", "staff", "b.example"}, 0, "srg_get_members staff b.example", "alice@b.example\nbob@b.example\n"},
		{[]string{"srg_user_add", "alice", "b.example", "staff", "b.example"}, 0, "srg_user_add alice b.example staff b.example", ""},
		{[]string{"srg_user_del", "alice", "b.example", "staff", "b.example"}, 0, "srg_user_del alice b.example staff b.example", ""},
	}, "does not exist", true)
	// --json shows what a return-code command did.
	if c, o, _ := runCtl(t, sock, "--json", "delete_old_messages", "31"); c != 0 || !strings.Contains(o, "done delete_old_messages") {
		t.Errorf("--json delete_old_messages: %d %q", c, o)
	}
}

// formCase is one xmppctl run of a command-forms test: its arguments, the
// exit code, what xmppd got and what xmppctl printed.
type formCase struct {
	args []string
	code int
	sent string
	out  string
}

// checkForms runs each case against the admin socket sock, whose handlers
// append what they got to *got. A refused command's stderr must hold errWant;
// exact: the output must be out exactly (else contain it, when out is set).
func checkForms(t *testing.T, sock string, got *[]string, cases []formCase, errWant string, exact bool) {
	t.Helper()
	for _, tc := range cases {
		*got = nil
		c, o, e := runCtl(t, sock, tc.args...)
		if c != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, c, tc.code, e)
			continue
		}
		if c == 1 && !strings.Contains(e, errWant) {
			t.Errorf("%v: stderr %q", tc.args, e)
		}
		sent := ""
		if len(*got) > 0 {
			sent = (*got)[0]
		}
		if sent != tc.sent {
			t.Errorf("%v: xmppd got %q, want %q", tc.args, sent, tc.sent)
		}
		if exact && c == 0 && o != tc.out || !exact && tc.out != "" && o != tc.out && !strings.Contains(o, tc.out) {
			t.Errorf("%v: output %q, want %q", tc.args, o, tc.out)
		}
	}
}

package server

import (
	"context"
	"sort"
	"strings"
	"testing"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/roster"
)

// Shared roster groups: members of a group displaying itself get each
// other in their rosters (subscription both, the group's label), pushed to
// their clients; removing a member or the group takes the shared items out
// again; a contact a user had in their roster before keeps the user's item.
func TestAdminSharedRosterGroups(t *testing.T) {
	ctx := context.Background()
	s := hostsServer(t)
	ros := roster.New()
	if err := ros.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	s.vhostAdminHandlers(ros, nil, nil)
	srg := s.srgHandlers(ros)
	if err := srg.start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := call(t, s, "register", u, "b.example", "p"); err != nil {
			t.Fatal(err)
		}
	}
	alice := &recSess{adminSess: adminSess{j: jid.MustParse("alice@b.example/r")}}
	s.Router.Bind(ctx, alice)
	rosterOf := func(user string) string {
		items, err := ros.Items(s.userKey(user, "b.example"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, it := range items {
			out = append(out, it.JID+"/"+it.Name+"/"+it.Sub+"/"+strings.Join(it.Groups, ";"))
		}
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	steps := []struct {
		cmd   []string
		want  string // the result or, after "!", a part of the error
		check func()
	}{
		{[]string{"srg_create", "staff", "b.example", "Staff", "All staff", "staff"}, "shared roster group staff created at b.example", nil},
		{[]string{"srg_create", "ops", "c.example", "Ops", "", "ops"}, "!unknown host", nil},
		{[]string{"srg_create", "ops", "b.example", "Ops", "", "staff,nope"}, "!displayed group nope does not exist at b.example", nil},
		{[]string{"srg_user_add", "alice", "b.example", "staff", "b.example"}, "alice@b.example added to shared roster group staff at b.example", func() {
			if r := rosterOf("alice"); r != "" {
				t.Fatalf("alice alone in staff sees %q", r)
			}
		}},
		{[]string{"add_rosteritem", "carol", "b.example", "bob", "b.example", "Bobby", "", "to"}, "bob@b.example added to the roster of carol@b.example (subscription to)", nil},
		{[]string{"srg_user_add", "bob", "b.example", "staff", "b.example"}, "bob@b.example added to shared roster group staff at b.example", func() {
			if r := rosterOf("alice"); r != "bob@b.example/bob/both/Staff" {
				t.Fatalf("alice's roster: %q", r)
			}
			if r := rosterOf("bob"); r != "alice@b.example/alice/both/Staff" {
				t.Fatalf("bob's roster: %q", r)
			}
			if p := alice.take(); len(p) != 1 || p[0].Child(roster.NS, "query") == nil {
				t.Fatalf("alice's roster push: %v", p)
			}
		}},
		{[]string{"srg_user_add", "carol", "b.example", "staff", "b.example"}, "carol@b.example added to shared roster group staff at b.example", func() {
			if r := rosterOf("carol"); r != "alice@b.example/alice/both/Staff bob@b.example/Bobby/to/" {
				t.Fatalf("carol's roster (her own item for bob kept): %q", r)
			}
		}},
		{[]string{"srg_user_add", "mallory", "b.example", "staff", "b.example"}, "!account mallory@b.example does not exist", nil},
		{[]string{"srg_user_add", "alice", "b.example", "nope", "b.example"}, "!shared roster group nope does not exist at b.example", nil},
		{[]string{"srg_list", "b.example"}, "staff", nil},
		{[]string{"srg_get_members", "staff", "b.example"}, "alice@b.example,bob@b.example,carol@b.example", nil},
		{[]string{"srg_create", "staff", "b.example", "Team", "All staff", "staff"}, "shared roster group staff created at b.example", func() {
			if r := rosterOf("alice"); r != "bob@b.example/bob/both/Team carol@b.example/carol/both/Team" {
				t.Fatalf("alice's roster after the new label: %q", r)
			}
		}},
		{[]string{"srg_user_del", "bob", "b.example", "staff", "b.example"}, "bob@b.example removed from shared roster group staff at b.example", func() {
			if r := rosterOf("alice"); r != "carol@b.example/carol/both/Team" {
				t.Fatalf("alice's roster: %q", r)
			}
			if r := rosterOf("bob"); r != "" {
				t.Fatalf("bob's roster: %q", r)
			}
			if r := rosterOf("carol"); r != "alice@b.example/alice/both/Team bob@b.example/Bobby/to/" {
				t.Fatalf("carol's roster: %q", r)
			}
		}},
		{[]string{"srg_delete", "staff", "b.example"}, "shared roster group staff deleted at b.example", func() {
			if r := rosterOf("alice"); r != "" {
				t.Fatalf("alice's roster: %q", r)
			}
			if r := rosterOf("carol"); r != "bob@b.example/Bobby/to/" {
				t.Fatalf("carol's roster: %q", r)
			}
		}},
		{[]string{"srg_get_info", "staff", "b.example"}, "!does not exist", nil},
		{[]string{"srg_list", "b.example"}, "", nil},
	}
	for _, st := range steps {
		if runStep(t, s, adminStep{st.cmd, st.want}) && st.check != nil {
			st.check()
		}
	}
}

// adminStep is one command of a table-driven admin test and the result it
// must give or, after "!", a part of its error.
type adminStep struct {
	cmd  []string
	want string
}

// runStep runs st against s's admin commands and reports whether the
// command succeeded (as it had to).
func runStep(t *testing.T, s *Server, st adminStep) bool {
	t.Helper()
	out, err := call(t, s, st.cmd[0], st.cmd[1:]...)
	if want, ok := strings.CutPrefix(st.want, "!"); ok {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v: %q, %v; want an error with %q", st.cmd, out, err, want)
		}
		return false
	}
	if err != nil || out != st.want {
		t.Fatalf("%v: %q, %v; want %q", st.cmd, out, err, st.want)
	}
	return true
}

package server

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/jid"
	"xedge/xmppd/mod/last"
)

// delete_old_users(_vhost), get_last and set_last on two hosts: the records
// of the non-default host's accounts (user@host keys) are found, an online
// account is never deleted, one without a record is dated and kept. (The
// records of deleted accounts go through EvUserRemoved, which this bare
// server does not fire: TestLastActivityCluster checks it.)
func TestAdminLastActivity(t *testing.T) {
	ctx := context.Background()
	s := hostsServer(t)
	lm := last.New(last.Options{})
	if err := lm.Start(ctx, s.Router); err != nil {
		t.Fatal(err)
	}
	defer lm.Stop(ctx)
	s.lastHandlers(lm)
	for _, c := range [][]string{{"alice", "b.example", "p"}, {"bob", "b.example", "p"}, {"carol", "b.example", "p"}, {"alice", "a.example", "p"}, {"dave", "a.example", "p"}} {
		if _, err := call(t, s, "register", c...); err != nil {
			t.Fatal(err)
		}
	}
	old := strconv.FormatInt(time.Now().Add(-40*24*time.Hour).Unix(), 10)
	for _, c := range [][]string{{"alice", "b.example"}, {"bob", "b.example"}, {"alice", "a.example"}} {
		if _, err := call(t, s, "set_last", c[0], c[1], old, "gone"); err != nil {
			t.Fatal(err)
		}
	}
	s.Router.Bind(ctx, &adminSess{j: jid.MustParse("bob@b.example/r")})

	steps := []struct {
		cmd  []string
		want string // the result as JSON or, after "!", a part of the error
	}{
		{[]string{"get_last", "bob", "b.example"}, `"status":"ONLINE"`},
		{[]string{"get_last", "alice", "b.example"}, `"timestamp":"` + time.Unix(mustInt(t, old), 0).UTC().Format("2006-01-02T15:04:05Z") + `","status":"gone"}`},
		{[]string{"get_last", "carol", "b.example"}, `"status":"NOT FOUND"}`},
		{[]string{"get_last", "zed", "b.example"}, "!does not exist"},
		{[]string{"get_last", "alice", "c.example"}, "!unknown host"},
		{[]string{"set_last", "alice", "b.example", "yesterday", "x"}, "!invalid TIMESTAMP"},
		{[]string{"delete_old_users_vhost", "c.example", "30"}, "!unknown host"},
		{[]string{"delete_old_users", "-1"}, "!invalid DAYS"},
		// b.example: alice (old, offline) goes; bob (as old, online) and
		// carol (no record: dated) stay; a.example's alice is not touched.
		{[]string{"delete_old_users_vhost", "b.example", "30"}, `{"deleted":["alice@b.example"],"noticed":1,"message":"Deleted 1 users: [alice@b.example]"}`},
		{[]string{"get_last", "carol", "b.example"}, `"status":"NOT FOUND","noticed_at":`},
		{[]string{"check_account", "alice", "b.example"}, "!"},
		{[]string{"check_account", "alice", "a.example"}, ``},
		// Every host: a.example's alice goes, dave is dated.
		{[]string{"delete_old_users", "30"}, `{"deleted":["alice@a.example"],"noticed":1,"message":"Deleted 1 users: [alice@a.example]"}`},
		{[]string{"delete_old_users", "30"}, `{"deleted":[],"noticed":0,"message":"Deleted 0 users: []"}`},
	}
	for _, st := range steps {
		got, err := asJSON(t, s, st.cmd[0], st.cmd[1:]...)
		if w, ok := strings.CutPrefix(st.want, "!"); ok {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %s %v, want an error with %q", st.cmd, got, err, w)
			}
			continue
		}
		if err != nil || !strings.Contains(got, st.want) {
			t.Errorf("%v: %s %v, want %s", st.cmd, got, err, st.want)
		}
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLastStamp(t *testing.T) {
	if got := lastStamp(time.Date(2026, 12, 6, 21, 58, 3, 0, time.UTC)); got != "2026-12-06T21:58:03Z" {
		t.Errorf("whole seconds: %s", got)
	}
	if got := lastStamp(time.Date(2026, 12, 6, 21, 58, 3, 60109000, time.FixedZone("x", 3600))); got != "2026-12-06T20:58:03.060109Z" {
		t.Errorf("with microseconds: %s", got)
	}
}

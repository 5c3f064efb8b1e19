package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"xedge/xmppd/accounts"
	"xedge/xmppd/admin"
	"xedge/xmppd/c2s"
	"xedge/xmppd/config"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/jid"
	"xedge/xmppd/module"
	"xedge/xmppd/router"
	"xedge/xmppd/xmlstream"
)

// hostsServer is the part of a Server the admin commands use, serving
// a.example (default) and b.example with internal accounts, wired as the
// server wires virtual hosts (accounts.Hosts on the router).
func hostsServer(t *testing.T) *Server {
	t.Helper()
	ctx := context.Background()
	cfg := config.Defaults()
	cfg.Domain, cfg.Hosts = "a.example", config.StringList{"a.example", "b.example"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := memstore.New("n1")
	s := &Server{cfg: &cfg, log: log, level: new(slog.LevelVar)}
	s.Store = st
	s.Router = router.New(router.Config{Domain: cfg.Domain, Hosts: cfg.HostNames(), Node: "n1", Store: st, Logger: log})
	s.Accounts = accounts.New(st, cfg.Domain, nil)
	if err := s.Accounts.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hs := accounts.NewHosts(cfg.Domain)
	for _, d := range cfg.HostNames() {
		hs.Set(d, s.Accounts.ForHost(d))
	}
	s.Router.SetAccounts(hs)
	s.C2S = c2s.New(c2s.Config{Domain: cfg.Domain, Logger: log}, s.Router, s.Accounts)
	s.Admin = admin.New(filepath.Join(t.TempDir(), "a.sock"), log)
	s.adminHandlers()
	return s
}

type adminSess struct {
	j jid.JID
	module.Session
}

func (s *adminSess) ID() string                     { return s.j.String() }
func (s *adminSess) JID() jid.JID                   { return s.j }
func (s *adminSess) Send(*xmlstream.Element)        {}
func (s *adminSess) Presence() *xmlstream.Element   { return nil }
func (s *adminSess) SetPresence(*xmlstream.Element) {}
func (s *adminSess) Priority() int                  { return 0 }
func (s *adminSess) Close(string, string)           {}
func (s *adminSess) Value(any) any                  { return nil }
func (s *adminSess) SetValue(any, any)              {}
func (s *adminSess) Interested() bool               { return false }
func (s *adminSess) SetInterested()                 {}

// alice@a.example and alice@b.example are two accounts: ejabberdctl's forms
// and xmppctl's user@host act on the named host only, a host not served is an
// "unknown host", and the per-host listings and counts see each host's own.
func TestAdminVirtualHosts(t *testing.T) {
	s := hostsServer(t)
	steps := []adminStep{ // the result (joined with ,) or, after "!", a part of the error
		{[]string{"registered_vhosts"}, "a.example,b.example"},
		{[]string{"register", "alice", "a.example", "pa"}, "user alice@a.example registered"},
		{[]string{"register", "alice", "b.example", "pb"}, "user alice@b.example registered"},
		{[]string{"register", "alice@b.example", "x"}, "!exists"},
		{[]string{"register", "Bob@B.example", "pbob"}, "user bob@b.example registered"},
		{[]string{"register", "carol", "pc"}, "user carol@a.example registered"},
		{[]string{"register", "mallory", "c.example", "pm"}, `!unknown host: host "c.example" is not served here (served: a.example, b.example)`},
		{[]string{"register", "mallory@c.example", "pm"}, "!unknown host"},
		{[]string{"registered_users", "a.example"}, "alice,carol"},
		{[]string{"registered_users", "b.example"}, "alice,bob"},
		{[]string{"registered_users", "c.example"}, "!unknown host"},
		{[]string{"users"}, "alice,carol,alice@b.example,bob@b.example"},
		{[]string{"check_account", "bob", "b.example"}, "account bob@b.example exists"},
		{[]string{"check_account", "bob", "a.example"}, "!does not exist"},
		{[]string{"check_account", "bob@b.example"}, "account bob@b.example exists"},
		{[]string{"check_password", "alice", "b.example", "pb"}, "password matches"},
		{[]string{"check_password", "alice", "b.example", "pa"}, "!does not match"},
		{[]string{"check_password", "alice", "pa"}, "password matches"},
		{[]string{"change_password", "alice", "b.example", "pb2"}, "password of alice@b.example changed"},
		{[]string{"check_password", "alice@b.example", "pb2"}, "password matches"},
		{[]string{"check_password", "alice", "a.example", "pa"}, "password matches"},
		{[]string{"unregister", "alice", "b.example"}, "user alice@b.example removed"},
		{[]string{"check_account", "alice", "b.example"}, "!does not exist"},
		{[]string{"check_account", "alice", "a.example"}, "account alice@a.example exists"},
		{[]string{"unregister", "alice", "c.example"}, "!unknown host"},
		{[]string{"kick", "alice@c.example"}, "!unknown host"},
		{[]string{"kick_session", "alice", "c.example", "r"}, "!unknown host"},
		{[]string{"user_sessions_info", "alice", "c.example"}, "!unknown host"},
	}
	for _, st := range steps {
		runStep(t, s, st)
	}
	ctx := context.Background()
	for _, j := range []string{"carol@a.example/r1", "bob@b.example/r1", "bob@b.example/r2"} {
		s.Router.Bind(ctx, &adminSess{j: jid.MustParse(j)})
	}
	for _, c := range []struct {
		args []string
		want any
	}{
		{[]string{"connected_users_vhost", "a.example"}, []string{"carol@a.example/r1"}},
		{[]string{"connected_users_vhost", "b.example"}, []string{"bob@b.example/r1", "bob@b.example/r2"}},
		{[]string{"stats_host", "onlineusers", "b.example"}, 2},
		{[]string{"stats_host", "registeredusers", "b.example"}, 1},
		{[]string{"stats", "registeredusers", "a.example"}, 2},
		{[]string{"stats", "registeredusers"}, 3},
		{[]string{"stats", "onlineusers"}, 3},
	} {
		res, err := s.Admin.Call(ctx, c.args[0], c.args[1:])
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got, want := strings.Join(strings.Fields(strings.Trim(fmt.Sprint(res), "[]")), ","), strings.Join(strings.Fields(strings.Trim(fmt.Sprint(c.want), "[]")), ","); got != want {
			t.Fatalf("%v: %v, want %v", c.args, res, c.want)
		}
	}
	if _, err := s.Admin.Call(ctx, "connected_users_vhost", []string{"c.example"}); err == nil || !strings.Contains(err.Error(), "unknown host") {
		t.Fatalf("connected_users_vhost c.example: %v", err)
	}
	if n, err := s.Admin.Call(ctx, "kick_session", []string{"bob", "b.example", "r1", "bye"}); err != nil || !strings.Contains(n.(string), "kicked 1") {
		t.Fatalf("kick_session: %v %v", n, err)
	}
	res, err := s.Admin.Call(ctx, "status", nil)
	if err != nil || strings.Join(res.(Status).Hosts, ",") != "a.example,b.example" {
		t.Fatalf("status hosts: %+v %v", res, err)
	}
	vh, err := s.Admin.Call(ctx, "vhosts", nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := vh.([]HostView); len(v) != 2 || !v[0].Default || v[1].MUC != "conference.b.example" || v[1].Sessions != 2 || v[0].Sessions != 1 {
		t.Fatalf("vhosts: %+v", v)
	}
}

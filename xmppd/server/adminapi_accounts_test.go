package server

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"xedge/xmppd/accounts"
	"xedge/xmppd/admin"
	"xedge/xmppd/c2s"
	"xedge/xmppd/config"
	"xedge/xmppd/internal/memstore"
	"xedge/xmppd/router"
)

// adminServer is the part of a Server the account commands use, with the auth
// feature built for method (set *config.AuthConfig in mod).
func adminServer(t *testing.T, mod func(*config.AuthConfig)) *Server {
	t.Helper()
	ctx := context.Background()
	cfg := config.Defaults()
	cfg.Domain = "localhost"
	mod(&cfg.Auth)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := memstore.New("n1")
	s := &Server{cfg: &cfg, log: log}
	s.Router = router.New(router.Config{Domain: cfg.Domain, Node: "n1", Store: st, Logger: log})
	s.Accounts = accounts.New(st, cfg.Domain, nil)
	if err := s.Accounts.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s.Router.SetAccounts(s.Accounts)
	s.C2S = c2s.New(c2s.Config{Domain: cfg.Domain, Logger: log}, s.Router, s.Accounts)
	s.Admin = admin.New(filepath.Join(t.TempDir(), "a.sock"), log)
	s.adminHandlers()
	comps, err := buildAuth(s)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.Method == "external" {
		for _, c := range comps {
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Stop(context.Background()) })
		}
	}
	return s
}

func call(t *testing.T, s *Server, cmd string, args ...string) (string, error) {
	t.Helper()
	res, err := s.Admin.Call(context.Background(), cmd, args)
	if err != nil {
		return "", err
	}
	switch v := res.(type) {
	case string:
		return v, nil
	case []string:
		return strings.Join(v, ","), nil
	}
	t.Fatalf("%s: result %T %v", cmd, res, res)
	return "", nil
}

// With auth-method sql or ldap the account commands that would write or list
// the users table refuse with an error naming the method; nothing lands in the
// users table.
func TestAdminAccountsDirectoryBackends(t *testing.T) {
	for _, m := range []func(*config.AuthConfig){
		func(a *config.AuthConfig) {
			a.Method, a.SQLURL, a.SQLPasswordQuery = "sql", "postgres://xmppd@127.0.0.1:1/xmppd", "select password from users where username=$1"
		},
		func(a *config.AuthConfig) {
			a.Method, a.LDAPServers, a.LDAPBase = "ldap", []string{"127.0.0.1"}, "dc=example,dc=org"
		},
	} {
		s := adminServer(t, m)
		method := s.cfg.Auth.Method
		for _, c := range [][]string{
			{"register", "alice", "pw"}, {"register", "alice", "localhost", "pw"},
			{"passwd", "alice", "pw2"}, {"change_password", "alice", "localhost", "pw2"},
			{"unregister", "alice"}, {"users"}, {"registered_users", "localhost"}, {"stats", "registeredusers"},
		} {
			out, err := call(t, s, c[0], c[1:]...)
			if err == nil || !strings.Contains(err.Error(), "auth-method "+method) {
				t.Errorf("%s: %v with auth-method %s: %q, %v", method, c, method, out, err)
			}
		}
		if ok, _ := s.Accounts.Exists(context.Background(), "alice"); ok {
			t.Errorf("%s: register wrote the users table", method)
		}
	}
}

// With auth-method external the commands go to the script: register is its
// tryregister, passwd its setpass, check_account its isuser, check_password its
// auth, unregister its removeuser; listing refuses (the protocol cannot list).
// The users table stays empty.
func TestAdminAccountsExternal(t *testing.T) {
	script, err := filepath.Abs("../auth/testdata/extauth.py")
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("bob:old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := adminServer(t, func(a *config.AuthConfig) {
		a.Method, a.ExtauthProgram, a.ExtauthPoolSize = "external", "/usr/bin/python3 "+script+" "+users, 1
	})
	steps := []struct {
		cmd  []string
		fail string // "" success, else a part of the error
	}{
		{[]string{"check_account", "bob", "localhost"}, ""},
		{[]string{"check_account", "carol"}, "does not exist"},
		{[]string{"register", "carol", "c1"}, ""},
		{[]string{"check_account", "carol"}, ""},
		{[]string{"check_password", "carol", "c1"}, ""},
		{[]string{"register", "bob", "x"}, "refused by the script"},
		{[]string{"passwd", "bob", "new"}, ""},
		{[]string{"check_password", "bob", "new"}, ""},
		{[]string{"check_password", "bob", "old"}, "does not match"},
		{[]string{"unregister", "carol"}, ""},
		{[]string{"check_account", "carol"}, "does not exist"},
		{[]string{"users"}, "auth-method external"},
	}
	for _, st := range steps {
		out, err := call(t, s, st.cmd[0], st.cmd[1:]...)
		switch {
		case st.fail == "" && err != nil:
			t.Fatalf("%v: %v", st.cmd, err)
		case st.fail != "" && (err == nil || !strings.Contains(err.Error(), st.fail)):
			t.Fatalf("%v: %q, %v; want an error with %q", st.cmd, out, err, st.fail)
		}
	}
	if l, _ := s.Accounts.List(context.Background()); len(l) != 0 {
		t.Fatalf("the users table got %v", l)
	}
}

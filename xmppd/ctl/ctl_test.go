package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"xedge/xmppd/admin"
)

func TestRunAgainstAdminServer(t *testing.T) {
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	srv := admin.New(sock, nil)
	users := map[string]bool{}
	srv.Handle("register", func(_ context.Context, a []string) (any, error) {
		if users[a[0]] {
			return nil, errors.New("user exists")
		}
		users[a[0]] = true
		return "registered " + a[0], nil
	})
	srv.Handle("sessions", func(context.Context, []string) (any, error) {
		return []map[string]any{{"jid": "alice@localhost/r", "tls": true, "priority": 5}}, nil
	})
	srv.Handle("status", func(context.Context, []string) (any, error) {
		return map[string]any{"domain": "localhost", "storage": map[string]any{"mode": "durable"}}, nil
	})
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(ctx) })
	if st, _ := os.Stat(sock); st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v", st.Mode())
	}
	run := func(args ...string) (int, string, string) {
		var o, e bytes.Buffer
		code := Run(ctx, sock, args, &o, &e)
		return code, o.String(), e.String()
	}
	if c, o, _ := run("register", "alice", "pw"); c != 0 || !strings.Contains(o, "registered alice") {
		t.Fatal(c, o)
	}
	if c, _, e := run("register", "alice", "pw"); c != 1 || !strings.Contains(e, "user exists") {
		t.Fatal(c, e)
	}
	if c, o, _ := run("sessions"); c != 0 || !strings.Contains(o, "alice@localhost/r") || !strings.Contains(o, "JID") {
		t.Fatal(c, o)
	}
	if c, o, _ := run("--json", "status"); c != 0 || !strings.Contains(o, `"domain": "localhost"`) {
		t.Fatal(c, o)
	}
	if c, o, _ := run("status"); c != 0 || !strings.Contains(o, "mode:") || !strings.Contains(o, "is started with status: started") {
		t.Fatal(c, o)
	}
	if c, _, e := run("register", "x"); c != 2 || !strings.Contains(e, "usage") {
		t.Fatal(c, e)
	}
	if c, _, e := run("frobnicate"); c != 2 || !strings.Contains(e, "unknown command") {
		t.Fatal(c, e)
	}
	if c, _, e := run("users"); c != 1 || !strings.Contains(e, "unknown command") {
		t.Fatal(c, e) // the server does not implement it here
	}
	if c, _, e := run("list_cluster"); c != 1 || !strings.Contains(e, "not clustered") {
		t.Fatal(c, e) // ejabberdctl's cluster commands on a single node
	}
	if c, _, e := run("--socket", sock+".missing", "users"); c != 3 || !strings.Contains(e, "does not exist") {
		t.Fatal(c, e)
	}
	srv.Stop(ctx)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatal("socket not removed on stop")
	}
}

func TestExplainSocketErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENOENT)}, "does not exist"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EACCES)}, "permission denied"},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "nobody listens"},
	} {
		if got := explain("/x.sock", tc.err); !strings.Contains(got, tc.want) {
			t.Errorf("%v: %s", tc.err, got)
		}
	}
}

func TestRenderTablesShowsReplicasPerNode(t *testing.T) {
	raw := json.RawMessage(`[{"name":"roster","kind":"durable","copy":"disc","keys":3,"bytes":120,
		"replicas":{"n2":"nonvoter/durable","n1":"voter/durable/leader"}},
		{"name":"caps","kind":"durable","copy":"ram","keys":1,"bytes":9,"ram":"synced",
		"replicas":{"n2":"nonvoter/durable/unsynced","n1":"voter/durable/leader"}},
		{"name":"session","kind":"ephemeral","copy":"node","keys":0,"bytes":0}]`)
	var b strings.Builder
	if err := render(&b, "tables", nil, raw); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"REPLICAS", "RAM", "n1=voter/durable/leader,n2=nonvoter/durable", "session", "synced",
		"n2=nonvoter/durable/unsynced"} {
		if !strings.Contains(out, want) {
			t.Fatalf("tables output lacks %q:\n%s", want, out)
		}
	}
}

func runCtl(t *testing.T, sock string, args ...string) (int, string, string) {
	t.Helper()
	var o, e bytes.Buffer
	code := Run(context.Background(), sock, args, &o, &e)
	return code, o.String(), e.String()
}

// help and help COMMAND work without xmppd (no socket at all).
func TestHelp(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	c, o, _ := runCtl(t, sock, "help")
	if c != 0 {
		t.Fatalf("help: exit %d", c)
	}
	for _, want := range []string{"register USER [HOST] PASSWORD", "change_password", "registered_users", "connected_users",
		"kick_session", "mnesia", "completion bash", "help [COMMAND]"} {
		if !strings.Contains(o, want) {
			t.Errorf("help lacks %q:\n%s", want, o)
		}
	}
	c, o, _ = runCtl(t, sock, "help", "register")
	if c != 0 || !strings.Contains(o, "usage: xmppctl register USER [HOST] PASSWORD") || !strings.Contains(o, "xmppctl register alice b.example secret") {
		t.Fatalf("help register: %d\n%s", c, o)
	}
	if c, _, e := runCtl(t, sock, "help", "frobnicate"); c != 2 || !strings.Contains(e, "unknown command") {
		t.Fatalf("help frobnicate: %d %s", c, e)
	}
	c, o, _ = runCtl(t, sock, "--json", "help", "kick_session")
	var h Help
	if err := json.Unmarshal([]byte(o), &h); c != 0 || err != nil || h.Name != "kick_session" || h.MinArgs != 3 || h.MaxArgs != 4 {
		t.Fatalf("--json help kick_session: %d %v %+v", c, err, h)
	}
	c, o, _ = runCtl(t, sock, "--json", "help")
	var all []Help
	if err := json.Unmarshal([]byte(o), &all); c != 0 || err != nil || len(all) < 20 {
		t.Fatalf("--json help: %d %v %d commands", c, err, len(all))
	}
}

// Every ejabberdctl form reaches xmppd with its arguments as given (xmppd
// checks HOST), wrong argument counts are usage errors (exit 2), a refused
// check is exit 1, and every command also prints JSON.
func TestEjabberdctlForms(t *testing.T) {
	ctx := context.Background()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	srv := admin.New(sock, nil)
	var got []string
	for _, name := range []string{"register", "unregister", "passwd", "change_password", "registered_users", "connected_users",
		"connected_users_number", "user_sessions_info", "kick_session", "check_account", "check_password", "stats", "set_loglevel", "mnesia", "status", "users",
		"kick", "cluster"} {
		name := name
		srv.Handle(name, func(_ context.Context, a []string) (any, error) {
			got = append(got, name+" "+strings.Join(a, " "))
			switch name {
			case "connected_users":
				return []string{"alice@example.org/phone", "bob@example.org/pc"}, nil
			case "registered_users", "users":
				return []string{"alice", "bob"}, nil
			case "connected_users_number", "stats":
				return 2, nil
			case "check_account":
				if a[0] != "alice" {
					return nil, errors.New("account " + a[0] + "@example.org does not exist")
				}
			case "mnesia":
				return map[string]any{"storage": map[string]any{"mode": "durable", "leader": "n1"},
					"tables": []map[string]any{{"name": "roster", "kind": "durable", "copy": "disc", "keys": 3}}}, nil
			case "user_sessions_info":
				return []map[string]any{{"jid": "alice@example.org/phone", "tls": true}}, nil
			case "cluster":
				if a[0] == "members" {
					return []map[string]any{{"node": "n1", "addr": "10.0.0.1:7400", "state": "up"}}, nil
				}
			}
			return "ok " + name, nil
		})
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(ctx) })

	for _, tc := range []struct {
		args []string
		code int
		sent string // what xmppd received ("" = nothing)
		out  string
	}{
		{[]string{"register", "alice", "example.org", "secret"}, 0, "register alice example.org secret", "ok register"},
		{[]string{"register", "alice", "secret"}, 0, "register alice secret", "ok register"},
		{[]string{"register", "alice"}, 2, "", ""},
		{[]string{"unregister", "alice", "example.org"}, 0, "unregister alice example.org", ""},
		{[]string{"change_password", "alice", "example.org", "new"}, 0, "change_password alice example.org new", ""},
		{[]string{"change_password", "alice", "new"}, 2, "", ""},
		{[]string{"passwd", "alice", "example.org", "new"}, 0, "passwd alice example.org new", ""},
		{[]string{"registered_users", "example.org"}, 0, "registered_users example.org", "alice\nbob\n"},
		{[]string{"registered_users"}, 2, "", ""},
		{[]string{"connected_users"}, 0, "connected_users ", "alice@example.org/phone\nbob@example.org/pc\n"},
		{[]string{"connected_users_number"}, 0, "connected_users_number ", "2\n"},
		{[]string{"kick_session", "alice", "example.org", "phone", "Bye now"}, 0, "kick_session alice example.org phone Bye now", ""},
		{[]string{"kick_session", "alice", "example.org"}, 2, "", ""},
		{[]string{"check_account", "alice", "example.org"}, 0, "check_account alice example.org", ""},
		{[]string{"check_account", "nobody", "example.org"}, 1, "check_account nobody example.org", ""},
		{[]string{"check_password", "alice", "example.org", "pw"}, 0, "check_password alice example.org pw", ""},
		{[]string{"stats", "onlineusers"}, 0, "stats onlineusers", "2\n"},
		{[]string{"set_loglevel", "debug"}, 0, "set_loglevel debug", ""},
		{[]string{"user_sessions_info", "alice", "example.org"}, 0, "user_sessions_info alice example.org", "alice@example.org/phone"},
		{[]string{"mnesia", "info"}, 0, "mnesia info", "roster"},
		{[]string{"mnesia"}, 0, "mnesia ", "leader:"},
		{[]string{"status"}, 0, "status ", ""},
		{[]string{"kick_user", "alice", "example.org"}, 0, "kick alice@example.org", ""},
		{[]string{"list_cluster"}, 0, "cluster members", "10.0.0.1:7400"},
		{[]string{"join_cluster", "n1"}, 0, "cluster join n1", ""},
		{[]string{"leave_cluster"}, 0, "cluster leave", ""},
	} {
		got = nil
		c, o, e := runCtl(t, sock, tc.args...)
		if c != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, c, tc.code, e)
			continue
		}
		sent := ""
		if len(got) > 0 {
			sent = got[0]
		}
		if sent != tc.sent {
			t.Errorf("%v: xmppd got %q, want %q", tc.args, sent, tc.sent)
		}
		if tc.out != "" && !strings.Contains(o, tc.out) {
			t.Errorf("%v: output %q lacks %q", tc.args, o, tc.out)
		}
		if tc.code != 0 {
			continue
		}
		// --json for every command: valid JSON on stdout.
		c, o, _ = runCtl(t, sock, append([]string{"--json"}, tc.args...)...)
		var v any
		if err := json.Unmarshal([]byte(o), &v); c != 0 || err != nil {
			t.Errorf("--json %v: exit %d, %v: %q", tc.args, c, err, o)
		}
	}
}

// The completion script works in a real bash: command names, the words of a
// command's first argument, command names after help, flags.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash: %v", err) // Debian always has bash
	}
	script := filepath.Join(t.TempDir(), "xmppctl.bash")
	c, o, _ := runCtl(t, "", "completion", "bash")
	if c != 0 {
		t.Fatal("completion bash failed")
	}
	if err := os.WriteFile(script, []byte(o), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(line string) string {
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		var q []string
		for _, w := range words {
			q = append(q, "'"+w+"'")
		}
		prog := fmt.Sprintf(`source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _xmppctl; echo "${COMPREPLY[*]}"`, script, strings.Join(q, " "), len(words)-1)
		out, err := exec.Command(bash, "--norc", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for line, want := range map[string]string{
		"xmppctl reg":                "register registered_users registered_vhosts",
		"xmppctl help kick":          "kick kick_session kick_user",
		"xmppctl loglevel ":          "get set",
		"xmppctl loglevel set d":     "debug",
		"xmppctl --json sta":         "stats stats_host status",
		"xmppctl --socket /x st":     "stats stats_host status storage",
		"xmppctl stats online":       "onlineusers onlineusersnode",
		"xmppctl --j":                "--json",
		"xmppctl completion ":        "bash",
		"xmppctl register alice ex":  "",
		"xmppctl set_loglevel w":     "warn",
		"xmppctl mnesia ":            "info",
		"xmppctl change_pa":          "change_password",
		"xmppctl connected_users_nu": "connected_users_number",
	} {
		if got := complete(line); got != want {
			t.Errorf("complete %q = %q, want %q", line, got, want)
		}
	}
}

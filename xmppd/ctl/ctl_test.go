package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
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
	if c, o, _ := run("status"); c != 0 || !strings.Contains(o, "mode:") {
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

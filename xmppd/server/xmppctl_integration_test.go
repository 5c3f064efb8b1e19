//go:build integration

package server_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"xedge/xmppd/internal/testenv"
)

// xmppctl end to end against a running xmppd: every command, human and JSON output,
// errors on stderr with non-zero exit codes.
func TestXmppctl(t *testing.T) {
	s := testenv.Start(t, testenv.Options{})
	st, err := os.Stat(s.Socket)
	if err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("admin socket: %v %v", st.Mode(), err)
	}
	ctl := func(wantCode int, args ...string) (string, string) {
		t.Helper()
		o, e, code := s.Ctl(args...)
		if code != wantCode {
			t.Fatalf("xmppctl %v: exit %d (want %d)\nstdout: %s\nstderr: %s", args, code, wantCode, o, e)
		}
		return o, e
	}
	ctl(0, "register", "alice", "secret")
	ctl(0, "register", "bob", "secret")
	if _, e := ctl(1, "register", "alice", "again"); !strings.Contains(e, "exists") {
		t.Fatalf("duplicate register: %s", e)
	}
	if _, e := ctl(1, "register", "bad name", "x"); !strings.Contains(e, "invalid") {
		t.Fatalf("invalid user: %s", e)
	}
	// USER@HOST names a host (virtual hosts): one not served is refused.
	if _, e := ctl(1, "register", "bad@name", "x"); !strings.Contains(e, `unknown host: host "name" is not served here`) {
		t.Fatalf("user of a host not served: %s", e)
	}
	if o, _ := ctl(0, "users"); o != "alice\nbob\n" {
		t.Fatalf("users: %q", o)
	}
	o, _ := ctl(0, "--json", "users")
	var users []string
	if json.Unmarshal([]byte(o), &users) != nil || len(users) != 2 {
		t.Fatalf("users --json: %s", o)
	}
	ctl(0, "passwd", "alice", "newpw")
	if _, e := ctl(1, "passwd", "nobody", "x"); !strings.Contains(e, "no such user") {
		t.Fatal(e)
	}
	r := testenv.DialTLS(t, s)
	r.LoginPlain(s.Domain, "alice", "newpw", "desk")
	o, _ = ctl(0, "sessions")
	if !strings.Contains(o, "JID") || !strings.Contains(o, "alice@localhost/desk") || !strings.Contains(o, "PLAIN") {
		t.Fatalf("sessions: %s", o)
	}
	o, _ = ctl(0, "status")
	for _, want := range []string{"domain:", "localhost", "sessions:", "1", "starttls 127.0.0.1:", "direct-tls 127.0.0.1:", "version:", "uptime:", "mode:"} {
		if !strings.Contains(o, want) {
			t.Errorf("status lacks %q: %s", want, o)
		}
	}
	if o, _ := ctl(0, "tables"); !strings.Contains(o, "users") || !strings.Contains(o, "session") {
		t.Errorf("tables: %s", o)
	}
	if o, _ := ctl(0, "storage"); !strings.Contains(o, "mode:") {
		t.Errorf("storage: %s", o)
	}
	if o, _ := ctl(0, "loglevel"); strings.TrimSpace(o) != "debug" {
		t.Errorf("loglevel: %q", o)
	}
	if o, _ := ctl(0, "loglevel", "set", "warn"); strings.TrimSpace(o) != "warn" {
		t.Errorf("loglevel set: %q", o)
	}
	ctl(1, "loglevel", "set", "loud")
	ctl(0, "kick", "alice@localhost/desk")
	if got := r.Expect("</stream:stream>", 5*sec); !strings.Contains(got, "<policy-violation") {
		t.Fatalf("kicked session: %s", got)
	}
	if _, e := ctl(1, "kick", "alice@localhost/desk"); !strings.Contains(e, "no session") {
		t.Fatal(e)
	}
	ctl(0, "unregister", "bob")
	if o, _ := ctl(0, "users"); o != "alice\n" {
		t.Fatalf("after unregister: %q", o)
	}
	if _, e := ctl(2, "register", "onlyname"); !strings.Contains(e, "usage") {
		t.Fatal(e)
	}
	if _, e := ctl(2, "nosuchcommand"); !strings.Contains(e, "unknown command") {
		t.Fatal(e)
	}
	o, e, code := s.Ctl("--socket", s.Socket+".missing", "status")
	_ = o
	if code != 3 || !strings.Contains(e, "does not exist") {
		t.Fatalf("missing socket: %d %s", code, e)
	}
	// The socket file is removed on stop.
	s.Stop()
	if _, err := os.Stat(s.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

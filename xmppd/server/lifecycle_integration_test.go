//go:build integration

package server_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// The defaults of `make run`: the banner says where xmppd listens and how to add a
// user; the self-signed certificate made on first start is kept across restarts,
// and so are the accounts; SIGHUP re-reads the log level; SIGTERM stops gracefully
// (exit 0, socket removed, clients told <system-shutdown/>).
func TestLifecycle(t *testing.T) {
	s := testenv.Start(t, testenv.Options{Config: "log-level: info\n"})
	logs := s.Logs()
	for _, want := range []string{"client connections (STARTTLS):", "client connections (direct TLS, 0368):", "admin socket:", "register alice secret", "in-band"} {
		if !strings.Contains(logs, want) {
			t.Errorf("banner lacks %q:\n%s", want, logs)
		}
	}
	cert := filepath.Join(s.Data, "tls", "localhost.crt")
	c1, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(s.Data, "tls", "localhost.key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode())
	}
	s.Register(t, "alice", "secret")

	if o, _, _ := s.Ctl("loglevel"); strings.TrimSpace(o) != "info" {
		t.Fatalf("loglevel %q", o)
	}
	os.WriteFile(s.ConfigFile, []byte("log-level: debug\n"), 0o600)
	s.Signal(syscall.SIGHUP)
	ok := false
	for i := 0; i < 50 && !ok; i++ {
		time.Sleep(100 * time.Millisecond)
		o, _, _ := s.Ctl("loglevel")
		ok = strings.TrimSpace(o) == "debug"
	}
	if !ok {
		t.Fatalf("SIGHUP did not apply the new log level:\n%s", s.Logs())
	}

	// A second xmppd on the same data directory refuses to start, before touching
	// the storage.
	bin, _ := testenv.Binaries(t)
	out, err := exec.Command(bin, "--data", s.Data, "--c2s", "127.0.0.1:0", "--c2s-tls", "", "--admin-socket", s.Socket+"2").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another xmppd") {
		t.Fatalf("second xmppd on the same data: %v\n%s", err, out)
	}

	r := testenv.DialTLS(t, s)
	r.LoginPlain(s.Domain, "alice", "secret", "r")
	s.Signal(syscall.SIGTERM)
	if got := r.Expect("</stream:stream>", 5*sec); !strings.Contains(got, "<system-shutdown") {
		t.Fatalf("client at stop: %s", got)
	}
	if code := s.ExitCode(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, s.Logs())
	}
	if _, err := os.Stat(s.Socket); !os.IsNotExist(err) {
		t.Fatal("admin socket left behind")
	}

	s2 := testenv.Start(t, testenv.Options{Data: s.Data})
	c2, _ := os.ReadFile(cert)
	if string(c1) != string(c2) {
		t.Fatal("certificate not kept across restarts")
	}
	if o, _, _ := s2.Ctl("users"); o != "alice\n" {
		t.Fatalf("accounts after restart: %q", o)
	}
	r2 := testenv.DialTLS(t, s2)
	r2.LoginPlain(s2.Domain, "alice", "secret", "again")
}

//go:build integration

package servers

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"xedge/bench/loadgen"
)

// TestPeersStartRegisterLogin starts each peer server from Debian's packages with
// the benchmark configuration, registers a user in-band and logs in with and
// without STARTTLS, then stops the server by PID.
func TestPeersStartRegisterLogin(t *testing.T) {
	for _, kind := range []string{Ejabberd, Prosody} {
		t.Run(kind, func(t *testing.T) {
			bin := map[string]string{Ejabberd: "/usr/sbin/ejabberdctl", Prosody: "/usr/bin/prosody"}[kind]
			if _, err := exec.LookPath(bin); err != nil {
				t.Fatalf("%s missing (build/setup.sh bench installs it): %v", bin, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			s, err := New(Config{Kind: kind, CPU: 0})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Remove(false) })
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if kind == Ejabberd && HasSQLite() {
				// Start opened ejabberd's SQL pool (which creates the
				// database): a lazily opened pool crashes the second of two
				// first queries (mod_mam's preferences IQ failed so).
				if _, err := os.Stat(filepath.Join(s.Dir(), "spool", "ejabberd.db")); err != nil {
					t.Fatalf("SQL pool not open after Start: %v", err)
				}
			}
			opts := loadgen.Options{Addr: s.Addr, Domain: s.Domain(), Timeout: 10 * time.Second}
			c, err := loadgen.Dial(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Register("alice", "secret"); err != nil {
				t.Fatal(err)
			}
			c.Close()
			c, err = loadgen.Dial(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Register("alice", "secret"); !errors.Is(err, loadgen.ErrConflict) {
				t.Fatalf("second registration: %v, want conflict", err)
			}
			c.Close()
			for _, tls := range []bool{false, true} {
				o := opts
				o.StartTLS = tls
				c, err := loadgen.Login(ctx, o, "alice", "secret")
				if err != nil {
					t.Fatalf("login (tls=%v): %v", tls, err)
				}
				if c.JID == "" || c.TLS != tls {
					t.Fatalf("jid %q tls %v", c.JID, c.TLS)
				}
				c.Close()
			}
			if _, err := loadgen.Login(ctx, opts, "alice", "wrong"); err == nil {
				t.Fatal("login with a wrong password succeeded")
			}
			rss, err := s.RSS()
			if err != nil || rss < 1<<20 {
				t.Fatalf("rss %d, %v", rss, err)
			}
			pid := s.PID()
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}
			if err := exec.Command("kill", "-0", itoa(pid)).Run(); err == nil {
				t.Fatalf("pid %d still alive after Stop", pid)
			}
		})
	}
}

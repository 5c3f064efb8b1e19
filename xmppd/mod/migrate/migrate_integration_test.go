//go:build integration

package migrate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"xedge/bench/servers"
	"xedge/xmppd/internal/scram"
	"xedge/xmppd/internal/testenv"
	"xedge/xmppd/mod/migrate"
	"xedge/xmppd/piefxis"
)

// The sites the test migrates: a real ejabberd and a real Prosody (Debian's
// packages, started by the test), filled by slixmpp clients (testdata/accounts.py)
// and ejabberdctl/prosodyctl, exported by their own tools.

const ejabberdYML = `loglevel: warning
hosts:
  - "ej.example"
  - "ej2.example"
certfiles:
  - "@CERTKEY@"
listen:
  -
    port: @PORT@
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    shaper: none
  -
    port: @APIPORT@
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
api_permissions:
  "loopback":
    from: mod_http_api
    who:
      ip: 127.0.0.1/8
    what: "*"
auth_method: internal
auth_password_format: scram
shaper_rules:
  c2s_shaper: none
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
modules:
  mod_roster: {}
  mod_vcard: {}
  mod_private: {}
  mod_offline: {}
  mod_privacy: {}
  mod_blocking: {}
  mod_disco: {}
  mod_admin_extra: {}
  mod_http_api: {}
`

const prosodyCfg = `daemonize = false
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
interfaces = { "127.0.0.1" }
c2s_ports = { @PORT@ }
c2s_direct_tls_ports = { }
s2s_ports = { }
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "vcard"; "private"; "blocklist"; "offline"; }
modules_disabled = { "s2s"; }
authentication = "internal_hashed"
storage = "internal"
log = { { levels = { min = "warn" }; to = "file"; filename = "@DIR@/prosody.log" }; }
ssl = { certificate = "@DIR@/cert.pem"; key = "@DIR@/key.pem"; }
VirtualHost "pr.example"
`

// The stores Prosody 0.12's xep0227 driver supports (its blocklist and offline
// stores are refused with "unsupported-datastore").
const prosodyMigrator = `input {
	hosts = { ["pr.example"] = { "accounts", "roster", "vcard", "private" } };
	type = "internal";
	path = "@DIR@/data";
}
output { type = "xep0227"; }
`

var passwords = map[string]string{"alice": "al1ce pw&<'", "bob": "b0b-secret", "carol": "carol"}

// passwords2 are the accounts of ejabberd's second virtual host, ej2.example:
// another alice (another account, another password) and dave.
var passwords2 = map[string]string{"alice": "alice of ej2", "dave": "d4ve"}

func fill(s string, vars map[string]string) string {
	for k, v := range vars {
		s = strings.ReplaceAll(s, "@"+k+"@", v)
	}
	return s
}

func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("[%s] %.1fs %s %s", time.Now().Format("15:04:05"), time.Since(start).Seconds(), filepath.Base(name), strings.Join(args[:min(len(args), 4)], " "))
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// accounts runs testdata/accounts.py (populate or verify) against host:port.
func accounts(t *testing.T, addr, domain string, args ...string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	out := run(t, 180*time.Second, testenv.Python, append([]string{"-u", "testdata/accounts.py", args[0], host, port, domain}, args[1:]...)...)
	if !strings.Contains(out, "PASS") {
		t.Fatalf("accounts.py %s: %s", args[0], out)
	}
}

func chown(t *testing.T, dir, user string) {
	t.Helper()
	run(t, 10*time.Second, "chown", "-R", user+":", dir)
}

func startPeer(t *testing.T, kind, domain, cfg string) *servers.Server {
	t.Helper()
	parent := t.TempDir() // the server runs as its own user: let it reach its directory
	os.Chmod(parent, 0o755)
	os.Chmod(filepath.Dir(parent), 0o755)
	// The configuration is given as the template servers.New fills (@PORT@,
	// @DIR@, @CERTKEY@), so what it derives from the configuration (ejabberd's
	// SQL pool, opened at start when there is one) is derived from this one.
	s, err := servers.New(servers.Config{Kind: kind, Domain: domain, Dir: parent, Log: slog.Default(), Template: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Remove(false) })
	chown(t, s.Dir(), kind)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// exportEjabberd makes ejabberd's site and its export: ejabberdctl's commands
// register the users and add what they can (a roster item, bob's vCard, private XML);
// slixmpp clients do the rest as users would (subscriptions both ways, pending
// requests, vCard, bookmarks, XEP-0191 block, an offline message).
func exportEjabberd(t *testing.T) string {
	apiAddr := testenv.FreeAddr(t, "127.0.0.1")
	_, apiPort, _ := strings.Cut(apiAddr, ":")
	ej := startPeer(t, servers.Ejabberd, "ej.example", strings.ReplaceAll(ejabberdYML, "@APIPORT@", apiPort))
	d := ej.Dir()
	// ejabberdctl's commands through ejabberd's HTTP API (mod_http_api: the same
	// commands, without starting an Erlang VM per call).
	ctl := func(cmd string, args map[string]string) {
		t.Helper()
		b, _ := json.Marshal(args)
		resp, err := http.Post("http://"+apiAddr+"/api/"+cmd, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatalf("ejabberd api %s: %v", cmd, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("ejabberd api %s %s: %s %s", cmd, b, resp.Status, body)
		}
	}
	for u, p := range passwords {
		ctl("register", map[string]string{"user": u, "host": "ej.example", "password": p})
	}
	ctl("add_rosteritem", map[string]string{"localuser": "bob", "localhost": "ej.example", "user": "erin", "host": "remote.example",
		"nick": "Erin", "group": "Remote", "subs": "to"})
	ctl("set_vcard", map[string]string{"user": "bob", "host": "ej.example", "name": "FN", "content": "Bob Builder"})
	ctl("private_set", map[string]string{"user": "bob", "host": "ej.example", "element": "<roster xmlns='roster:delimiter'>::</roster>"})
	for u, p := range passwords2 {
		ctl("register", map[string]string{"user": u, "host": "ej2.example", "password": p})
	}
	ctl("add_rosteritem", map[string]string{"localuser": "alice", "localhost": "ej2.example", "user": "alice", "host": "ej.example",
		"nick": "Alice on ej", "group": "Other host", "subs": "both"})
	ctl("set_vcard", map[string]string{"user": "dave", "host": "ej2.example", "name": "FN", "content": "Dave of ej2"})
	accounts(t, ej.Addr, "ej.example", "populate")
	out := filepath.Join(d, "export")
	os.MkdirAll(out, 0o750)
	chown(t, out, "ejabberd")
	ctl("export_piefxis", map[string]string{"dir": out})
	main, _ := filepath.Glob(filepath.Join(out, "*[0-9].xml"))
	if hosts, _ := filepath.Glob(filepath.Join(out, "*_ej*.xml")); len(main) != 1 || len(hosts) != 2 {
		ls, _ := os.ReadDir(out)
		t.Fatalf("ejabberd export: %v", ls)
	}
	ej.Stop()
	return main[0]
}

// exportProsody makes Prosody's site and exports it with prosody-migrator into
// its xep0227 store. That store writes under Prosody's compiled-in data directory
// (/var/lib/prosody); the migrator runs in a private mount namespace where the
// test's directory is bind-mounted there.
func exportProsody(t *testing.T) string {
	pr := startPeer(t, servers.Prosody, "pr.example", prosodyCfg)
	d := pr.Dir()
	for u, p := range passwords {
		run(t, 30*time.Second, "runuser", "-u", "prosody", "--", "prosodyctl", "--config", filepath.Join(d, "prosody.cfg.lua"), "register", u, "pr.example", p)
	}
	accounts(t, pr.Addr, "pr.example", "populate")
	pr.Stop()
	out := filepath.Join(d, "export")
	os.MkdirAll(out, 0o750)
	cfg := filepath.Join(d, "migrator.cfg.lua")
	os.WriteFile(cfg, []byte(fill(prosodyMigrator, map[string]string{"DIR": d})), 0o640)
	chown(t, out, "prosody")
	chown(t, d, "prosody")
	run(t, 60*time.Second, "unshare", "-m", "sh", "-c", "mount --bind \"$1\" /var/lib/prosody && exec prosody-migrator --config \"$2\" input output", "sh", out, cfg)
	files, _ := filepath.Glob(filepath.Join(out, "*@pr.example.xml"))
	if len(files) != 3 {
		t.Fatalf("prosody export: %v", files)
	}
	return out
}

// readUsers reads the users of host ("": every host, which must then not
// repeat a name) of a file, or of a directory of Prosody's files.
func readUsers(t *testing.T, path string, host ...string) map[string]*piefxis.User {
	t.Helper()
	out := map[string]*piefxis.User{}
	files := []string{path}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		files, _ = filepath.Glob(filepath.Join(path, "*@*.xml"))
	}
	for _, f := range files {
		var r piefxis.Reader
		if err := r.ReadFile(f, func(h string, u *piefxis.User) error {
			if len(host) == 0 || h == host[0] {
				out[u.Name] = u
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// importInto runs xmppctl import-piefxis against x and checks its progress output.
func importInto(t *testing.T, x *testenv.Server, path string) string {
	t.Helper()
	start := time.Now()
	o, e, code := x.Ctl("import-piefxis", path)
	t.Logf("[%s] %.1fs xmppctl import-piefxis", time.Now().Format("15:04:05"), time.Since(start).Seconds())
	if code != 0 || !strings.Contains(o, "import of "+path+" done") {
		t.Fatalf("import-piefxis: exit %d\n%s%s\n%s", code, o, e, x.Logs())
	}
	return o
}

// exportFrom runs xmppctl export-piefxis against x and returns the main file
// of the export (ejabberd's layout: STAMP.xml including STAMP_HOST.xml for
// each of the hosts).
func exportFrom(t *testing.T, x *testenv.Server, hosts ...string) string {
	t.Helper()
	dir := t.TempDir()
	start := time.Now()
	o, e, code := x.Ctl("export-piefxis", dir)
	t.Logf("[%s] %.1fs xmppctl export-piefxis", time.Now().Format("15:04:05"), time.Since(start).Seconds())
	if code != 0 {
		t.Fatalf("export-piefxis: exit %d\n%s%s", code, o, e)
	}
	main, _ := filepath.Glob(filepath.Join(dir, "*[0-9].xml"))
	all, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(main) != 1 || len(all) != 1+len(hosts) {
		t.Fatalf("export-piefxis wrote %v\n%s", all, o)
	}
	for _, h := range hosts {
		if _, err := os.Stat(strings.TrimSuffix(main[0], ".xml") + "_" + h + ".xml"); err != nil {
			t.Fatalf("export-piefxis: no file for host %s: %v", h, all)
		}
	}
	return main[0]
}

// hostFiles returns the content of each host's file of the export whose main
// file is main.
func hostFiles(t *testing.T, main string, hosts ...string) []byte {
	t.Helper()
	var out []byte
	for _, h := range hosts {
		b, err := os.ReadFile(strings.TrimSuffix(main, ".xml") + "_" + h + ".xml")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

// compare checks that every user of the source is in the export with the same
// data (normalized: order, formatting, JID case) and credentials that verify the
// old password. A privacy list's JID denials are also in the export's block list.
func compare(t *testing.T, src, exported map[string]*piefxis.User, pws map[string]string) {
	t.Helper()
	for name, u := range src {
		g := exported[name]
		if g == nil {
			t.Fatalf("%s missing from the export", name)
		}
		want := *u
		if u.Privacy != nil {
			jids, _ := migrate.DefaultListBlocks(u.Privacy)
			want.Blocklist = append(want.Blocklist, jids...)
		}
		// Prosody writes the pending request's status nowhere; ejabberd does.
		if a, b := piefxis.Canonical(&want), piefxis.Canonical(g); a != b {
			t.Errorf("%s differs after import and export:\n%s---\n%s", name, a, b)
		}
		ok := false
		for _, k := range g.SCRAM {
			ok = ok || (scram.Keys{Salt: k.Salt, Iterations: k.Iterations, StoredKey: k.StoredKey}).Verify(k.Mechanism, pws[name])
		}
		if !ok {
			t.Errorf("%s: exported credentials do not verify the old password", name)
		}
	}
	if len(exported) != len(src) {
		t.Errorf("export has %d users, the source %d", len(exported), len(src))
	}
}

// TestMigrateFromEjabberdAndProsody: real exports of ejabberd 23.01
// (export_piefxis) and Prosody 0.12 (prosody-migrator to xep0227) imported with
// xmppctl import-piefxis; slixmpp users log in with their old passwords and find
// their rosters (names, groups, subscription states, pending requests), vCards,
// bookmarks, block list and offline message; export-piefxis gives back the same
// data, and an import of that export into a fresh xmppd exports byte for byte the
// same file.
func TestMigrateFromEjabberdAndProsody(t *testing.T) {
	testenv.NeedSlixmpp(t)
	t.Run("ejabberd", func(t *testing.T) {
		t.Parallel()
		src := exportEjabberd(t)
		// ejabberd serves two virtual hosts: so does xmppd, and each host's
		// users land in that host (two alices, two accounts).
		hosts := []string{"ej.example", "ej2.example"}
		cfg := "hosts: [ej.example, ej2.example]\n"
		x := testenv.Start(t, testenv.Options{Domain: "ej.example", Config: cfg})
		o := importInto(t, x, src)
		t.Logf("import:\n%s", o)
		if !strings.Contains(o, "created:") || strings.Contains(o, "warnings") || !strings.Contains(o, "ej2.example:") {
			t.Fatalf("import summary:\n%s", o)
		}
		for _, c := range [][]string{
			{"check_password", "alice", "ej2.example", passwords2["alice"]},
			{"check_password", "alice", "ej.example", passwords["alice"]},
			{"check_account", "dave", "ej2.example"},
		} {
			if out, e, code := x.Ctl(c...); code != 0 {
				t.Fatalf("%v: exit %d %s%s", c, code, out, e)
			}
		}
		if out, _, code := x.Ctl("check_account", "dave", "ej.example"); code != 1 {
			t.Fatalf("dave exists on ej.example: exit %d %s", code, out)
		}
		accounts(t, x.Addr(), "ej.example", "verify", "--offline")
		// verify took carol's offline message: it is not exported any more.
		exp := exportFrom(t, x, hosts...)
		orig := readUsers(t, src, "ej.example")
		orig["carol"].Offline = nil
		compare(t, orig, readUsers(t, exp, "ej.example"), passwords)
		compare(t, readUsers(t, src, "ej2.example"), readUsers(t, exp, "ej2.example"), passwords2)
		start := time.Now()
		y := testenv.Start(t, testenv.Options{Domain: "ej.example", Config: cfg})
		t.Logf("[%s] %.1fs second xmppd started", time.Now().Format("15:04:05"), time.Since(start).Seconds())
		importInto(t, y, exp)
		again := exportFrom(t, y, hosts...)
		a, b := hostFiles(t, exp, hosts...), hostFiles(t, again, hosts...)
		if !bytes.Equal(a, b) {
			t.Fatalf("export -> import -> export is not the same files:\n%s\n---\n%s", a, b)
		}
		start = time.Now()
		y.Stop()
		x.Stop()
		t.Logf("[%s] %.1fs two xmppd stopped", time.Now().Format("15:04:05"), time.Since(start).Seconds())
	})
	t.Run("prosody", func(t *testing.T) {
		t.Parallel()
		src := exportProsody(t)
		x := testenv.Start(t, testenv.Options{Domain: "pr.example"})
		o := importInto(t, x, src)
		t.Logf("import:\n%s", o)
		exp := exportFrom(t, x, "pr.example") // before verify: its logins change nothing stored
		compare(t, readUsers(t, src), readUsers(t, exp), passwords)
		accounts(t, x.Addr(), "pr.example", "verify", "--no-block")
	})
}

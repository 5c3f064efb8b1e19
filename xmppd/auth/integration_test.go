//go:build integration

package auth_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"xedge/xmppd/internal/scram"
	"xedge/xmppd/internal/testenv"
)

// login runs testdata/login.py against s.
func login(t *testing.T, s *testenv.Server, args ...string) {
	t.Helper()
	script, err := os.ReadFile("testdata/login.py")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := s.RunPython(t, 45*time.Second, string(script), args...)
	t.Logf("login.py %v: %.1fs", args, time.Since(start).Seconds())
	if !strings.Contains(out, "PASS") {
		t.Fatalf("login.py %v:\n%s\n--- xmppd log ---\n%s", args, out, s.Logs())
	}
}

// countLines counts the log lines of s containing what.
func countLines(s *testenv.Server, what string) int {
	return strings.Count(s.Logs(), what)
}

const outage = "authentication backend unavailable"

// TestExternalAuthWithSlixmpp: an ejabberd extauth script (testdata/extauth.py,
// written like ejabberd's documented example) authenticates slixmpp users with
// PLAIN over TLS, isuser lets a message reach an external user, a wrong password
// is not-authorized, a killed script is started again, and a script that cannot
// run gives temporary-auth-failure and one log line.
func TestExternalAuthWithSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("extalice:ext-pw-1\nextbob:ext:pw:2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script, _ := filepath.Abs("testdata/extauth.py")
	pidFile := filepath.Join(dir, "pid")
	s := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: []string{"--auth-method", "external",
		"--extauth-program", testenv.Python + " " + script + " " + users + " " + pidFile, "--extauth-pool-size", "1"}})
	login(t, s, "pair", "extalice", "ext-pw-1", "extbob", "ext:pw:2", "PLAIN", "+", "fail", "extalice", "wrong", "not-authorized")

	// Kill the script: the next login starts it again.
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, syscall.SIGKILL) != nil {
		t.Fatalf("cannot kill the extauth script (pid file %q)", b)
	}
	login(t, s, "pair", "extalice", "ext-pw-1", "extbob", "ext:pw:2", "PLAIN")
	if n := countLines(s, "extauth script exited"); n < 1 {
		t.Fatalf("the killed script's exit was not logged:\n%s", s.Logs())
	}

	// A script that cannot run: temporary-auth-failure, one outage line.
	broken := testenv.Start(t, testenv.Options{NoTLSListener: true, Args: []string{"--auth-method", "external",
		"--extauth-program", testenv.Python + " " + filepath.Join(dir, "missing.py")}})
	login(t, broken, "fail", "extalice", "ext-pw-1", "temporary-auth-failure", "+", "fail", "extalice", "ext-pw-1", "temporary-auth-failure")
	if n := countLines(broken, outage); n != 1 {
		t.Fatalf("%d outage lines for two failed logins, want 1:\n%s", n, broken.Logs())
	}
}

// postgres is a PostgreSQL server started for the test.
type postgres struct {
	cmd  *exec.Cmd
	port int
	url  string
}

func freePort(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(testenv.FreeAddr(t, "127.0.0.1"))
	n, _ := strconv.Atoi(p)
	return n
}

// startPostgres runs initdb and postgres (Debian's postgresql 15) as the
// unprivileged user postgres in a temporary directory, on a loopback port.
func startPostgres(t *testing.T) *postgres {
	t.Helper()
	bin := "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
		t.Fatalf("postgresql 15 is not installed (build/setup.sh installs it): %v", err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("no postgres user (the postgresql package makes it): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "xedge-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o700)
	os.Chown(data, uid, gid)
	os.Chown(dir, uid, gid)
	cred := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	init := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "xedge", "--auth=trust", "-E", "UTF8", "--no-sync")
	init.SysProcAttr = cred
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	pg := &postgres{port: freePort(t)}
	pg.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(pg.port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off")
	pg.cmd.SysProcAttr = cred
	logf, _ := os.Create(filepath.Join(dir, "log"))
	pg.cmd.Stdout, pg.cmd.Stderr = logf, logf
	if err := pg.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.stop)
	pg.url = fmt.Sprintf("postgres://xedge@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, pg.url)
		cancel()
		if err == nil {
			c.Close(context.Background())
			return pg
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("postgres did not accept connections in 20 s: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends postgres (fast shutdown) and waits for it.
func (pg *postgres) stop() { stopProcess(pg.cmd, syscall.SIGINT) }

// stopProcess signals a daemon the test started and waits for its exit,
// killing it after 10 s.
func stopProcess(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd.ProcessState != nil {
		return
	}
	cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func (pg *postgres) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, pg.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// ejabberdSCRAM returns ejabberd's stored columns for password (StoredKey with
// the hash prefix, ServerKey, salt, iteration count).
func ejabberdSCRAM(t *testing.T, mech, password string) (stored, server, salt string, iter int) {
	k, err := scram.Derive(mech, password, 4096)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	stored = b64(k.StoredKey)
	if mech == scram.SHA256 {
		stored = "sha256:" + stored
	}
	return stored, b64(k.ServerKey), b64(k.Salt), k.Iterations
}

// TestSQLAuthWithSlixmpp: PostgreSQL started by the test holds an existing
// site's member table (plain and bcrypt passwords) and ejabberd's users table
// (SCRAM columns); slixmpp logs in through each format with the operator's
// query, SCRAM where keys are stored, PLAIN otherwise; then the database is
// stopped and a login gets temporary-auth-failure and the operator one line.
func TestSQLAuthWithSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	pg := startPostgres(t)
	pg.exec(t, "create table member (username text primary key, password text not null)")
	pg.exec(t, "insert into member values ('SqlAlice', 'plain-pw-1'), ('sqlbob', 'plain-pw-2')")
	pg.exec(t, "create table hashed (login text primary key, pwhash text not null)")
	for u, p := range map[string]string{"bcalice": "bc-pw-1", "bcbob": "bc-pw-2"} {
		h, _ := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		pg.exec(t, "insert into hashed values ($1, $2)", u, string(h))
	}
	pg.exec(t, `create table users (username text not null, server_host text not null, password text not null,
		serverkey text not null default '', salt text not null default '', iterationcount integer not null default 0,
		primary key (server_host, username))`)
	for u, p := range map[string]string{"scalice": "sc-pw-1", "scbob": "sc-pw-2"} {
		st, sv, sa, it := ejabberdSCRAM(t, scram.SHA256, p)
		pg.exec(t, "insert into users values ($1, 'localhost', $2, $3, $4, $5)", u, st, sv, sa, it)
	}

	args := func(extra ...string) testenv.Options {
		return testenv.Options{NoTLSListener: true, Args: append([]string{"--auth-method", "sql", "--auth-sql-url", pg.url}, extra...)}
	}
	plain := testenv.Start(t, args("--auth-sql-password-query", "select password from member where lower(username)=$1"))
	login(t, plain, "pair", "sqlalice", "plain-pw-1", "sqlbob", "plain-pw-2", "PLAIN", "+", "fail", "sqlalice", "plain-pw-2", "not-authorized")

	bc := testenv.Start(t, args("--auth-password-format", "bcrypt",
		"--auth-sql-password-query", "select pwhash from hashed where login=$1"))
	login(t, bc, "pair", "bcalice", "bc-pw-1", "bcbob", "bc-pw-2", "PLAIN", "+", "fail", "bcalice", "bc-pw-2", "not-authorized")

	sc := testenv.Start(t, args("--auth-password-format", "scram", "--auth-scram-hash", "sha256",
		"--auth-sql-password-query", "select password, serverkey, salt, iterationcount from users where username=$1 and server_host=$2"))
	login(t, sc, "pair", "ScAlice", "sc-pw-1", "scbob", "sc-pw-2", "SCRAM-SHA-256", "+", "fail", "scalice", "sc-pw-2", "not-authorized")

	pg.stop()
	login(t, plain, "fail", "sqlalice", "plain-pw-1", "temporary-auth-failure", "+", "fail", "sqlalice", "plain-pw-1", "temporary-auth-failure")
	if n := countLines(plain, outage); n != 1 {
		t.Fatalf("%d outage lines for two failed logins, want 1:\n%s", n, plain.Logs())
	}
	login(t, sc, "fail", "scalice", "sc-pw-1", "temporary-auth-failure")
}

// slapd is an OpenLDAP server started for the test.
type slapd struct {
	cmd  *exec.Cmd
	dir  string
	port int
}

const ldapBase = "dc=example,dc=org"

// startSlapd runs slapd with a slapd.conf in a temporary directory on a
// loopback port and adds two inetOrgPerson users.
func startSlapd(t *testing.T) *slapd {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/slapd"); err != nil {
		t.Fatalf("slapd is not installed (build/setup.sh installs it): %v", err)
	}
	sd := &slapd{dir: t.TempDir(), port: freePort(t)}
	os.Mkdir(filepath.Join(sd.dir, "db"), 0o700)
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile %[1]s/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "%[2]s"
rootdn "cn=admin,%[2]s"
rootpw admin-secret
directory %[1]s/db
`, sd.dir, ldapBase)
	if err := os.WriteFile(filepath.Join(sd.dir, "slapd.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c := sd.run(t)
	defer c.Close()
	add := func(dn string, attrs map[string][]string) {
		r := ldap.NewAddRequest(dn, nil)
		for k, v := range attrs {
			r.Attribute(k, v)
		}
		if err := c.Add(r); err != nil {
			t.Fatalf("ldap add %s: %v", dn, err)
		}
	}
	add(ldapBase, map[string][]string{"objectClass": {"dcObject", "organization"}, "dc": {"example"}, "o": {"Example"}})
	add("ou=people,"+ldapBase, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"people"}})
	for _, p := range [][2]string{{"ldapalice", "ldap-pw-1"}, {"ldapbob", "ldap-pw-2"}} {
		add("cn="+p[0]+",ou=people,"+ldapBase, map[string][]string{"objectClass": {"inetOrgPerson"},
			"cn": {p[0]}, "sn": {p[0]}, "uid": {p[0]}, "userPassword": {p[1]}})
	}
	return sd
}

// run starts slapd (again) and returns a connection bound as its root DN.
func (sd *slapd) run(t *testing.T) *ldap.Conn {
	t.Helper()
	sd.cmd = exec.Command("/usr/sbin/slapd", "-f", filepath.Join(sd.dir, "slapd.conf"),
		"-h", fmt.Sprintf("ldap://127.0.0.1:%d/", sd.port), "-d", "0")
	logf, _ := os.OpenFile(filepath.Join(sd.dir, "log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	sd.cmd.Stdout, sd.cmd.Stderr = logf, logf
	if err := sd.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sd.stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := ldap.DialURL(fmt.Sprintf("ldap://127.0.0.1:%d", sd.port))
		if err == nil {
			if err = c.Bind("cn=admin,"+ldapBase, "admin-secret"); err == nil {
				return c
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(sd.dir, "log"))
			t.Fatalf("slapd did not answer in 20 s: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (sd *slapd) stop() { stopProcess(sd.cmd, syscall.SIGTERM) }

// TestLDAPAuthWithSlixmpp: slapd started by the test holds two inetOrgPerson
// entries; xmppd finds each by uid (as ldap-rootdn) and binds as it; slixmpp logs
// in with PLAIN over TLS and a message reaches the other LDAP user; a wrong
// password or an unknown user is not-authorized; after a restart of slapd (the
// connections xmppd kept are dead) logins work; with slapd stopped a login gets
// temporary-auth-failure and the operator one line; started again, logins work
// and the recovery is logged.
func TestLDAPAuthWithSlixmpp(t *testing.T) {
	testenv.NeedSlixmpp(t)
	sd := startSlapd(t)
	s := testenv.Start(t, testenv.Options{NoTLSListener: true, Config: fmt.Sprintf(`auth_method: ldap
ldap_servers: [127.0.0.1]
ldap_port: %d
ldap_rootdn: "cn=admin,%s"
ldap_password: admin-secret
ldap_base: "ou=people,%s"
ldap_uids: [uid]
ldap_filter: "(objectClass=inetOrgPerson)"
`, sd.port, ldapBase, ldapBase)})
	login(t, s, "pair", "ldapalice", "ldap-pw-1", "ldapbob", "ldap-pw-2", "PLAIN",
		"+", "fail", "ldapalice", "ldap-pw-2", "not-authorized", "+", "fail", "ldapcarol", "ldap-pw-2", "not-authorized")
	sd.stop()
	sd.run(t).Close()
	login(t, s, "pair", "ldapalice", "ldap-pw-1", "ldapbob", "ldap-pw-2", "PLAIN")
	if n := countLines(s, outage); n != 0 {
		t.Fatalf("a restart of slapd between logins was an outage:\n%s", s.Logs())
	}
	sd.stop()
	login(t, s, "fail", "ldapalice", "ldap-pw-1", "temporary-auth-failure", "+", "fail", "ldapalice", "ldap-pw-1", "temporary-auth-failure")
	if n := countLines(s, outage); n != 1 {
		t.Fatalf("%d outage lines for two failed logins, want 1:\n%s", n, s.Logs())
	}
	sd.run(t).Close()
	login(t, s, "pair", "ldapalice", "ldap-pw-1", "ldapbob", "ldap-pw-2", "PLAIN")
	if !strings.Contains(s.Logs(), "authentication backend answers again") {
		t.Fatalf("the recovery was not logged:\n%s", s.Logs())
	}
}

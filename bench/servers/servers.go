// Package servers starts, stops and measures the XMPP servers the benchmark
// compares — xmppd, ejabberd and Prosody — as child processes this harness owns:
// each gets its own temporary directory, its own configuration, loopback ports
// chosen at start, and is pinned to one CPU with taskset. Processes are stopped by
// the PID (and the process group) this package started, never by name.
//
// It must not import xmppd: xmppd is run from its binary like the peers.
package servers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"xedge/bench"
	"xedge/bench/loadgen"
	"xedge/internal/freeport"
)

// Kinds of server.
const (
	Xmppd    = "xmppd"
	Ejabberd = "ejabberd"
	Prosody  = "prosody"
)

// Config selects and places one server.
type Config struct {
	Kind      string
	Domain    string // XMPP domain; default "localhost"
	CPU       int    // CPU the server is pinned to
	XmppdBin  string // path to the xmppd binary (Kind == Xmppd)
	XmppdArgs []string
	XmppdGOGC string // GOGC in xmppd's environment; "" none (the runtime's default)
	// XmppdProcs is xmppd's GOMAXPROCS (0: unset, the runtime's choice). It
	// stays pinned to CPU.
	XmppdProcs int
	Dir        string // parent for the server's temporary directory
	// Template replaces the benchmark's configuration template (ejabberd.yml,
	// prosody.cfg.lua or xmppd.yaml) for other uses of these servers (the
	// compatibility suite); Vars adds @KEY@ values to fill it.
	Template string
	Vars     map[string]string
	Log      *slog.Logger
}

// Server is one running (or stopped) server this package started.
type Server struct {
	cfg     Config
	dir     string
	Addr    string // c2s (STARTTLS) listener, host:port
	TLSAddr string // direct TLS listener, if any
	port    int
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	logFile *os.File
	// sqlPool: ejabberd's configuration has an SQL database (sql_type), whose
	// connection pool Start opens before returning (see openSQLPool); sqlFile is
	// the benchmark's SQLite file when the configuration uses it.
	sqlPool bool
	sqlFile string
}

// New prepares a server: a temporary directory, a certificate, a configuration and
// free loopback ports. Start runs it.
func New(cfg Config) (*Server, error) {
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	dir, err := os.MkdirTemp(cfg.Dir, "xbench-"+cfg.Kind+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: temp dir: %w", cfg.Kind, err)
	}
	s := &Server{cfg: cfg, dir: dir}
	if err := s.prepare(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Name is the server kind.
func (s *Server) Name() string { return s.cfg.Kind }

// Domain is the XMPP domain served.
func (s *Server) Domain() string { return s.cfg.Domain }

// Dir is the server's private directory (data, logs, config).
func (s *Server) Dir() string { return s.dir }

// PID is the process ID of the running server itself, or 0: for ejabberd the
// beam.smp process ejabberdctl started (ejabberdctl stays as its parent shell),
// for the others the process this package started.
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil || s.exited() {
		return 0
	}
	pid := s.cmd.Process.Pid
	if s.cfg.Kind == Ejabberd {
		if b := findDescendant(pid, "beam.smp", 0); b != 0 {
			return b
		}
	}
	return pid
}

func (s *Server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// freePort returns a loopback port for a server's listener, below the ephemeral
// range (internal/freeport): a port taken with :0 and closed again can be the
// next :0 pick of a server started meanwhile.
func freePort() (int, error) {
	p, err := freeport.TCP("127.0.0.1")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	return p, nil
}

func lookupIDs(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func chownTree(root string, cred *syscall.Credential) error {
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, int(cred.Uid), int(cred.Gid))
	})
}

// prepare writes the configuration and picks ports.
func (s *Server) prepare() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	certPEM, keyPEM, err := selfSigned(s.cfg.Domain)
	if err != nil {
		return err
	}
	write := func(name, data string, mode os.FileMode) (string, error) {
		p := filepath.Join(s.dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			return "", fmt.Errorf("%s: write %s: %w", s.cfg.Kind, name, err)
		}
		return p, nil
	}
	cert, err := write("cert.pem", string(certPEM), 0o644)
	if err != nil {
		return err
	}
	key, err := write("key.pem", string(keyPEM), 0o600)
	if err != nil {
		return err
	}
	certKey, err := write("certkey.pem", string(certPEM)+string(keyPEM), 0o600)
	if err != nil {
		return err
	}
	vars := map[string]string{"DOMAIN": s.cfg.Domain, "PORT": strconv.Itoa(port), "DIR": s.dir,
		"CERT": cert, "KEY": key, "CERTKEY": certKey}
	for k, v := range s.cfg.Vars {
		vars[k] = v
	}
	tmpl := func(def string) string {
		if s.cfg.Template != "" {
			return s.cfg.Template
		}
		return def
	}
	switch s.cfg.Kind {
	case Ejabberd:
		dist, err := freePort()
		if err != nil {
			return err
		}
		for _, d := range []string{"spool", "log", "contrib"} {
			if err := os.MkdirAll(filepath.Join(s.dir, d), 0o750); err != nil {
				return fmt.Errorf("ejabberd: %w", err)
			}
		}
		if _, err := write("inetrc", "{lookup,[\"file\",\"native\"]}.\n{host,{127,0,0,1}, [\"localhost\"]}.\n", 0o644); err != nil {
			return err
		}
		vars["SQL"], vars["MAMDB"] = "", "mnesia"
		if HasSQLite() {
			vars["SQL"] = "sql_type: sqlite\nsql_database: \"" + filepath.Join(s.dir, "spool", "ejabberd.db") + "\""
			vars["MAMDB"] = "sql"
		}
		yml := bench.Fill(tmpl(bench.EjabberdYML), vars)
		s.sqlPool = strings.Contains("\n"+yml, "\nsql_type:")
		if db := filepath.Join(s.dir, "spool", "ejabberd.db"); s.sqlPool && strings.Contains(yml, db) {
			s.sqlFile = db
		}
		if _, err := write("ejabberd.yml", yml, 0o640); err != nil {
			return err
		}
		// ejabberdctl sources this file; ERL_DIST_PORT means no epmd and a fixed
		// distribution port of our own, so a system instance is never touched.
		ctl := fmt.Sprintf("ERLANG_NODE=xbench%d@localhost\nERL_DIST_PORT=%d\nERL_MAX_PORTS=65536\n"+
			"ERL_PROCESSES=1000000\nERL_MAX_ETS_TABLES=4000\nERL_OPTIONS=\"-kernel inet_dist_use_interface {127,0,0,1} -env ERL_CRASH_DUMP_BYTES 0\"\n"+
			"EJABBERD_BYPASS_WARNINGS=true\nCONTRIB_MODULES_CONF_DIR=%s\n", port, dist, filepath.Join(s.dir, "contrib"))
		if _, err := write("ejabberdctl.cfg", ctl, 0o644); err != nil {
			return err
		}
		cred, err := lookupIDs("ejabberd")
		if err != nil {
			return err
		}
		return chownTree(s.dir, cred)
	case Prosody:
		if err := os.MkdirAll(filepath.Join(s.dir, "data"), 0o750); err != nil {
			return fmt.Errorf("prosody: %w", err)
		}
		vars["PROSODYSTORAGE"] = "storage = \"internal\""
		if HasLuaDBI() {
			vars["PROSODYSTORAGE"] = "default_storage = \"internal\"\nstorage = { archive = \"sql\" }\n" +
				"sql = { driver = \"SQLite3\"; database = \"" + filepath.Join(s.dir, "data", "prosody.sqlite") + "\" }"
		}
		if _, err := write("prosody.cfg.lua", bench.Fill(tmpl(bench.ProsodyCfg), vars), 0o640); err != nil {
			return err
		}
		cred, err := lookupIDs("prosody")
		if err != nil {
			return err
		}
		return chownTree(s.dir, cred)
	case Xmppd:
		tp, err := freePort()
		if err != nil {
			return err
		}
		s.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tp))
		if _, err := write("xmppd.yaml", bench.Fill(tmpl(bench.XmppdYAML), vars), 0o644); err != nil {
			return err
		}
		return os.MkdirAll(filepath.Join(s.dir, "data"), 0o750)
	}
	return fmt.Errorf("unknown server kind %q", s.cfg.Kind)
}

// argv returns the command line, credentials and environment for the server.
func (s *Server) argv() ([]string, *syscall.Credential, []string, error) {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + s.dir, "LANG=C.UTF-8"}
	switch s.cfg.Kind {
	case Ejabberd:
		cred, err := lookupIDs("ejabberd")
		if err != nil {
			return nil, nil, nil, err
		}
		return []string{"/usr/sbin/ejabberdctl",
			"--config-dir", s.dir, "--config", filepath.Join(s.dir, "ejabberd.yml"),
			"--ctl-config", filepath.Join(s.dir, "ejabberdctl.cfg"),
			"--logs", filepath.Join(s.dir, "log"), "--spool", filepath.Join(s.dir, "spool"),
			"foreground"}, cred, env, nil
	case Prosody:
		cred, err := lookupIDs("prosody")
		if err != nil {
			return nil, nil, nil, err
		}
		return []string{"/usr/bin/prosody", "--config", filepath.Join(s.dir, "prosody.cfg.lua"), "-F"}, cred, env, nil
	case Xmppd:
		bin := s.cfg.XmppdBin
		if bin == "" {
			bin = "bin/xmppd"
		}
		abs, err := filepath.Abs(bin)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("xmppd binary: %w", err)
		}
		args := []string{abs, "--data", filepath.Join(s.dir, "data"), "--domain", s.cfg.Domain,
			"--c2s", s.Addr, "--c2s-tls", s.TLSAddr, "--admin-socket", filepath.Join(s.dir, "admin.sock"),
			"--allow-registration", "--config", filepath.Join(s.dir, "xmppd.yaml"),
			"--cert", filepath.Join(s.dir, "cert.pem"), "--key", filepath.Join(s.dir, "key.pem")}
		args = append(args, s.cfg.XmppdArgs...)
		if s.cfg.XmppdProcs > 0 {
			env = append(env, "GOMAXPROCS="+strconv.Itoa(s.cfg.XmppdProcs))
		}
		if s.cfg.XmppdGOGC != "" {
			env = append(env, "GOGC="+s.cfg.XmppdGOGC)
		}
		return args, nil, env, nil
	}
	return nil, nil, nil, fmt.Errorf("unknown server kind %q", s.cfg.Kind)
}

// Start runs the server pinned to its CPU and waits (bounded by ctx) until it
// answers an XMPP stream header on its c2s port.
func (s *Server) Start(ctx context.Context) error {
	if s.PID() != 0 {
		return fmt.Errorf("%s: already running", s.cfg.Kind)
	}
	argv, cred, env, err := s.argv()
	if err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(s.dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: console log: %w", s.cfg.Kind, err)
	}
	s.logFile = lf
	cmd := exec.Command("/usr/bin/taskset", append([]string{"-c", strconv.Itoa(s.cfg.CPU)}, argv...)...)
	cmd.Dir = s.dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("%s: start: %w", s.cfg.Kind, err)
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	s.cfg.Log.Info("server started", "server", s.cfg.Kind, "pid", cmd.Process.Pid, "addr", s.Addr, "dir", s.dir)
	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		return fmt.Errorf("%s: not ready: %w (console: %s)", s.cfg.Kind, err, s.tail())
	}
	if s.sqlPool {
		if err := s.openSQLPool(ctx); err != nil {
			_ = s.Stop()
			return err
		}
	}
	return nil
}

// openSQLPool makes ejabberd open its SQL connection pool now, from one caller.
// ejabberd 23.01 opens it lazily, on the first SQL query, and two first queries
// at once race: the second finds the pool's supervisor registered but its
// worker not started yet and crashes (binary_to_existing_atom of
// ejabberd_sql_<host>_1 in ejabberd_sql:get_worker/1), so mod_mam answered a
// MAM preferences IQ internal-server-error ('Module failed to handle') when the
// MUC workload's room was destroyed (mod_mam's remove_room hook: a delete in
// SQL) at the moment the MAM workload set its preferences. The query here is
// mod_mam's purge of messages older than 100 years: it deletes nothing.
func (s *Server) openSQLPool(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := s.ejabberdctl(ctx, "delete_old_mam_messages", "all", "36500")
	if err != nil {
		return fmt.Errorf("ejabberd: opening the SQL pool (ejabberdctl delete_old_mam_messages): %w: %s (console: %s)", err, out, s.tail())
	}
	// The pool's supervisor creates the SQLite database (with ejabberd's
	// schema) when it starts: the command returns ok even when the query failed.
	if s.sqlFile != "" {
		if _, err := os.Stat(s.sqlFile); err != nil {
			return fmt.Errorf("ejabberd: the SQL pool did not open its database: %w (console: %s)", err, s.tail())
		}
	}
	return nil
}

// ejabberdctl runs an ejabberdctl command against the running node (as the
// ejabberd user, with this server's configuration and distribution port).
func (s *Server) ejabberdctl(ctx context.Context, args ...string) ([]byte, error) {
	cred, err := lookupIDs("ejabberd")
	if err != nil {
		return nil, err
	}
	_, _, env, err := s.argv()
	if err != nil {
		return nil, err
	}
	argv := append([]string{"--config-dir", s.dir, "--config", filepath.Join(s.dir, "ejabberd.yml"),
		"--ctl-config", filepath.Join(s.dir, "ejabberdctl.cfg"),
		"--logs", filepath.Join(s.dir, "log"), "--spool", filepath.Join(s.dir, "spool")}, args...)
	cmd := exec.CommandContext(ctx, "/usr/sbin/ejabberdctl", argv...)
	cmd.Dir, cmd.Env = s.dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ejabberdctl %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

func (s *Server) tail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "console.log"))
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last error
	for range 900 {
		if s.exited() {
			return fmt.Errorf("exited: %v", s.waitErr)
		}
		c, err := loadgen.Dial(ctx, loadgen.Options{Addr: s.Addr, Domain: s.cfg.Domain, Timeout: 2 * time.Second})
		if err == nil {
			c.Abort()
			if bytesHasMech(c.Features()) {
				return nil
			}
			err = errors.New("no SASL mechanisms offered yet")
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("gave up (last: %v)", last)
}

func bytesHasMech(f []byte) bool {
	return strings.Contains(string(f), "mechanism") || strings.Contains(string(f), "starttls")
}

// Stop ends the server: SIGTERM to the PID it started, then SIGKILL to its process
// group if it has not exited within 15 s.
func (s *Server) Stop() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	defer func() {
		if s.logFile != nil {
			s.logFile.Close()
			s.logFile = nil
		}
	}()
	pid := s.cmd.Process.Pid
	if !s.exited() {
		// The server itself first (beam.smp shuts down cleanly and flushes Mnesia
		// on SIGTERM; its parent shell then exits), then the process we started.
		if main := s.PID(); main != 0 && main != pid {
			_ = syscall.Kill(main, syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(15 * time.Second):
			}
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			s.cfg.Log.Warn("server did not stop on SIGTERM; killing its process group", "server", s.cfg.Kind, "pid", pid)
		}
	}
	// Children it left behind (erl_child_setup, helpers) share our process group.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s: pid %d did not exit", s.cfg.Kind, pid)
	}
	s.cfg.Log.Info("server stopped", "server", s.cfg.Kind, "pid", pid)
	return nil
}

// Restart stops and starts the server on the same data directory.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil {
		return err
	}
	s.cmd = nil
	return s.Start(ctx)
}

// Remove stops the server and deletes its directory (keep=true leaves the
// directory for inspection).
func (s *Server) Remove(keep bool) error {
	err := s.Stop()
	if !keep {
		if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

func itoa(i int) string { return strconv.Itoa(i) }

// CertPEM returns the server's certificate (self-signed: it is also the trust
// root the load client verifies the server against).
func (s *Server) CertPEM() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "cert.pem"))
	if err != nil {
		return nil, fmt.Errorf("%s: certificate: %w", s.cfg.Kind, err)
	}
	return b, nil
}

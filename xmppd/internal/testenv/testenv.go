// Package testenv runs a real xmppd for integration tests: it builds bin/xmppd and
// bin/xmppctl once per test binary, starts xmppd on free 127.0.0.1 ports with a fresh
// data directory and admin socket, registers users through xmppctl, runs Python
// scripts with the system python3 (python3-slixmpp from Debian) against it, and offers
// a raw-socket client for protocol-level tests. Every server is stopped by PID in
// t.Cleanup.
//
// Python scripts get the helper module xmpptest (see xmpptest.py in this package) on
// PYTHONPATH, and the environment XMPP_HOST, XMPP_PORT (STARTTLS), XMPP_TLS_PORT
// (direct TLS), XMPP_DOMAIN.
//
// It is for tests only; it must not be imported by non-test code.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	_ "embed"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Python is the interpreter with python3-slixmpp (a pyenv python earlier in PATH may
// lack it).
const Python = "/usr/bin/python3"

//go:embed xmpptest.py
var xmpptestPy []byte

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binaries returns the paths of xmppd and xmppctl, built once per test binary.
func Binaries(t testing.TB) (xmppd, xmppctl string) {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		removeStaleBuilds()
		buildDir, buildErr = os.MkdirTemp("", "xedge-testenv-")
		if buildErr != nil {
			return
		}
		if err := os.WriteFile(filepath.Join(buildDir, "xmpptest.py"), xmpptestPy, 0o644); err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", buildDir+"/", "./xmppd/cmd/xmppd", "./xmppd/cmd/xmppctl")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, b)
		}
	})
	if buildErr != nil {
		t.Fatalf("testenv: %v", buildErr)
	}
	return filepath.Join(buildDir, "xmppd"), filepath.Join(buildDir, "xmppctl")
}

// removeStaleBuilds deletes build directories of earlier test binaries (older than
// an hour: a test binary cannot remove its own at exit without a TestMain).
func removeStaleBuilds() {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "xedge-testenv-*"))
	for _, d := range old {
		if st, err := os.Stat(d); err == nil && st.IsDir() && time.Since(st.ModTime()) > time.Hour {
			os.RemoveAll(d)
		}
	}
}

// Options configure a server.
type Options struct {
	// Args are extra xmppd flags, e.g. "--idle-timeout", "3s".
	Args []string
	// Config, if set, is written to a YAML file passed with --config.
	Config string
	// Domain defaults to "localhost".
	Domain string
	// NoTLSListener disables the direct TLS listener.
	NoTLSListener bool
	// Data reuses a data directory (e.g. another Server's Data, to test restarts);
	// empty means a fresh one.
	Data string
	// AllowExit makes Start return (instead of failing the test) when xmppd exits
	// before it is ready, e.g. to check a refused configuration; see Exited,
	// ExitCode and Logs.
	AllowExit bool
}

// Server is a running xmppd.
type Server struct {
	t       testing.TB
	Domain  string
	Host    string
	Port    int // STARTTLS
	TLSPort int // direct TLS (0 if off)
	Data    string
	Socket  string
	Ctlbin  string
	// ConfigFile is the YAML file written from Options.Config ("" if none).
	ConfigFile string
	cmd        *exec.Cmd
	logMu      sync.Mutex
	log        bytes.Buffer
	exited     chan struct{}
	ready      chan struct{}
	allowExit  bool
}

// Start starts xmppd and waits until it listens.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	s := launch(t, o)
	s.waitReady(t)
	return s
}

// StartMany starts several xmppd processes at once and waits until every one is
// ready (e.g. cluster nodes that can only start together, once a quorum is up).
func StartMany(t testing.TB, opts ...Options) []*Server {
	t.Helper()
	var out []*Server
	for _, o := range opts {
		out = append(out, launch(t, o))
	}
	for _, s := range out {
		s.waitReady(t)
	}
	return out
}

// launch starts xmppd without waiting for it to be ready.
func launch(t testing.TB, o Options) *Server {
	t.Helper()
	bin, ctl := Binaries(t)
	if o.Domain == "" {
		o.Domain = "localhost"
	}
	dir := t.TempDir()
	s := &Server{t: t, Domain: o.Domain, Host: "127.0.0.1", Data: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "admin.sock"), Ctlbin: ctl, exited: make(chan struct{})}
	if o.Data != "" {
		s.Data = o.Data
	}
	args := []string{"--domain", o.Domain, "--data", s.Data, "--admin-socket", s.Socket, "--c2s", "127.0.0.1:0"}
	if !strings.Contains(o.Config, "log-level") && !strings.Contains(o.Config, "log_level") {
		args = append(args, "--log-level", "debug")
	}
	if o.NoTLSListener {
		args = append(args, "--c2s-tls", "")
	} else {
		args = append(args, "--c2s-tls", "127.0.0.1:0")
	}
	if o.Config != "" {
		f := filepath.Join(dir, "xmppd.yaml")
		if err := os.WriteFile(f, []byte(o.Config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", f)
		s.ConfigFile = f
	}
	args = append(args, o.Args...)
	s.cmd = exec.Command(bin, args...)
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = &lockedWriter{s}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("testenv: start xmppd: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		done := false
		for sc.Scan() {
			line := sc.Text()
			s.logMu.Lock()
			s.log.WriteString(line + "\n")
			s.logMu.Unlock()
			if i := strings.Index(line, "(STARTTLS):"); i >= 0 {
				s.Port = portOf(line[i+len("(STARTTLS):"):])
			}
			if i := strings.Index(line, "(direct TLS, 0368):"); i >= 0 {
				s.TLSPort = portOf(line[i+len("(direct TLS, 0368):"):])
			}
			if strings.HasPrefix(line, "Stop with Ctrl-C") && !done {
				done = true
				close(ready)
			}
		}
	}()
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() { s.Stop() })
	s.ready, s.allowExit = ready, o.AllowExit
	return s
}

// waitReady waits until xmppd printed its banner (30 s from now).
func (s *Server) waitReady(t testing.TB) {
	t.Helper()
	select {
	case <-s.ready:
	case <-s.exited:
		if s.allowExit {
			return
		}
		t.Fatalf("testenv: xmppd exited at start:\n%s", s.Logs())
	case <-time.After(30 * time.Second):
		syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("testenv: xmppd did not start in 30s:\n%s", s.Logs())
	}
}

func portOf(s string) int {
	_, p, err := net.SplitHostPort(strings.TrimSpace(s))
	if err != nil {
		return 0
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}

type lockedWriter struct{ s *Server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.logMu.Lock()
	defer w.s.logMu.Unlock()
	return w.s.log.Write(p)
}

// Logs returns xmppd's output so far.
func (s *Server) Logs() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// Addr is the STARTTLS address.
func (s *Server) Addr() string { return fmt.Sprintf("%s:%d", s.Host, s.Port) }

// TLSAddr is the direct TLS address.
func (s *Server) TLSAddr() string { return fmt.Sprintf("%s:%d", s.Host, s.TLSPort) }

// Stop sends SIGTERM and waits (SIGKILL after 15 s). It is safe to call twice.
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("testenv: xmppd did not stop within 15s after SIGTERM")
	}
}

// PID is xmppd's process ID.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Kill kills xmppd with SIGKILL (by PID, as a crash would) and waits for it.
func (s *Server) Kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		s.t.Errorf("testenv: kill %d: %v", s.cmd.Process.Pid, err)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("testenv: xmppd %d still running 10s after SIGKILL", s.cmd.Process.Pid)
	}
}

// Signal sends sig to xmppd.
func (s *Server) Signal(sig os.Signal) {
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Errorf("testenv: signal %v: %v", sig, err)
	}
}

// ExitCode waits up to timeout for xmppd to exit and returns its exit code (-1 if
// it is still running).
func (s *Server) ExitCode(timeout time.Duration) int {
	select {
	case <-s.exited:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		return -1
	}
}

// Exited reports whether xmppd has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// Ctl runs xmppctl against the server and returns stdout, stderr and the exit code.
func (s *Server) Ctl(args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(s.Ctlbin, append([]string{"--socket", s.Socket}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return o.String(), e.String(), code
}

// Register creates users (alternating name, password) and fails the test on error.
func (s *Server) Register(t testing.TB, userPass ...string) {
	t.Helper()
	for i := 0; i+1 < len(userPass); i += 2 {
		if o, e, code := s.Ctl("register", userPass[i], userPass[i+1]); code != 0 {
			t.Fatalf("register %s: exit %d: %s%s", userPass[i], code, o, e)
		}
	}
}

// PythonResult is a finished script.
type PythonResult struct {
	Output string
	Err    error
}

// RunPython runs script (Python source) with args under a timeout and returns its
// combined output, failing the test (with output and server logs) if it fails.
func (s *Server) RunPython(t testing.TB, timeout time.Duration, script string, args ...string) string {
	t.Helper()
	r := s.Python(timeout, script, args...)
	if r.Err != nil {
		t.Fatalf("python script failed: %v\n--- script output ---\n%s\n--- xmppd log ---\n%s", r.Err, r.Output, s.Logs())
	}
	return r.Output
}

// Python runs script and returns its result without failing the test.
func (s *Server) Python(timeout time.Duration, script string, args ...string) PythonResult {
	s.t.Helper()
	Binaries(s.t)
	f, err := os.CreateTemp(s.t.TempDir(), "script-*.py")
	if err != nil {
		return PythonResult{Err: err}
	}
	f.WriteString(script)
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Python, append([]string{"-u", f.Name()}, args...)...)
	cmd.Env = append(os.Environ(),
		"PYTHONPATH="+buildDir,
		"XMPP_HOST="+s.Host,
		fmt.Sprintf("XMPP_PORT=%d", s.Port),
		fmt.Sprintf("XMPP_TLS_PORT=%d", s.TLSPort),
		"XMPP_DOMAIN="+s.Domain,
	)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return PythonResult{Output: string(out), Err: err}
}

// Raw is a raw client connection for protocol-level tests.
type Raw struct {
	t    testing.TB
	Conn net.Conn
	buf  []byte
}

// Dial connects to addr.
func Dial(t testing.TB, addr string) *Raw {
	t.Helper()
	return DialFrom(t, "", addr)
}

// DialFrom connects to addr from the local IP from (e.g. "127.0.0.2": every
// 127/8 address is loopback), or any address if from is "".
func DialFrom(t testing.TB, from, addr string) *Raw {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &Raw{t: t, Conn: c}
}

// Send writes s.
func (r *Raw) Send(s string) {
	r.t.Helper()
	r.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(r.Conn, s); err != nil {
		r.t.Fatalf("raw send: %v", err)
	}
}

// TrySend writes s and returns the error (the server may have closed the stream).
func (r *Raw) TrySend(s string) error {
	r.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(r.Conn, s)
	return err
}

// Expect reads until the input received since the last Expect contains want, and
// returns that input (up to and including want). It fails after timeout.
func (r *Raw) Expect(want string, timeout time.Duration) string {
	r.t.Helper()
	got, err := r.ReadUntil(want, timeout)
	if err != nil {
		r.t.Fatalf("raw: waiting for %q: %v; got %q", want, err, got)
	}
	return got
}

// ReadUntil is Expect without failing: it returns what was read and an error if
// want did not arrive (timeout or connection closed).
func (r *Raw) ReadUntil(want string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	tmp := make([]byte, 4096)
	for {
		if i := strings.Index(string(r.buf), want); i >= 0 {
			got := string(r.buf[:i+len(want)])
			r.buf = r.buf[i+len(want):]
			return got, nil
		}
		r.Conn.SetReadDeadline(deadline)
		n, err := r.Conn.Read(tmp)
		r.buf = append(r.buf, tmp[:n]...)
		if err != nil {
			got := string(r.buf)
			r.buf = nil
			return got, err
		}
	}
}

// ReadAll reads until the connection closes or timeout, returning everything.
func (r *Raw) ReadAll(timeout time.Duration) (string, error) {
	got, err := r.ReadUntil("\x00never\x00", timeout)
	if err == io.EOF {
		err = nil
	}
	return got, err
}

// Closed reports whether the server closed the connection within timeout (reading
// and discarding anything that arrives).
func (r *Raw) Closed(timeout time.Duration) bool {
	_, err := r.ReadUntil("\x00never\x00", timeout)
	return err == io.EOF || (err != nil && !isTimeout(err))
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// Open sends a client stream header for domain and waits for the features.
func (r *Raw) Open(domain string) string {
	r.t.Helper()
	r.Send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='" + domain + "' version='1.0'>")
	return r.Expect("</stream:features>", 10*time.Second)
}

// StartTLS opens the stream, negotiates STARTTLS (certificate not verified) and
// reopens the stream; it returns the features after TLS.
func (r *Raw) StartTLS(domain string) string {
	r.t.Helper()
	r.Open(domain)
	r.Send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	r.Expect("<proceed", 10*time.Second)
	r.buf = nil
	tc := tls.Client(r.Conn, &tls.Config{InsecureSkipVerify: true, ServerName: domain})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		r.t.Fatalf("raw: TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	r.Conn = tc
	return r.Open(domain)
}

// DialTLS connects to the server with STARTTLS done.
func DialTLS(t testing.TB, s *Server) *Raw {
	t.Helper()
	r := Dial(t, s.Addr())
	r.StartTLS(s.Domain)
	return r
}

// LoginPlain authenticates with SASL PLAIN (after StartTLS) and binds resource; it
// returns the full JID bound.
func (r *Raw) LoginPlain(domain, user, password, resource string) string {
	r.t.Helper()
	r.AuthPlain(domain, user, password)
	return r.Bind(resource)
}

// Bind binds resource ("" = server-assigned) after authentication and returns the
// full JID.
func (r *Raw) Bind(resource string) string {
	r.t.Helper()
	res := ""
	if resource != "" {
		res = "<resource>" + resource + "</resource>"
	}
	r.Send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>" + res + "</bind></iq>")
	got := r.Expect("</iq>", 10*time.Second)
	i := strings.Index(got, "<jid>")
	j := strings.Index(got, "</jid>")
	if i < 0 || j < i {
		r.t.Fatalf("raw: bind failed: %s", got)
	}
	return got[i+5 : j]
}

// AuthPlain authenticates with SASL PLAIN (after StartTLS) and reopens the stream,
// returning the features (bind, sm, csi, ...). It does not bind.
func (r *Raw) AuthPlain(domain, user, password string) string {
	r.t.Helper()
	msg := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	r.Send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + msg + "</auth>")
	r.Expect("<success", 10*time.Second)
	return r.Open(domain)
}

// Drop closes the TCP connection abruptly (under TLS, without close_notify), as a
// lost network would.
func (r *Raw) Drop() {
	if tc, ok := r.Conn.(*tls.Conn); ok {
		tc.NetConn().Close()
		return
	}
	r.Conn.Close()
}

// Attr extracts the value of attribute name from the first tag in s containing it.
func Attr(s, name string) string {
	i := strings.Index(s, " "+name+"='")
	q := "'"
	if i < 0 {
		i = strings.Index(s, " "+name+"=\"")
		q = "\""
	}
	if i < 0 {
		return ""
	}
	rest := s[i+len(name)+3:]
	j := strings.Index(rest, q)
	if j < 0 {
		return ""
	}
	return rest[:j]
}

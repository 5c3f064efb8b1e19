//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	domain   = "localhost"
	password = "secret-pw"
	// offlineCap is the server's --max-offline in these tests.
	offlineCap = 5
)

var srv struct {
	once          sync.Once
	err           error
	dir, addr     string
	xmppctl, sock string
	root          string
}

func repoRoot() (string, error) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for i := 0; i < 10; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		dir = filepath.Dir(dir)
	}
	return "", fmt.Errorf("go.mod not found above %s", file)
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// server builds xmppd and xmppctl once per test binary and starts one xmppd shared by
// the tests (each test uses its own accounts). The process is stopped when the test
// binary exits (TestMain).
func server(t *testing.T) {
	t.Helper()
	srv.once.Do(func() { srv.err = startServer() })
	if srv.err != nil {
		t.Fatalf("xmppd: %v", srv.err)
	}
}

var proc *exec.Cmd
var procLog lockedBuffer

// lockedBuffer collects xmppd's output; the process writes while tests read.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startServer() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	srv.root = root
	dir, err := os.MkdirTemp("", "xedge-mod-it-")
	if err != nil {
		return err
	}
	srv.dir = dir
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./xmppd/cmd/xmppd", "./xmppd/cmd/xmppctl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	srv.addr, err = freePort()
	if err != nil {
		return err
	}
	srv.sock = filepath.Join(dir, "admin.sock")
	srv.xmppctl = filepath.Join(bin, "xmppctl")
	proc = exec.Command(filepath.Join(bin, "xmppd"), "--domain", domain, "--data", filepath.Join(dir, "data"),
		"--node", "it1", "--c2s", srv.addr, "--c2s-tls", "", "--admin-socket", srv.sock,
		"--max-offline", strconv.Itoa(offlineCap), "--log-level", "info", "--auth-fail-max", "1000")
	proc.Stdout, proc.Stderr = &procLog, &procLog
	if err := proc.Start(); err != nil {
		return fmt.Errorf("start xmppd: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", srv.addr, 200*time.Millisecond); err == nil {
			c.Close()
			if _, err := os.Stat(srv.sock); err == nil {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("xmppd did not listen on %s within 20s; log:\n%s", srv.addr, procLog.String())
}

func TestMain(m *testing.M) {
	code := m.Run()
	if proc != nil && proc.Process != nil {
		_ = proc.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = proc.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = proc.Process.Kill()
			<-done
		}
	}
	if srv.dir != "" {
		os.RemoveAll(srv.dir)
	}
	os.Exit(code)
}

var userSeq int
var userMu sync.Mutex

// users registers n fresh accounts named after the test.
func users(t *testing.T, n int) []string {
	t.Helper()
	server(t)
	var out []string
	for i := 0; i < n; i++ {
		userMu.Lock()
		userSeq++
		u := fmt.Sprintf("%s%d", strings.ToLower(strings.TrimPrefix(t.Name(), "Test")), userSeq)
		userMu.Unlock()
		cmd := exec.Command(srv.xmppctl, "--socket", srv.sock, "register", u, password)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("xmppctl register %s: %v\n%s", u, err, out)
		}
		out = append(out, u)
	}
	return out
}

// scenario runs one slixmpp scenario against the shared server.
func scenario(t *testing.T, name string, args ...string) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("/usr/bin/python3 missing: install python3-slixmpp (build/setup.sh)")
	}
	server(t)
	host, port, _ := net.SplitHostPort(srv.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	script := filepath.Join(srv.root, "xmppd", "mod", "integration", "testdata", "scenarios.py")
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", append([]string{script, name, host, port, domain, password}, args...)...)
	start := len(procLog.String())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		logs := procLog.String()
		if start <= len(logs) {
			logs = logs[start:]
		}
		t.Fatalf("scenario %s: %v\n%s\n--- xmppd log during the scenario ---\n%s", name, err, out, logs)
	}
}

func TestRosterGetSetRemovePush(t *testing.T) { scenario(t, "roster", users(t, 2)...) }
func TestRosterVersioning(t *testing.T)       { scenario(t, "rosterver", users(t, 1)...) }
func TestSubscriptionHandshake(t *testing.T)  { scenario(t, "subscription", users(t, 2)...) }
func TestPresence(t *testing.T)               { scenario(t, "presence", users(t, 3)...) }
func TestOffline(t *testing.T) {
	scenario(t, "offline", append(users(t, 2), strconv.Itoa(offlineCap))...)
}
func TestDisco(t *testing.T)    { scenario(t, "disco", users(t, 1)...) }
func TestVersion(t *testing.T)  { scenario(t, "version", users(t, 1)...) }
func TestPing(t *testing.T)     { scenario(t, "ping", users(t, 1)...) }
func TestVCard(t *testing.T)    { scenario(t, "vcard", users(t, 2)...) }
func TestPrivate(t *testing.T)  { scenario(t, "private", users(t, 1)...) }
func TestBlocking(t *testing.T) { scenario(t, "blocking", users(t, 2)...) }
func TestCarbons(t *testing.T)  { scenario(t, "carbons", users(t, 2)...) }

// Package bindtest starts a real BIND 9 (Debian's named) for tests: a primary
// for one zone on a free loopback port that accepts RFC 2136 updates signed
// with a TSIG key made by tsig-keygen. Only tests import it.
package bindtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// BIND is a running named.
type BIND struct {
	Addr    string // 127.0.0.1:port, UDP and TCP
	Zone    string // e.g. "example.org"
	KeyFile string // the TSIG key file (tsig-keygen's output)
	KeyName string
	PID     int
	logs    *Buffer
}

// Logs returns what named printed so far.
func (b *BIND) Logs() string { return b.logs.String() }

// Buffer is a bytes.Buffer safe for concurrent writes and reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// FreePort returns a loopback port free for both UDP and TCP right now.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return 0
}

// Start runs named as the primary of zone (with SOA, NS ns.<zone> and
// www.<zone> A 192.0.2.80 to show foreign records stay) and stops it by PID in
// t.Cleanup, printing its log if the test failed.
func Start(t testing.TB, zone string) *BIND {
	t.Helper()
	for _, tool := range []string{"named", "tsig-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install bind9 (build/setup.sh test does): %v", tool, err)
		}
	}
	dir := t.TempDir()
	port := FreePort(t)
	keyName := "xedge-test"
	keyText, err := exec.Command("tsig-keygen", "-a", "hmac-sha256", keyName).Output()
	if err != nil {
		t.Fatalf("tsig-keygen: %v", err)
	}
	keyFile := filepath.Join(dir, keyName+".key")
	if err := os.WriteFile(keyFile, keyText, 0o600); err != nil {
		t.Fatal(err)
	}
	zf := fmt.Sprintf(`$TTL 300
@	IN SOA ns.%[1]s. hostmaster.%[1]s. 1 3600 600 86400 30
@	IN NS ns.%[1]s.
ns	IN A 127.0.0.1
www	IN A 192.0.2.80
`, zone)
	if err := os.WriteFile(filepath.Join(dir, "zone.db"), []byte(zf), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	managed-keys-directory "%[1]s";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
};
controls { };
include "%[3]s";
zone "%[4]s" {
	type primary;
	file "%[1]s/zone.db";
	update-policy { grant %[5]s zonesub ANY; };
};
`, dir, port, keyFile, zone, keyName)
	confFile := filepath.Join(dir, "named.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &Buffer{}
	// -g: foreground, log to stderr; -n 1: one worker (the machine is shared).
	cmd := exec.Command("named", "-g", "-n", "1", "-c", confFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start named: %v", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("named log:\n%s", logs.String())
		}
	})
	b := &BIND{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Zone: zone, KeyFile: keyFile, KeyName: keyName, PID: pid, logs: logs}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c := &mdns.Client{Net: "tcp", Timeout: 500 * time.Millisecond}
		q := new(mdns.Msg)
		q.SetQuestion(mdns.Fqdn(zone), mdns.TypeSOA)
		if r, _, err := c.Exchange(q, b.Addr); err == nil && r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1 {
			return b
		}
		select {
		case <-exited:
			t.Fatalf("named exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("named did not answer on %s within 15 s:\n%s", b.Addr, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Package bindtest starts a real BIND 9 (Debian's named) for tests: a primary
// for one zone on a free loopback port that accepts RFC 2136 updates signed
// with a TSIG key made by tsig-keygen. Only tests and the DNS benchmark
// (bench/dns) import it.
package bindtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"xedge/internal/freeport"
)

// BIND is a running named.
type BIND struct {
	Addr    string // 127.0.0.1:port, UDP and TCP
	Zone    string // e.g. "example.org"
	KeyFile string // the TSIG key file (tsig-keygen's output)
	KeyName string
	PID     int
	logs    *Buffer
	exited  chan struct{}
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
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// freePort returns a loopback port for named, free for UDP and TCP and below
// the ephemeral range (internal/freeport): a port taken with :0 and closed again
// can be the next :0 pick of a server started meanwhile.
func freePort() (int, error) { return freeport.TCPUDP("127.0.0.1") }

// Start runs named (Run) in a temporary directory of t and stops it by PID in
// t.Cleanup, printing its log if the test failed.
func Start(t testing.TB, zone string) *BIND {
	t.Helper()
	b, err := Run(t.TempDir(), zone)
	if b != nil {
		t.Cleanup(func() {
			b.Stop()
			if t.Failed() {
				t.Logf("named log:\n%s", b.Logs())
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Run starts named in dir as the primary of zone (with SOA, NS ns.<zone> and
// www.<zone> A 192.0.2.80, to show that foreign records stay), on a free
// loopback port, and waits until it answers (15 s at most). The caller stops
// it with Stop; on an error after the start, b is returned so it can be.
func Run(dir, zone string) (*BIND, error) {
	for _, tool := range []string{"named", "tsig-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: install bind9 (build/setup.sh test does): %w", tool, err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	keyName := "xedge-test"
	keyText, err := exec.Command("tsig-keygen", "-a", "hmac-sha256", keyName).Output()
	if err != nil {
		return nil, fmt.Errorf("tsig-keygen: %w", err)
	}
	keyFile := filepath.Join(dir, keyName+".key")
	if err := os.WriteFile(keyFile, keyText, 0o600); err != nil {
		return nil, err
	}
	zf := fmt.Sprintf(`$TTL 300
@	IN SOA ns.%[1]s. hostmaster.%[1]s. 1 3600 600 86400 30
@	IN NS ns.%[1]s.
ns	IN A 127.0.0.1
www	IN A 192.0.2.80
`, zone)
	if err := os.WriteFile(filepath.Join(dir, "zone.db"), []byte(zf), 0o644); err != nil {
		return nil, err
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
		return nil, err
	}
	logs := &Buffer{}
	// -g: foreground, log to stderr; -n 1: one worker (the machine is shared).
	cmd := exec.Command("named", "-g", "-n", "1", "-c", confFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start named: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b := &BIND{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Zone: zone, KeyFile: keyFile, KeyName: keyName,
		PID: cmd.Process.Pid, logs: logs, exited: exited}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c := &mdns.Client{Net: "tcp", Timeout: 500 * time.Millisecond}
		q := new(mdns.Msg)
		q.SetQuestion(mdns.Fqdn(zone), mdns.TypeSOA)
		if r, _, err := c.Exchange(q, b.Addr); err == nil && r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1 {
			return b, nil
		}
		select {
		case <-exited:
			return b, fmt.Errorf("named exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			return b, fmt.Errorf("named did not answer on %s within 15 s:\n%s", b.Addr, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends named by its PID (SIGTERM, SIGKILL after 5 s) and waits for it.
func (b *BIND) Stop() {
	select {
	case <-b.exited:
		return
	default:
	}
	syscall.Kill(b.PID, syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(b.PID, syscall.SIGKILL)
		<-b.exited
	}
}

// Dig runs Debian's dig +short against addr (host:port) and returns the
// answer lines sorted. With netns set it runs inside that network namespace.
func Dig(t testing.TB, netns, addr string, args ...string) []string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	argv := append([]string{"dig", "@" + host, "-p", port, "+short", "+time=2", "+tries=1"}, args...)
	if netns != "" {
		argv = append([]string{"ip", "netns", "exec", netns}, argv...)
	}
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}

// SRV asks addr over netw ("udp" or "tcp") for the SRV records of owner.
func SRV(addr, netw, owner string) ([]*mdns.SRV, error) {
	c := &mdns.Client{Net: netw, Timeout: 500 * time.Millisecond}
	q := new(mdns.Msg)
	q.SetQuestion(mdns.Fqdn(owner), mdns.TypeSRV)
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		return nil, err
	}
	var out []*mdns.SRV
	for _, rr := range r.Answer {
		if s, ok := rr.(*mdns.SRV); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// Targets is SRV's targets, sorted.
func Targets(addr, netw, owner string) ([]string, error) {
	srvs, err := SRV(addr, netw, owner)
	var out []string
	for _, s := range srvs {
		out = append(out, s.Target)
	}
	sort.Strings(out)
	return out, err
}

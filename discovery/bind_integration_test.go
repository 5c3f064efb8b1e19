//go:build integration && linux

package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// startBIND runs a real named (Debian's bind9) listening on addr:port —
// in network namespace ns, or in this one when ns is empty — authoritative
// for zones (zone name -> records after a generated SOA and NS). It is
// stopped by PID in t.Cleanup.
func startBIND(t *testing.T, ns, addr string, port int, zones map[string]string) *proc {
	t.Helper()
	if _, err := exec.LookPath("named"); err != nil {
		t.Fatalf("named (Debian bind9, installed by build/setup.sh) is missing: %v", err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	conf := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	managed-keys-directory "%[1]s";
	listen-on port %[3]d { %[2]s; };
	listen-on-v6 { none; };
	recursion no;
	allow-query { any; };
	dnssec-validation no;
};
controls { };
`, dir, addr, port)
	i := 0
	for zone, records := range zones {
		i++
		f := filepath.Join(dir, fmt.Sprintf("zone%d", i))
		soa := "$TTL 60\n@ IN SOA ns.invalid. hostmaster.invalid. 1 60 60 600 60\n@ IN NS ns.invalid.\n"
		os.WriteFile(f, []byte(soa+records), 0o644)
		conf += fmt.Sprintf("zone %q { type primary; file %q; };\n", zone, f)
	}
	cf := filepath.Join(dir, "named.conf")
	os.WriteFile(cf, []byte(conf), 0o644)
	if out, err := exec.Command("named-checkconf", "-z", cf).CombinedOutput(); err != nil {
		t.Fatalf("named-checkconf: %v\n%s", err, out)
	}
	argv := []string{"named", "-g", "-n", "1", "-u", "root", "-c", cf}
	var p *proc
	if ns != "" {
		p = startIn(t, ns, "named", argv...)
	} else {
		p = startProc(t, "named", argv...)
	}
	p.waitLog(t, 15*time.Second, regexp.MustCompile(`(?m) running$`))
	return p
}

// TestSRVSeedsFromBIND: a node configured with nothing but a DNS domain finds
// its seed through the SRV records _xedge-cluster._tcp.<domain> that a real BIND
// serves, joins it, and lists it as found by dns.
func TestSRVSeedsFromBIND(t *testing.T) {
	key := []byte("srv-seed-test-cluster-key-0123456789")
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsPort := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	seedAddr := freeGossipAddr(t, "127.0.0.61")
	// Two SRV records: one points at a port where nothing listens (lower
	// priority number: tried first), the other at the seed.
	dead := freeGossipAddr(t, "127.0.0.62")
	startBIND(t, "", "127.0.0.1", dnsPort, map[string]string{"srv.test": fmt.Sprintf(
		"_xedge-cluster._tcp IN SRV 0 10 %d dead.srv.test.\n_xedge-cluster._tcp IN SRV 10 10 %d seed.srv.test.\ndead IN A 127.0.0.62\nseed IN A 127.0.0.61\n",
		dead.Port(), seedAddr.Port())})
	// named listens only on interface addresses: on lo that is 127.0.0.1.
	servers := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(dnsPort))}

	got, err := LookupSRVSeeds(context.Background(), "srv.test", servers)
	if err != nil || !slices.Equal(got, []string{dead.String(), seedAddr.String()}) {
		t.Fatalf("SRV seeds %v %v, want [%s %s]", got, err, dead, seedAddr)
	}
	if _, err := LookupSRVSeeds(context.Background(), "nothing.test", servers); err == nil {
		t.Fatal("no error for a domain without SRV records")
	}

	logs := &syncBuf{}
	lg := slog.New(slog.NewTextHandler(logs, nil))
	seed, err := New(Config{NodeName: "seed", BindAddr: seedAddr, ClusterKey: key, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seed.Shutdown() })
	node, err := New(Config{NodeName: "node", BindAddr: freeGossipAddr(t, "127.0.0.63"), ClusterKey: key,
		SRVDomain: "srv.test", DNSServers: servers, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Shutdown() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found string
		for _, m := range node.Members() {
			if m.Name == "seed" && m.Status == StatusAlive {
				found = m.FoundBy
			}
		}
		if found == "dns" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seed not joined through SRV (found by %q):\n%s", found, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The dead SRV target is reported by address and cause, in one line.
	if !regexp.MustCompile(`cannot join gossip peer ` + regexp.QuoteMeta(dead.String()) + `: connection refused`).MatchString(logs.String()) {
		t.Fatalf("no line naming the dead SRV target:\n%s", logs.String())
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "SRV") || strings.Contains(l, dead.String()) {
			t.Log(l)
		}
	}
}

//go:build integration

package server_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"xedge/discovery/dns/bindtest"
	"xedge/xmppd/internal/testenv"
)

// digShort runs Debian's dig +short against addr; the answer lines sorted.
func digShort(t *testing.T, addr string, args ...string) []string {
	t.Helper()
	return bindtest.Dig(t, "", addr, args...)
}

type dnsStatus struct {
	Serial  uint32 `json:"serial"`
	Listen  string `json:"listen"`
	Targets []struct {
		Service, Target, Node, Why string
		Port, Priority, Weight     int
	} `json:"targets"`
	Update *struct {
		Pusher     string `json:"pusher"`
		ThisNode   bool   `json:"this_node"`
		LastResult string `json:"last_result"`
		LastError  string `json:"last_error"`
		Failures   int    `json:"failures"`
	} `json:"update"`
}

func ctlDNS(t *testing.T, s *testenv.Server) dnsStatus {
	t.Helper()
	out, errOut, code := s.Ctl("--json", "dns")
	if code != 0 {
		t.Fatalf("xmppctl dns: %d %s", code, errOut)
	}
	var st dnsStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("xmppctl --json dns: %v\n%s", err, out)
	}
	return st
}

// TestDNSPublishing: xmppd serves its SRV/A records on dns-listen (asked with
// dig) and pushes them into a BIND 9 primary with RFC 2136 + TSIG; `xmppctl
// dns` shows both; a wrong TSIG key is reported there and in one log line.
func TestDNSPublishing(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Fatalf("dig not found: install bind9-dnsutils (build/setup.sh test does): %v", err)
	}
	b := bindtest.Start(t, "example.org")
	listen := "127.0.0.1:" + strconv.Itoa(bindtest.FreePort(t))
	s := testenv.Start(t, testenv.Options{Domain: "example.org", Args: []string{"--node-name", "edge1",
		"--dns-listen", listen, "--dns-update", b.Addr, "--dns-tsig-key-file", b.KeyFile, "--dns-ttl", "20s"}})

	// The embedded server: SRV for both client services with the bound ports.
	wantSRV := "15 100 " + strconv.Itoa(s.Port) + " edge1.node.example.org."
	wantTLS := "15 100 " + strconv.Itoa(s.TLSPort) + " edge1.node.example.org."
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := digShort(t, listen, "_xmpp-client._tcp.example.org", "SRV")
		if strings.Join(got, ",") == wantSRV {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("embedded SRV %q, want %q\n%s", got, wantSRV, s.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := digShort(t, listen, "+tcp", "_xmpps-client._tcp.example.org", "SRV"); strings.Join(got, ",") != wantTLS {
		t.Errorf("embedded xmpps SRV %q, want %q", got, wantTLS)
	}
	if got := digShort(t, listen, "edge1.node.example.org", "A"); strings.Join(got, ",") != "127.0.0.1" {
		t.Errorf("embedded A %q", got)
	}

	// BIND got the same records, pushed by this node (a single node pushes).
	deadline = time.Now().Add(5 * time.Second)
	for {
		got := digShort(t, b.Addr, "_xmpp-client._tcp.example.org", "SRV")
		if strings.Join(got, ",") == wantSRV {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("BIND SRV %q, want %q\n%s", got, wantSRV, s.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := digShort(t, b.Addr, "www.example.org", "A"); strings.Join(got, ",") != "192.0.2.80" {
		t.Errorf("BIND's own record changed: %q", got)
	}
	st := ctlDNS(t, s)
	if st.Listen != listen || len(st.Targets) != 2 || st.Update == nil || !st.Update.ThisNode || st.Update.Pusher != "edge1" ||
		(st.Update.LastResult != "ok" && st.Update.LastResult != "in-sync") {
		t.Fatalf("xmppctl dns: %+v %+v", st, st.Update)
	}
	out, _, _ := s.Ctl("dns")
	for _, want := range []string{"_xmpp-client._tcp", "edge1.node.example.org.", "pusher edge1 (this node: true)", "last result: "} {
		if !strings.Contains(out, want) {
			t.Errorf("xmppctl dns lacks %q:\n%s", want, out)
		}
	}
	if out, _, _ := s.Ctl("dns", "records"); !strings.Contains(out, "SOA") || !strings.Contains(out, "IN SRV 0 0 0 .") {
		t.Errorf("xmppctl dns records:\n%s", out)
	}

	// A key BIND does not know: refused, said once in the log and in xmppctl.
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte(`key "xedge-test" { algorithm hmac-sha256; secret "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="; };`), 0o600)
	s2 := testenv.Start(t, testenv.Options{Domain: "example.org", Args: []string{"--node-name", "edge2",
		"--dns-update", b.Addr, "--dns-tsig-key-file", bad}})
	deadline = time.Now().Add(10 * time.Second)
	for {
		st := ctlDNS(t, s2)
		if st.Update != nil && st.Update.Failures >= 2 {
			if st.Update.LastResult != "failed" || !strings.Contains(st.Update.LastError, "TSIG") {
				t.Fatalf("status after a bad key: %+v", st.Update)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed retries in 10 s: %+v\n%s", st.Update, s2.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := strings.Count(s2.Logs(), "dns update failed"); n != 1 {
		t.Errorf("%d 'dns update failed' log lines, want 1:\n%s", n, s2.Logs())
	}
	out, _, _ = s2.Ctl("dns")
	if !strings.Contains(out, "last error: ") || !strings.Contains(out, "embedded server: off") {
		t.Errorf("xmppctl dns on the failing node:\n%s", out)
	}
}

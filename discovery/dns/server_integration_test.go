//go:build integration

package dns

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// digRaw runs dig against addr and returns its full output, every run of
// whitespace made one space.
func digRaw(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+time=2", "+tries=1"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return strings.Join(strings.Fields(string(out)), " ") // whitespace squashed
}

// TestEmbeddedServerWithDig asks the embedded server with Debian's dig over
// UDP and TCP: SRV with glue, NXDOMAIN and NODATA with the SOA, truncation
// without EDNS and the retry over TCP, and a membership change seen by dig
// within 2 s.
func TestEmbeddedServerWithDig(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Fatalf("dig not found: install bind9-dnsutils (build/setup.sh test does): %v", err)
	}
	mv := &mutableView{v: View{
		Nodes: []Node{node("n1", "127.0.0.11", 10), node("n2", "127.0.0.12", 10), node("n3", "::1", 10)},
		VIPs:  []VIP{{netip.MustParseAddr("127.0.0.100"), "n2"}},
	}}
	srv := NewServer("127.0.0.1:0", nil)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	pub := NewPublisher(PublisherConfig{Params: testParams(), Source: mv.get, Server: srv})
	pub.Start(context.Background())
	t.Cleanup(func() { pub.Stop(context.Background()) })
	a := srv.Addr()

	out := digRaw(t, a, "_xmpp-client._tcp.example.org", "SRV")
	for _, want := range []string{"status: NOERROR", "flags: qr aa", "ANSWER: 4", "10 100 5222 127-0-0-100.vip.example.org.",
		"15 100 5222 n3.node.example.org.", "n3.node.example.org. 30 IN AAAA ::1", "127-0-0-100.vip.example.org. 30 IN A 127.0.0.100"} {
		if !strings.Contains(out, want) {
			t.Errorf("dig SRV lacks %q:\n%s", want, out)
		}
	}
	// The VIP (priority 10) is listed first for clients that ignore weights.
	if got := dig(t, a, "+tcp", "_xmpps-client._tcp.example.org", "SRV"); len(got) != 4 || !strings.HasPrefix(got[0], "10 100 5223 127-0-0-100.vip") {
		t.Errorf("dig +tcp xmpps SRV: %q", got)
	}
	out = digRaw(t, a, "nosuch.example.org", "A")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "example.org. 30 IN SOA") {
		t.Errorf("NXDOMAIN:\n%s", out)
	}
	out = digRaw(t, a, "n1.node.example.org", "AAAA")
	if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "ANSWER: 0") || !strings.Contains(out, "AUTHORITY: 1") {
		t.Errorf("NODATA:\n%s", out)
	}
	if out = digRaw(t, a, "example.com", "A"); !strings.Contains(out, "status: REFUSED") {
		t.Errorf("other zone:\n%s", out)
	}
	if got := dig(t, a, "example.org", "SOA"); len(got) != 1 || !strings.Contains(got[0], "hostmaster.example.org. ") {
		t.Errorf("SOA: %q", got)
	}
	serial0 := pub.Status().Serial

	// n1 leaves: dig stops seeing it within 2 s.
	mv.set(func(v *View) { v.Nodes = v.Nodes[1:] })
	start := time.Now()
	for {
		got := dig(t, a, "_xmpp-client._tcp.example.org", "SRV")
		if len(got) == 3 && !strings.Contains(strings.Join(got, " "), "n1.node") {
			break
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("dig still sees n1 after 2 s: %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("node left -> dig answer: %v (polling source, 250 ms period)", time.Since(start).Round(time.Millisecond))
	if s := pub.Status().Serial; int32(s-serial0) <= 0 {
		t.Errorf("serial %d not after %d", s, serial0)
	}
	if out = digRaw(t, a, "n1.node.example.org", "A"); !strings.Contains(out, "status: NXDOMAIN") {
		t.Errorf("departed node's name:\n%s", out)
	}

	// Many nodes: without EDNS the UDP answer is truncated (TC) and dig
	// retries over TCP by itself, getting everything.
	mv.set(func(v *View) { *v = bigView() })
	pub.Notify()
	deadline := time.Now().Add(2 * time.Second)
	for len(dig(t, a, "+tcp", "_xmpp-client._tcp.example.org", "SRV")) != 30 {
		if time.Now().After(deadline) {
			t.Fatal("big view not published")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out = digRaw(t, a, "+noedns", "+ignore", "_xmpp-client._tcp.example.org", "SRV")
	if !strings.Contains(out, " tc") {
		t.Errorf("no TC flag on a 30-target answer over plain UDP:\n%s", out)
	}
	out = digRaw(t, a, "+noedns", "_xmpp-client._tcp.example.org", "SRV")
	if !strings.Contains(out, "ANSWER: 30") || !strings.Contains(out, "retrying in TCP mode") {
		t.Errorf("dig did not get everything over TCP after TC:\n%s", out)
	}
}

//go:build integration

package dns

import (
	"context"
	"log/slog"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"xedge/discovery/dns/bindtest"
)

// bind is a BIND 9 the test started (bindtest) with its TSIG key loaded.
type bind struct {
	addr string
	key  TSIGKey
}

type lockedBuf = bindtest.Buffer

func startBIND(t *testing.T) *bind {
	t.Helper()
	if _, err := exec.LookPath("dig"); err != nil {
		t.Fatalf("dig not found: install bind9-dnsutils (build/setup.sh test does): %v", err)
	}
	b := bindtest.Start(t, "example.org")
	key, err := LoadKeyFile(b.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &bind{addr: b.Addr, key: key}
}

func dig(t *testing.T, addr string, args ...string) []string {
	t.Helper()
	return bindtest.Dig(t, "", addr, args...)
}

// srvTargets asks addr (over TCP) for the client SRV targets.
func srvTargets(addr string) ([]string, error) {
	return bindtest.Targets(addr, "tcp", "_xmpp-client._tcp.example.org.")
}

// waitTargets polls addr until the SRV targets are want, returning how long
// it took; it fails after within.
func waitTargets(t *testing.T, addr string, want []string, within time.Duration) time.Duration {
	t.Helper()
	want = append([]string(nil), want...)
	sort.Strings(want)
	start := time.Now()
	var got []string
	var err error
	for time.Since(start) < within {
		got, err = srvTargets(addr)
		if err == nil && strings.Join(got, ",") == strings.Join(want, ",") {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("SRV targets at %s after %v: %v (err %v), want %v", addr, within, got, err, want)
	return 0
}

type mutableView struct {
	mu sync.Mutex
	v  View
}

func (m *mutableView) get() View {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.v
	v.Nodes = append([]Node(nil), m.v.Nodes...)
	v.VIPs = append([]VIP(nil), m.v.VIPs...)
	return v
}

func (m *mutableView) set(f func(v *View)) {
	m.mu.Lock()
	f(&m.v)
	m.mu.Unlock()
}

func pusherFor(b *bind, p Params) *Pusher {
	p = p.Normalize()
	return NewPusher(PusherConfig{Server: b.addr, Zone: "example.org", Key: b.key, Domain: p.Domain, DomainAddrs: p.DomainAddrs,
		HostSuffix: []string{p.NodeLabel + "." + p.Zone, p.VIPLabel + "." + p.Zone}})
}

// TestBINDUpdates pushes the cluster's records into a real BIND 9 with TSIG,
// follows membership changes (a node leaves: its SRV and A records go), leaves
// the zone's other records alone, and measures view change -> BIND answer.
func TestBINDUpdates(t *testing.T) {
	b := startBIND(t)
	mv := &mutableView{v: View{
		Nodes: []Node{node("n1", "127.0.0.11", 10), node("n2", "127.0.0.12", 10), node("n3", "127.0.0.13", 10)},
		VIPs:  []VIP{{netip.MustParseAddr("127.0.0.100"), "n1"}},
	}}
	logs := &lockedBuf{}
	pub := NewPublisher(PublisherConfig{Params: testParams(), Source: mv.get, Pusher: pusherFor(b, testParams()),
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	ctx := context.Background()
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Stop(context.Background()) })

	all := []string{"n1.node.example.org.", "n2.node.example.org.", "n3.node.example.org.", "127-0-0-100.vip.example.org."}
	d := waitTargets(t, b.addr, all, 5*time.Second)
	t.Logf("first push visible in BIND after %v", d)

	// dig sees the records, and BIND keeps the zone's own records.
	if got := dig(t, b.addr, "_xmpp-client._tcp.example.org", "SRV"); len(got) != 4 || !strings.HasPrefix(got[0], "10 100 5222 127-0-0-100.vip.example.org.") {
		t.Fatalf("dig SRV: %q", got)
	}
	if got := dig(t, b.addr, "_xmpps-client._tcp.example.org", "SRV"); len(got) != 4 || !strings.Contains(strings.Join(got, "\n"), " 5223 n2.node.example.org.") {
		t.Fatalf("dig xmpps SRV: %q", got)
	}
	if got := dig(t, b.addr, "_xmpp-server._tcp.example.org", "SRV"); strings.Join(got, ",") != "0 0 0 ." {
		t.Fatalf("dig xmpp-server SRV: %q", got)
	}
	if got := dig(t, b.addr, "n3.node.example.org", "A"); strings.Join(got, ",") != "127.0.0.13" {
		t.Fatalf("dig n3 A: %q", got)
	}
	if got := dig(t, b.addr, "example.org", "A"); strings.Join(got, ",") != "127.0.0.100" {
		t.Fatalf("dig domain A: %q (want the VIP)", got)
	}
	if got := dig(t, b.addr, "www.example.org", "A"); strings.Join(got, ",") != "192.0.2.80" {
		t.Fatalf("the zone's own www record: %q", got)
	}
	st := pub.Status()
	if st.Update == nil || (st.Update.LastResult != "ok" && st.Update.LastResult != "in-sync") || !st.Update.LastReport.Verified || st.Update.Pushes < 1 {
		t.Fatalf("update status %+v", st.Update)
	}
	firstSerial := soaSerial(t, b.addr)

	// n3 leaves: its SRV targets and its address records go within 2 s.
	var conv []time.Duration
	for range 3 {
		mv.set(func(v *View) { v.Nodes = v.Nodes[:2] })
		start := time.Now()
		pub.Notify()
		waitTargets(t, b.addr, []string{"n1.node.example.org.", "n2.node.example.org.", "127-0-0-100.vip.example.org."}, 2*time.Second)
		d := time.Since(start)
		if got := dig(t, b.addr, "n3.node.example.org", "A"); len(got) != 0 {
			t.Fatalf("n3's A record is still in BIND: %q", got)
		}
		conv = append(conv, d)
		// ...and comes back.
		mv.set(func(v *View) { v.Nodes = append(v.Nodes, node("n3", "127.0.0.13", 10)) })
		start = time.Now()
		pub.Notify()
		waitTargets(t, b.addr, all, 2*time.Second)
		conv = append(conv, time.Since(start))
	}
	t.Logf("membership change -> BIND answer (leave, join x3): %v", conv)
	if s := soaSerial(t, b.addr); int32(s-firstSerial) <= 0 {
		t.Errorf("BIND's serial did not move: %d -> %d", firstSerial, s)
	}

	// The VIP's holder goes away: the VIP's records go, and the domain's A
	// falls back to the nodes.
	mv.set(func(v *View) { v.VIPs = nil })
	pub.Notify()
	waitTargets(t, b.addr, []string{"n1.node.example.org.", "n2.node.example.org.", "n3.node.example.org."}, 2*time.Second)
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := dig(t, b.addr, "127-0-0-100.vip.example.org", "A")
		dom := dig(t, b.addr, "example.org", "A")
		if len(got) == 0 && len(dom) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VIP A %q, domain A %q", got, dom)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A resync with nothing to do sends no update.
	rep, err := pusherFor(b, testParams()).Reconcile(ctx, pub.Builder().Build(mv.get()).RRs)
	if err != nil || !rep.InSync {
		t.Fatalf("reconcile of an unchanged view: %+v %v", rep, err)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", logs.String())
	}

	// The pusher (n1, Self) stops while others remain: it removes itself first.
	if err := pub.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := srvTargets(b.addr); strings.Join(got, ",") != "n2.node.example.org.,n3.node.example.org." {
		t.Fatalf("after the pusher stopped: %v, want n2 and n3", got)
	}
	if got := dig(t, b.addr, "n1.node.example.org", "A"); len(got) != 0 {
		t.Fatalf("the stopped pusher's A record stayed: %q", got)
	}
}

// TestBINDBadKey: a key BIND does not know is refused; the failure is logged
// once, shown in the status, and retried with backoff.
func TestBINDBadKey(t *testing.T) {
	b := startBIND(t)
	p := pusherFor(b, testParams())
	p.cfg.Key.Secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
	logs := &lockedBuf{}
	mv := &mutableView{v: View{Nodes: []Node{node("n1", "127.0.0.11", 0)}}}
	pub := NewPublisher(PublisherConfig{Params: testParams(), Source: mv.get, Pusher: p, MaxBackoff: time.Second,
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	pub.Start(context.Background())
	t.Cleanup(func() { pub.Stop(context.Background()) })
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := pub.Status()
		if st.Update.Failures >= 3 {
			if st.Update.LastResult != "failed" || !strings.Contains(st.Update.LastError, "NOTAUTH") && !strings.Contains(st.Update.LastError, "tsig") && !strings.Contains(st.Update.LastError, "bad") {
				t.Fatalf("status %+v", st.Update)
			}
			t.Logf("last error: %s", st.Update.LastError)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 3 retries in 5 s: %+v", st.Update)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "dns update failed"); n != 1 {
		t.Errorf("%d error lines for one repeated failure, want 1:\n%s", n, logs.String())
	}
	if got := dig(t, b.addr, "_xmpp-client._tcp.example.org", "SRV"); len(got) != 0 {
		t.Fatalf("records appeared with a bad key: %q", got)
	}
}

func soaSerial(t *testing.T, addr string) uint32 {
	t.Helper()
	c := &mdns.Client{Net: "tcp", Timeout: time.Second}
	q := new(mdns.Msg)
	q.SetQuestion("example.org.", mdns.TypeSOA)
	r, _, err := c.Exchange(q, addr)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("SOA: %v %v", r, err)
	}
	return r.Answer[0].(*mdns.SOA).Serial
}

// TestBINDNewPusherRepairsStalePush: a deposed leader pushes its (smaller)
// view just after the new pusher took over; the new pusher's second reconcile
// (LeaseRecheck) puts its own view back without waiting for a change.
func TestBINDNewPusherRepairsStalePush(t *testing.T) {
	b := startBIND(t)
	mv := &mutableView{v: View{Nodes: []Node{node("n1", "127.0.0.11", 0), node("n2", "127.0.0.12", 0)}}}
	logs := &lockedBuf{}
	pub := NewPublisher(PublisherConfig{Params: testParams(), Source: mv.get, Pusher: pusherFor(b, testParams()),
		Log: slog.New(slog.NewTextHandler(logs, nil))})
	took := time.Now() // n1 is the pusher from its start: it pushes, then checks again (in-sync)
	pub.Start(context.Background())
	t.Cleanup(func() { pub.Stop(context.Background()) })
	both := []string{"n1.node.example.org.", "n2.node.example.org."}
	waitTargets(t, b.addr, both, 3*time.Second)
	for pub.Status().Update.LastResult != "in-sync" {
		if time.Since(took) > LeaseRecheck/2 {
			t.Fatalf("no in-sync check soon after taking over: %+v", pub.Status().Update)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The deposed leader, which lost n1 from its view, pushes once.
	stale := NewBuilder(testParams()).Build(View{Nodes: []Node{node("n2", "127.0.0.12", 0)}})
	if _, err := pusherFor(b, testParams()).Reconcile(context.Background(), stale.RRs); err != nil {
		t.Fatal(err)
	}
	waitTargets(t, b.addr, both[1:], time.Second)
	start := time.Now()
	waitTargets(t, b.addr, both, LeaseRecheck+2*time.Second)
	t.Logf("stale push repaired after %v (%v after taking over)", time.Since(start).Round(time.Millisecond), time.Since(took).Round(time.Millisecond))
	if time.Since(took) < LeaseRecheck-300*time.Millisecond {
		t.Errorf("repaired before the lease recheck: by what?\n%s", logs.String())
	}
}

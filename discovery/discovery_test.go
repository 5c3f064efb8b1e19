package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGossipKey(t *testing.T) {
	k1, err := GossipKey([]byte("0123456789abcdef-cluster"))
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := GossipKey([]byte("0123456789abcdef-cluster"))
	k3, _ := GossipKey([]byte("0123456789abcdef-other!!"))
	if len(k1) != 32 || !bytes.Equal(k1, k2) || bytes.Equal(k1, k3) {
		t.Fatalf("derivation: len %d, stable %v, differs %v", len(k1), bytes.Equal(k1, k2), !bytes.Equal(k1, k3))
	}
	if bytes.Contains(k1, []byte("0123456789abcdef")) {
		t.Fatal("gossip key contains the cluster key")
	}
	if _, err := GossipKey([]byte("short")); err == nil {
		t.Fatal("a short cluster key was accepted")
	}
}

func TestParseSeeds(t *testing.T) {
	got, err := ParseSeeds(" 10.0.0.1:7947, node2 ,10.0.0.1:7947,[fe80::1]:9000, ::1 ,", 7401)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:7947", "node2:7401", "[fe80::1]:9000", "[::1]:7401"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
	for _, bad := range []string{"h:0", "h:70000", "h:x", ":7000"} {
		if _, err := ParseSeeds(bad, 7401); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ParseSeeds("host", 0); err == nil {
		t.Error("a seed without port and no default accepted")
	}
	srv, err := ParseServers("10.0.0.53, 127.0.0.1:5353")
	if err != nil || len(srv) != 2 || srv[0].Port() != 53 || srv[1].Port() != 5353 {
		t.Fatalf("ParseServers: %v %v", srv, err)
	}
	if _, err := ParseServers("dns.example"); err == nil {
		t.Fatal("a name accepted as a DNS server")
	}
}

func TestHostsBounds(t *testing.T) {
	p := netip.MustParsePrefix("10.1.2.77/24")
	h := Hosts(p, 22)
	if len(h) != 253 || slices.Contains(h, netip.MustParseAddr("10.1.2.77")) ||
		slices.Contains(h, netip.MustParseAddr("10.1.2.0")) || slices.Contains(h, netip.MustParseAddr("10.1.2.255")) {
		t.Fatalf("/24: %d hosts, first %v last %v", len(h), h[0], h[len(h)-1])
	}
	// A /16 is cut to the /22 around the node: 1024 - network, broadcast, self.
	h = Hosts(netip.MustParsePrefix("172.16.9.5/16"), 22)
	if len(h) != 1021 || h[0] != netip.MustParseAddr("172.16.8.1") || h[len(h)-1] != netip.MustParseAddr("172.16.11.254") {
		t.Fatalf("/16 cut to /22: %d hosts, %v..%v", len(h), h[0], h[len(h)-1])
	}
	if h := Hosts(netip.MustParsePrefix("10.0.0.1/32"), 22); len(h) != 0 {
		t.Fatalf("/32: %v", h)
	}
	if h := Hosts(netip.MustParsePrefix("10.0.0.0/31"), 22); len(h) != 1 || h[0] != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("/31: %v", h)
	}
	if h := Hosts(netip.MustParsePrefix("fd00::5/64"), 22); len(h) != 1023 {
		t.Fatalf("IPv6 /64 cut to /118: %d", len(h))
	}
}

func TestScannerRateAndBound(t *testing.T) {
	var probes atomic.Int32
	var mu sync.Mutex
	var times []time.Time
	s := &Scanner{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.10/26")}, Port: 7947, Rate: 200,
		Dial: func(ctx context.Context, a netip.AddrPort) error {
			probes.Add(1)
			mu.Lock()
			times = append(times, time.Now())
			mu.Unlock()
			if a.Addr() == netip.MustParseAddr("10.9.0.33") || a.Addr() == netip.MustParseAddr("10.9.0.50") {
				return nil
			}
			return errors.New("refused")
		}}
	start := time.Now()
	var found []netip.AddrPort
	res, err := s.Run(context.Background(), func(a netip.AddrPort) { found = append(found, a) })
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	// 64 addresses - network, broadcast, self = 61 probes at 200/s: >= 300 ms.
	if res.Probed != 61 || int(probes.Load()) != 61 {
		t.Fatalf("probed %d (dialed %d), want 61", res.Probed, probes.Load())
	}
	if took < 290*time.Millisecond {
		t.Fatalf("61 probes at 200/s took %v: not rate limited", took)
	}
	slices.SortFunc(found, func(a, b netip.AddrPort) int { return a.Compare(b) })
	if len(found) != 2 || found[0].String() != "10.9.0.33:7947" || found[1].String() != "10.9.0.50:7947" {
		t.Fatalf("found %v", found)
	}
	// No 100 ms window holds more than rate/10 + 1 probe starts.
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < 100*time.Millisecond; j++ {
			n++
		}
		if n > 21+1 {
			t.Fatalf("%d probes within 100 ms at rate 200/s", n)
		}
	}
	// A cancelled scan stops early and says so.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	s.Prefixes = []netip.Prefix{netip.MustParsePrefix("10.9.0.10/22")}
	res, err = s.Run(ctx, func(netip.AddrPort) {})
	if err == nil || res.Probed > 20 {
		t.Fatalf("cancelled scan: probed %d, err %v", res.Probed, err)
	}
}

func member(name, cluster string, st Status, role Role) Member {
	return Member{Name: name, Status: st, Tags: Tags{Role: role, Cluster: cluster, ClusterAddr: name + ":7400"}}
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name    string
		self    string
		members []Member
		closed  bool
		expect  int
		want    Action
		join    []string
	}{
		{"alone, window open", "b", []Member{member("b", "", StatusAlive, RoleNode)}, false, 0, Wait, nil},
		{"alone, window closed", "b", []Member{member("b", "", StatusAlive, RoleNode)}, true, 0, Bootstrap, nil},
		{"lowest bootstraps", "a", []Member{member("a", "", StatusAlive, RoleNode), member("b", "", StatusAlive, RoleNode), member("c", "", StatusAlive, RoleNode)}, true, 0, Bootstrap, nil},
		{"others wait", "b", []Member{member("a", "", StatusAlive, RoleNode), member("b", "", StatusAlive, RoleNode)}, true, 0, Wait, nil},
		{"failed lower does not count", "b", []Member{member("a", "", StatusFailed, RoleNode), member("b", "", StatusAlive, RoleNode)}, true, 0, Bootstrap, nil},
		{"existing cluster joined at once", "a", []Member{member("a", "", StatusAlive, RoleNode), member("c", ClusterMember, StatusAlive, RoleNode), member("d", ClusterMember, StatusAlive, RoleNode)}, false, 0, Join, []string{"c:7400", "d:7400"}},
		{"bootstrapper joined", "c", []Member{member("a", ClusterBootstrapping, StatusAlive, RoleNode), member("c", "", StatusAlive, RoleNode)}, false, 0, Join, []string{"a:7400"}},
		{"members, not bootstrappers", "z", []Member{member("a", ClusterBootstrapping, StatusAlive, RoleNode), member("b", ClusterMember, StatusAlive, RoleNode), member("z", "", StatusAlive, RoleNode)}, true, 0, Join, []string{"b:7400"}},
		// Two announce a bootstrap (b did not see a in time): b backs off to
		// a, so a is the only target; joining b too would aim at a node that
		// is about to join a itself.
		{"lowest bootstrapper only", "c", []Member{member("b", ClusterBootstrapping, StatusAlive, RoleNode), member("a", ClusterBootstrapping, StatusAlive, RoleNode), member("c", "", StatusAlive, RoleNode)}, false, 0, Join, []string{"a:7400"}},
		{"failed bootstrapper is not joined", "c", []Member{member("a", ClusterBootstrapping, StatusFailed, RoleNode), member("b", ClusterBootstrapping, StatusAlive, RoleNode), member("c", "", StatusAlive, RoleNode)}, false, 0, Join, []string{"b:7400"}},
		{"failed member is not joined", "b", []Member{member("a", ClusterMember, StatusFailed, RoleNode), member("b", "", StatusAlive, RoleNode)}, true, 0, Bootstrap, nil},
		{"witness does not bootstrap while a node is alive", "a-witness", []Member{member("a-witness", "", StatusAlive, RoleWitness), member("n1", "", StatusAlive, RoleNode)}, true, 0, Wait, nil},
		{"node bootstraps before a lower witness", "n1", []Member{member("a-witness", "", StatusAlive, RoleWitness), member("n1", "", StatusAlive, RoleNode)}, true, 0, Bootstrap, nil},
		{"only witnesses", "w1", []Member{member("w1", "", StatusAlive, RoleWitness), member("w2", "", StatusAlive, RoleWitness)}, true, 0, Bootstrap, nil},
		{"expect not met", "a", []Member{member("a", "", StatusAlive, RoleNode), member("b", "", StatusAlive, RoleNode)}, true, 3, Wait, nil},
		{"expect met", "a", []Member{member("a", "", StatusAlive, RoleNode), member("b", "", StatusAlive, RoleNode), member("c", "", StatusAlive, RoleNode)}, true, 3, Bootstrap, nil},
	}
	for _, c := range cases {
		d := Decide(c.self, c.members, c.closed, c.expect)
		if d.Action != c.want || !slices.Equal(d.Join, c.join) {
			t.Errorf("%s: got %v %v (%s), want %v %v", c.name, d.Action, d.Join, d.Reason, c.want, c.join)
		}
	}
}

// TestDecideOneBootstrapper: whatever order nodes are seen in, with the same
// view exactly one node bootstraps and every other one waits or joins it.
func TestDecideOneBootstrapper(t *testing.T) {
	names := []string{"n3", "n1", "n5", "n2", "n4"}
	for k := 1; k <= len(names); k++ {
		var ms []Member
		for _, n := range names[:k] {
			ms = append(ms, member(n, "", StatusAlive, RoleNode))
		}
		boot := 0
		for _, m := range ms {
			if Decide(m.Name, ms, true, 0).Action == Bootstrap {
				boot++
			}
		}
		if boot != 1 {
			t.Fatalf("%d nodes: %d bootstrap", k, boot)
		}
	}
}

func TestTagsRoundTrip(t *testing.T) {
	in := Tags{Role: RoleWitness, ClusterAddr: "10.0.0.1:7400", C2SPort: 5222, C2STLSPort: 5223, InService: true,
		Storage: "durable", Cluster: ClusterMember, Version: "1.2", Priority: 150, Load: 3000, Health: "ok", Draining: true}
	if out := DecodeTags(in.Encode()); out != in {
		t.Fatalf("round trip: %+v", out)
	}
	if DecodeTags(map[string]string{"pri": "x", "other": "y"}).Priority != 0 {
		t.Fatal("malformed number")
	}
}

func TestExplainJoin(t *testing.T) {
	cases := map[string]string{
		"1 error occurred:\n\t* Failed to join 10.0.0.2:7947: No installed keys could decrypt the message\n\n": "wrong cluster key",
		"Failed to join 10.0.0.2:7947: dial tcp 10.0.0.2:7947: connect: connection refused":                    "nothing listens on port 7947",
		"Failed to join 10.0.0.2:7947: dial tcp 10.0.0.2:7947: i/o timeout":                                    "timeout",
		"Failed to join 10.0.0.2:7947: dial tcp 10.0.0.2:7947: connect: no route to host":                      "unreachable",
	}
	for text, want := range cases {
		je := explainJoin("10.0.0.2:7947", errors.New(text))
		msg := je.Error()
		if !strings.Contains(msg, want) || !strings.Contains(msg, "10.0.0.2:7947") || strings.Contains(msg, "\n") {
			t.Errorf("%q -> %q, want %q on one line with the address", text, msg, want)
		}
	}
	if je := explainJoin("h:1", errors.New("No installed keys could decrypt the message")); !errors.Is(je, ErrWrongKey) {
		t.Error("key error does not match ErrWrongKey")
	}
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestGossipLogKeyError(t *testing.T) {
	var buf syncBuf
	g := &gossipLog{log: slog.New(slog.NewTextHandler(&buf, nil))}
	for i := 0; i < 3; i++ {
		fmt.Fprintf(g, "[ERR] memberlist: failed to receive: No installed keys could decrypt the message from=10.0.0.9:40112\n")
	}
	fmt.Fprintf(g, "[ERR] memberlist: Decrypt packet failed: No installed keys could decrypt the message from=10.0.0.8:7947\n[WARN] memberlist: something else\n")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines (one per sender, one warning), got:\n%s", buf.String())
	}
	if !strings.Contains(lines[0], "refused gossip from 10.0.0.9: wrong cluster key") || !strings.Contains(lines[1], "refused gossip from 10.0.0.8: wrong cluster key") {
		t.Fatalf("key errors:\n%s", buf.String())
	}
	if !strings.Contains(lines[2], "level=WARN") || !strings.Contains(lines[2], "something else") {
		t.Fatalf("warning: %s", lines[2])
	}
}

// TestLowerClaims: after its settle time an announcer backs off to an existing
// cluster, or else to the lowest-named announcer below it, and to that one only.
func TestLowerClaims(t *testing.T) {
	boot := func(n string) Member { return member(n, ClusterBootstrapping, StatusAlive, RoleNode) }
	cases := []struct {
		self string
		ms   []Member
		want []string
	}{
		{"a", []Member{boot("a"), boot("b"), boot("c")}, nil},
		{"c", []Member{boot("c"), boot("b"), boot("a")}, []string{"a:7400"}},
		{"b", []Member{boot("b"), boot("c")}, nil},
		{"a", []Member{boot("a"), boot("b"), member("d", ClusterMember, StatusAlive, RoleNode)}, []string{"d:7400"}},
	}
	for _, c := range cases {
		if got := lowerClaims(c.self, c.ms); !slices.Equal(got, c.want) {
			t.Errorf("lowerClaims(%s, ...) = %v; want %v", c.self, got, c.want)
		}
	}
}

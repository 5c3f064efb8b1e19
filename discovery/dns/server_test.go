package dns

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func testZone(t *testing.T, v View) (*Zone, *Builder) {
	t.Helper()
	b := NewBuilder(testParams())
	res := b.Build(v)
	p := b.Params()
	return NewZone(p.Zone, 2026120501, p.TTL, p.Mbox, res.RRs), b
}

func threeNodes() View {
	return View{Nodes: []Node{node("n1", "10.0.0.1", 10), node("n2", "10.0.0.2", 10), node("n3", "fd00::3", 10)}}
}

func ask(s *Server, name string, qt uint16, edns bool, tcp bool) *mdns.Msg {
	q := new(mdns.Msg)
	q.SetQuestion(name, qt)
	if edns {
		q.SetEdns0(4096, false)
	}
	return s.respond(q, tcp)
}

func TestAnswers(t *testing.T) {
	z, _ := testZone(t, threeNodes())
	s := NewServer("127.0.0.1:0", nil)
	s.SetZone(z)
	cases := []struct {
		name          string
		qt            uint16
		rcode         int
		answers, auth int
		extra         int
		aa            bool
	}{
		{"_xmpp-client._tcp.example.org.", mdns.TypeSRV, mdns.RcodeSuccess, 3, 0, 3, true},
		{"_XMPP-Client._TCP.Example.ORG.", mdns.TypeSRV, mdns.RcodeSuccess, 3, 0, 3, true},
		{"_xmpp-server._tcp.example.org.", mdns.TypeSRV, mdns.RcodeSuccess, 1, 0, 0, true},
		{"n1.node.example.org.", mdns.TypeA, mdns.RcodeSuccess, 1, 0, 0, true},
		{"n3.node.example.org.", mdns.TypeAAAA, mdns.RcodeSuccess, 1, 0, 0, true},
		{"n3.node.example.org.", mdns.TypeA, mdns.RcodeSuccess, 0, 1, 0, true},     // NODATA
		{"_tcp.example.org.", mdns.TypeTXT, mdns.RcodeSuccess, 0, 1, 0, true},      // empty non-terminal: NODATA
		{"node.example.org.", mdns.TypeA, mdns.RcodeSuccess, 0, 1, 0, true},        // empty non-terminal
		{"nosuch.example.org.", mdns.TypeA, mdns.RcodeNameError, 0, 1, 0, true},    // NXDOMAIN + SOA
		{"x.n1.node.example.org.", mdns.TypeA, mdns.RcodeNameError, 0, 1, 0, true}, // below a leaf
		{"example.org.", mdns.TypeSOA, mdns.RcodeSuccess, 1, 0, 0, true},           // SOA
		{"example.org.", mdns.TypeNS, mdns.RcodeSuccess, 3, 0, 3, true},            // NS + glue
		{"example.com.", mdns.TypeA, mdns.RcodeRefused, 0, 0, 0, false},            // not our zone
		{"example.org.", mdns.TypeAXFR, mdns.RcodeRefused, 0, 0, 0, false},         // no transfers
	}
	for _, c := range cases {
		m := ask(s, c.name, c.qt, false, false)
		if m.Rcode != c.rcode || len(m.Answer) != c.answers || len(m.Ns) != c.auth || len(m.Extra) != c.extra || m.Authoritative != c.aa {
			t.Errorf("%s %s: rcode %s answers %d auth %d extra %d aa %v; want %s %d %d %d %v\n%v", c.name, mdns.TypeToString[c.qt],
				mdns.RcodeToString[m.Rcode], len(m.Answer), len(m.Ns), len(m.Extra), m.Authoritative,
				mdns.RcodeToString[c.rcode], c.answers, c.auth, c.extra, c.aa, m)
		}
		if c.auth == 1 {
			if soa, ok := m.Ns[0].(*mdns.SOA); !ok || soa.Serial != 2026120501 || soa.Minttl != 30 {
				t.Errorf("%s: authority %v, want the SOA", c.name, m.Ns)
			}
		}
		if c.answers > 0 && m.Answer[0].Header().Name != c.name {
			t.Errorf("%s: owner %s, want the query's spelling", c.name, m.Answer[0].Header().Name)
		}
	}
	// Not a query, two questions, wrong class, EDNS version 1.
	q := new(mdns.Msg)
	q.SetUpdate("example.org.")
	if m := s.respond(q, false); m.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("update: %s", mdns.RcodeToString[m.Rcode])
	}
	q = new(mdns.Msg)
	q.SetQuestion("example.org.", mdns.TypeA)
	q.Question = append(q.Question, q.Question[0])
	if m := s.respond(q, false); m.Rcode != mdns.RcodeFormatError {
		t.Errorf("two questions: %s", mdns.RcodeToString[m.Rcode])
	}
	q = new(mdns.Msg)
	q.SetQuestion("example.org.", mdns.TypeA)
	q.Question[0].Qclass = mdns.ClassCHAOS
	if m := s.respond(q, false); m.Rcode != mdns.RcodeRefused {
		t.Errorf("chaos class: %s", mdns.RcodeToString[m.Rcode])
	}
	q = new(mdns.Msg)
	q.SetQuestion("example.org.", mdns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	if m := s.respond(q, false); m.Rcode != mdns.RcodeBadVers {
		t.Errorf("EDNS version 1: %s", mdns.RcodeToString[m.Rcode])
	}
	// Before the first zone: SERVFAIL, never a wrong NXDOMAIN.
	empty := NewServer("127.0.0.1:0", nil)
	if m := ask(empty, "example.org.", mdns.TypeA, false, false); m.Rcode != mdns.RcodeServerFailure {
		t.Errorf("no zone yet: %s", mdns.RcodeToString[m.Rcode])
	}
}

// bigView has enough targets that the SRV answer overflows 512 bytes.
func bigView() View {
	var v View
	for i := range 30 {
		v.Nodes = append(v.Nodes, node(fmt.Sprintf("node-with-a-long-name-%02d", i), fmt.Sprintf("10.0.1.%d", i+1), 10))
	}
	return v
}

func TestTruncation(t *testing.T) {
	z, _ := testZone(t, bigView())
	s := NewServer("127.0.0.1:0", nil)
	s.SetZone(z)
	m := ask(s, "_xmpp-client._tcp.example.org.", mdns.TypeSRV, false, false)
	if !m.Truncated || m.Len() > 512 {
		t.Errorf("plain UDP: truncated %v, %d bytes", m.Truncated, m.Len())
	}
	m = ask(s, "_xmpp-client._tcp.example.org.", mdns.TypeSRV, true, false)
	if m.Len() > ednsSize {
		t.Errorf("EDNS UDP answer %d bytes > %d", m.Len(), ednsSize)
	}
	m = ask(s, "_xmpp-client._tcp.example.org.", mdns.TypeSRV, false, true)
	if m.Truncated || len(m.Answer) != 30 || len(m.Extra) != 30 {
		t.Errorf("TCP: truncated %v, %d answers, %d extra", m.Truncated, len(m.Answer), len(m.Extra))
	}
}

func TestOrderSRVFollowsWeights(t *testing.T) {
	mk := func(target string, prio, w uint16) *mdns.SRV {
		return &mdns.SRV{Hdr: mdns.RR_Header{Name: "s.", Rrtype: mdns.TypeSRV}, Target: target, Priority: prio, Weight: w}
	}
	first := map[string]int{}
	for range 4000 {
		rrs := []mdns.RR{mk("late.", 20, 1000), mk("heavy.", 10, 300), mk("light.", 10, 100)}
		orderSRV(rrs)
		if rrs[2].(*mdns.SRV).Target != "late." {
			t.Fatalf("priority 20 not last: %v", rrs)
		}
		first[rrs[0].(*mdns.SRV).Target]++
	}
	// heavy should come first ~75% of the time.
	if r := float64(first["heavy."]) / 4000; r < 0.70 || r > 0.80 {
		t.Errorf("heavy first %.2f of the time, want ~0.75", r)
	}
}

func TestServerUDPTCPAndConvergence(t *testing.T) {
	var mu sync.Mutex
	view := threeNodes()
	src := func() View {
		mu.Lock()
		defer mu.Unlock()
		v := view
		v.Nodes = append([]Node(nil), view.Nodes...)
		return v
	}
	srv := NewServer("127.0.0.1:0", nil)
	ctx := context.Background()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	pub := NewPublisher(PublisherConfig{Params: testParams(), Source: src, Server: srv})
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pub.Stop(context.Background()) })

	query := func(netw string) *mdns.Msg {
		t.Helper()
		c := &mdns.Client{Net: netw, Timeout: 2 * time.Second}
		q := new(mdns.Msg)
		q.SetQuestion("_xmpp-client._tcp.example.org.", mdns.TypeSRV)
		r, _, err := c.Exchange(q, srv.Addr())
		if err != nil {
			t.Fatalf("%s query: %v", netw, err)
		}
		return r
	}
	for _, netw := range []string{"udp", "tcp"} {
		if r := query(netw); len(r.Answer) != 3 || !r.Authoritative {
			t.Fatalf("%s: %v", netw, r)
		}
	}
	serial0 := pub.Status().Serial

	// A node leaves: the served answer follows within 2 s (measured).
	mu.Lock()
	view.Nodes = view.Nodes[:2]
	mu.Unlock()
	start := time.Now()
	deadline := start.Add(2 * time.Second)
	for {
		if r := query("udp"); len(r.Answer) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the answer still lists the departed node after 2 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("convergence (node left -> served answer): %v (poll, no Notify)", time.Since(start).Round(time.Millisecond))
	if s := pub.Status().Serial; int32(s-serial0) <= 0 {
		t.Errorf("serial %d did not increase from %d", s, serial0)
	}
	// With Notify it is immediate.
	mu.Lock()
	view.Nodes = append(view.Nodes, node("n4", "10.0.0.4", 0))
	mu.Unlock()
	start = time.Now()
	ch := pub.Changes()
	pub.Notify()
	select {
	case <-ch:
	case <-time.After(2 * time.Second):
		t.Fatal("no change after Notify")
	}
	if r := query("tcp"); len(r.Answer) != 3 {
		t.Fatalf("after n4 joined: %v", r)
	}
	t.Logf("convergence with Notify: %v", time.Since(start).Round(time.Microsecond))
	// Nothing changed: the serial stays.
	s1 := pub.Status().Serial
	pub.Notify()
	time.Sleep(50 * time.Millisecond)
	if s2 := pub.Status().Serial; s2 != s1 {
		t.Errorf("serial moved %d -> %d without a change", s1, s2)
	}
}

func TestLoadSampledNotChurned(t *testing.T) {
	var mu sync.Mutex
	load := 10
	src := func() View {
		mu.Lock()
		defer mu.Unlock()
		return View{Nodes: []Node{node("n1", "10.0.0.1", load), node("n2", "10.0.0.2", 10)}}
	}
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	pub := NewPublisher(PublisherConfig{Params: testParams(), Source: src, LoadInterval: 15 * time.Second, Now: clock})
	pub.refresh()
	s0 := pub.Status().Serial
	mu.Lock()
	load = 500 // a load spike: weights wait for the next sample
	now = now.Add(time.Second)
	mu.Unlock()
	pub.refresh()
	if s := pub.Status().Serial; s != s0 {
		t.Fatalf("serial changed on a load change inside the sampling interval")
	}
	mu.Lock()
	now = now.Add(15 * time.Second)
	mu.Unlock()
	pub.refresh()
	st := pub.Status()
	if st.Serial == s0 || len(st.Loaded) != 1 || st.Loaded[0] != "n1" {
		t.Fatalf("after the sample: serial %d (was %d), loaded %v", st.Serial, s0, st.Loaded)
	}
}

// TestReplyFromTheAddressAsked: listening on every address (the appliance's
// dns-listen 0.0.0.0:53), a UDP answer leaves from the address the query was
// sent to (a VIP), or the client — here a connected UDP socket — drops it.
func TestReplyFromTheAddressAsked(t *testing.T) {
	srv := NewServer("0.0.0.0:0", nil)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(context.Background()) })
	z, _ := testZone(t, threeNodes())
	srv.SetZone(z)
	_, port, _ := net.SplitHostPort(srv.Addr())
	for _, ip := range []string{"127.0.0.1", "127.0.0.77"} {
		c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
		q := new(mdns.Msg)
		q.SetQuestion("n1.node.example.org.", mdns.TypeA)
		r, _, err := c.Exchange(q, net.JoinHostPort(ip, port))
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("query to %s: %v %v", ip, r, err)
		}
	}
}

// BenchmarkRespondSRV: building one SRV answer (three targets with glue, RFC
// 2782 ordering) without sockets.
func BenchmarkRespondSRV(b *testing.B) {
	br := NewBuilder(testParams())
	p := br.Params()
	z := NewZone(p.Zone, 1, p.TTL, p.Mbox, br.Build(threeNodes()).RRs)
	s := NewServer("127.0.0.1:0", nil)
	s.SetZone(z)
	q := new(mdns.Msg)
	q.SetQuestion("_xmpp-client._tcp.example.org.", mdns.TypeSRV)
	b.ReportAllocs()
	for b.Loop() {
		if m := s.respond(q, false); len(m.Answer) != 3 {
			b.Fatal(m)
		}
	}
}

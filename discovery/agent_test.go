package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/internal/freeport"
)

// freeGossipAddr returns ip:port with the port free on TCP and UDP a moment ago,
// below the ephemeral range (internal/freeport).
func freeGossipAddr(t *testing.T, ip string) netip.AddrPort {
	t.Helper()
	p, err := freeport.TCPUDP(ip)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(p))
}

var testKey = []byte("test-cluster-key-0123456789abcdef")

type testNode struct {
	*Agent
	name string
	log  *syncBuf
}

func startAgent(t *testing.T, name, ip string, key []byte, seeds []string, mod func(*Config)) *testNode {
	t.Helper()
	buf := &syncBuf{}
	addr := freeGossipAddr(t, ip)
	cfg := Config{NodeName: name, BindAddr: addr, ClusterKey: key, Seeds: seeds,
		Tags:   Tags{Role: RoleNode, ClusterAddr: ip + ":7400", InService: true},
		Logger: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	return &testNode{Agent: a, name: name, log: buf}
}

func statusOf(a *Agent, name string) Status {
	for _, m := range a.Members() {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func aliveCount(a *Agent) int {
	n := 0
	for _, m := range a.Members() {
		if m.Status == StatusAlive {
			n++
		}
	}
	return n
}

// TestAgentsFormTagsAndFailureDetection: three agents on 127.0.0.x find each
// other through one seed, see each other's tag changes, and declare a node that
// stops answering (no leave) failed in about a second: measured over three
// kills, the median within 1.5 s and none beyond 3 s.
func TestAgentsFormTagsAndFailureDetection(t *testing.T) {
	n1 := startAgent(t, "n1", "127.0.0.1", testKey, nil, nil)
	seed := []string{n1.cfg.AdvertiseAddr.String()}
	n2 := startAgent(t, "n2", "127.0.0.2", testKey, seed, nil)
	sub, cancel := n1.Subscribe()
	defer cancel()
	var detect []time.Duration
	for round := 0; round < 3; round++ {
		n3 := startAgent(t, fmt.Sprintf("n3-%d", round), "127.0.0.3", testKey, seed, nil)
		for _, a := range []*testNode{n1, n2, n3} {
			waitFor(t, 5*time.Second, a.name+" sees 3 alive", func() bool { return aliveCount(a.Agent) == 3 })
		}
		if round == 0 {
			// Tags: a change on n2 reaches n1 and fires its subscription.
			for len(sub) > 0 {
				<-sub
			}
			if err := n2.UpdateTags(func(t *Tags) { t.Load, t.Storage = 42, "durable" }); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 3*time.Second, "n2's tags at n1", func() bool {
				for _, m := range n1.Members() {
					if m.Name == "n2" && m.Tags.Load == 42 && m.Tags.Storage == "durable" {
						return true
					}
				}
				return false
			})
			select {
			case <-sub:
			case <-time.After(time.Second):
				t.Fatal("no notification for a tag change")
			}
			if l := n2.Local(); l.Tags.Load != 42 || l.FoundBy != "self" || l.Status != StatusAlive {
				t.Fatalf("local: %+v", l)
			}
			for _, m := range n2.Members() {
				if m.Name == "n1" && m.FoundBy != "seed" {
					t.Fatalf("n1 found by %q at n2, want seed", m.FoundBy)
				}
			}
		}
		kill := time.Now()
		if err := n3.Shutdown(); err != nil {
			t.Fatal(err)
		}
		var worst time.Duration
		for _, a := range []*testNode{n1, n2} {
			waitFor(t, 5*time.Second, a.name+" declares "+n3.name+" failed", func() bool { return statusOf(a.Agent, n3.name) == StatusFailed })
			worst = max(worst, time.Since(kill))
		}
		detect = append(detect, worst)
	}
	sorted := slices.Clone(detect)
	slices.Sort(sorted)
	t.Logf("failure detection (kill -> both survivors see failed), 3 nodes: %v (median %v)", detect, sorted[1])
	// About a second: the median of the three kills within 1.5 s, and none beyond
	// 3 s (memberlist's LAN defaults take ~5 s for 3 nodes, so a lost tuning still
	// fails). One slow round alone is the machine's load (seen: 1.9 s with the
	// other packages' -race tests beside it), not the tuning.
	if sorted[1] > 1500*time.Millisecond || sorted[2] > 3*time.Second {
		t.Fatalf("failure detection: median %v (want <= 1.5 s), slowest %v (want <= 3 s): %v", sorted[1], sorted[2], detect)
	}
	// A graceful stop shows as left, not failed.
	if err := n2.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "n2 left at n1", func() bool { return statusOf(n1.Agent, "n2") == StatusLeft })
}

// TestAgentWrongKey: a node with another cluster key is refused; its join error
// names the seed and the key on one line, and the seed logs one line naming the
// refused address.
func TestAgentWrongKey(t *testing.T) {
	good := startAgent(t, "good", "127.0.0.1", testKey, nil, nil)
	bad := startAgent(t, "bad", "127.0.0.4", []byte("another-key-0123456789abcdef!"), nil, nil)
	seed := good.cfg.AdvertiseAddr.String()
	n, err := bad.Join([]string{seed}, "seed")
	if n != 0 || err == nil {
		t.Fatalf("join with the wrong key: n=%d err=%v", n, err)
	}
	var je *JoinError
	if !errors.As(err, &je) || !errors.Is(err, ErrWrongKey) {
		t.Fatalf("join error %v is not a wrong-key JoinError", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, seed) || !strings.Contains(msg, "wrong cluster key") {
		t.Fatalf("join error is not one line naming the seed and the key: %q", msg)
	}
	t.Logf("joiner's error: %s", msg)
	// The joiner's streams leave from its gossip address, so the seed names it.
	refused := regexp.MustCompile(`refused gossip from 127\.0\.0\.4: wrong cluster key`)
	waitFor(t, 3*time.Second, "the seed logs the refusal", func() bool { return refused.MatchString(good.log.String()) })
	var lines []string
	for _, l := range strings.Split(good.log.String(), "\n") {
		if strings.Contains(l, "wrong cluster key") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one refusal line at the seed, got %d:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	t.Logf("seed's log: %s", lines[0])
	if statusOf(good.Agent, "bad") != "" || statusOf(bad.Agent, "good") != "" {
		t.Fatal("the wrong-key node became a member")
	}
	if len(good.KeyRefused()) == 0 {
		t.Fatal("KeyRefused is empty")
	}
	// A seed where nothing listens names the port.
	closed := freeGossipAddr(t, "127.0.0.1")
	_, err = good.Join([]string{closed.String()}, "seed")
	if err == nil || !strings.Contains(err.Error(), closed.String()) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("join of a closed port: %v", err)
	}
}

// TestAutoJoinSimultaneous: nodes that start at (nearly) the same moment, each
// seeded with the others, end with exactly one bootstrapper that every other
// node joins; a node started later joins at once without waiting the window.
func TestAutoJoinSimultaneous(t *testing.T) {
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			names := []string{"c", "a", "b"}
			ips := []string{"127.0.1.3", "127.0.1.1", "127.0.1.2"}
			addrs := make([]netip.AddrPort, 3)
			for i := range names {
				addrs[i] = freeGossipAddr(t, ips[i])
			}
			var seeds []string
			for _, a := range addrs {
				seeds = append(seeds, a.String())
			}
			type result struct {
				name string
				d    Decision
				err  error
			}
			res := make(chan result, 3)
			var wg sync.WaitGroup
			nodes := make([]*testNode, 3)
			for i := range names {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					time.Sleep(time.Duration(i*round*150) * time.Millisecond) // staggered starts in later rounds
					nodes[i] = startAgent(t, names[i], ips[i], testKey, seeds, func(c *Config) { c.BindAddr = addrs[i] })
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					// A window of 2 s, not the 500 ms that suffices on a quiet
					// machine: the rule is timed, and at load 30 a node's first
					// gossip was not seen within 500 ms (two bootstrappers).
					d, err := nodes[i].AutoJoin(ctx, AutoJoinOptions{Window: 2 * time.Second})
					if err == nil && d.Action == Bootstrap {
						_ = nodes[i].UpdateTags(func(t *Tags) { t.Cluster = ClusterMember })
					}
					res <- result{names[i], d, err}
				}(i)
			}
			wg.Wait()
			close(res)
			var boot []string
			joins := map[string][]string{}
			for r := range res {
				if r.err != nil {
					t.Fatalf("%s: %v", r.name, r.err)
				}
				if r.d.Action == Bootstrap {
					boot = append(boot, r.name)
				} else {
					joins[r.name] = r.d.Join
				}
			}
			if len(boot) != 1 {
				t.Fatalf("bootstrappers: %v (joins %v)", boot, joins)
			}
			want := map[string]string{"a": "127.0.1.1:7400", "b": "127.0.1.2:7400", "c": "127.0.1.3:7400"}[boot[0]]
			for n, j := range joins {
				if !slices.Equal(j, []string{want}) {
					t.Fatalf("%s joins %v, want [%s] (bootstrapper %s)", n, j, want, boot[0])
				}
			}
			t.Logf("round %d: %s bootstrapped, joins %v", round, boot[0], joins)
			// A late node joins at once (an existing cluster needs no window):
			// once gossip has shown it the bootstrapper in its cluster, AutoJoin
			// decides on its first look, before it would wait at all, so even a
			// context that has already ended gets the decision. (Timing the
			// call instead timed gossip: under load the late node's first
			// push/pull with its seed took 2.5-5 s and the 3 s bound failed.)
			late := startAgent(t, "0-late", "127.0.1.4", testKey, seeds[:1], nil)
			waitFor(t, 30*time.Second, "the late node to see the bootstrapper in its cluster", func() bool {
				for _, m := range late.Members() {
					if m.Name == boot[0] && m.Status == StatusAlive && m.Tags.Cluster == ClusterMember {
						return true
					}
				}
				return false
			})
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			d, err := late.AutoJoin(ctx, AutoJoinOptions{Window: time.Hour})
			if err != nil || d.Action != Join || !slices.Contains(d.Join, want) {
				t.Fatalf("late node: %v %v; its log:\n%s", d, err, late.log.String())
			}
		})
	}
}

// TestAutoJoinGivesUp: a node that must wait for a lower-named one that never
// bootstraps gives up when its context ends and says what it saw.
func TestAutoJoinGivesUp(t *testing.T) {
	a := startAgent(t, "a", "127.0.2.1", testKey, nil, nil)
	b := startAgent(t, "b", "127.0.2.2", testKey, []string{a.cfg.AdvertiseAddr.String()}, nil)
	waitFor(t, 5*time.Second, "b sees a", func() bool { return statusOf(b.Agent, "a") == StatusAlive })
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := b.AutoJoin(ctx, AutoJoinOptions{Window: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "waiting for a") || !strings.Contains(err.Error(), "a 127.0.2.1") {
		t.Fatalf("err = %v", err)
	}
}

// TestAutoJoinWrongKeyDoesNotBootstrap: a node whose seed refuses its key does
// not bootstrap a cluster of its own beside it; its error names the seed and the key.
func TestAutoJoinWrongKeyDoesNotBootstrap(t *testing.T) {
	good := startAgent(t, "z-good", "127.0.2.5", testKey, nil, nil)
	seed := good.cfg.AdvertiseAddr.String()
	bad := startAgent(t, "a-bad", "127.0.2.6", []byte("another-key-0123456789abcdef!"), []string{seed}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := bad.AutoJoin(ctx, AutoJoinOptions{Window: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), seed) || !strings.Contains(err.Error(), "wrong cluster key") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("decision %v, err %v", d, err)
	}
	t.Logf("%v", err)
}

// TestScanNamesClusterPortWithoutGossip: a scan that finds no gossip port but a
// host answering on the cluster port names that host and both ports.
func TestScanNamesClusterPortWithoutGossip(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.3.7:0") // an "xmppd" with discovery off: cluster port only
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	clusterPort := netip.MustParseAddrPort(l.Addr().String()).Port()
	n := startAgent(t, "scanner", "127.0.3.1", testKey, nil, func(c *Config) {
		c.Scan, c.ScanRate, c.ClusterPort = true, 1000, clusterPort
		c.ScanPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.3.1/28")}
	})
	want := fmt.Sprintf("subnet scan: 127.0.3.7 answers on the cluster port %d but not on the gossip port %d", clusterPort, n.cfg.AdvertiseAddr.Port())
	waitFor(t, 5*time.Second, "the cluster-port diagnostic", func() bool { return strings.Contains(n.log.String(), want) })
}

// TestSeedFoundBeforeItsJoin: a configured seed that joins this node before
// this node's seed loop has dialled it is still found by "seed", not "gossip"
// (xmppd's TestDiscoveryProcessesFormOneCluster failed so under load: disc-a
// listed disc-b, one of its seeds, as found by gossip). The seed loop is held
// up here by a DNS SRV lookup against a server that never answers (5 s), so
// the seed's own join always comes first.
func TestSeedFoundBeforeItsJoin(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // a DNS server that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	bAddr := freeGossipAddr(t, "127.0.4.2")
	a := startAgent(t, "a", "127.0.4.1", testKey, []string{bAddr.String()}, func(c *Config) {
		c.SRVDomain = "seeds.test"
		c.DNSServers = []netip.AddrPort{netip.MustParseAddrPort(silent.LocalAddr().String())}
	})
	startAgent(t, "b", "127.0.4.2", testKey, []string{a.cfg.AdvertiseAddr.String()}, func(c *Config) { c.BindAddr = bAddr })
	waitFor(t, 30*time.Second, "a sees b", func() bool { return statusOf(a.Agent, "b") == StatusAlive })
	for _, m := range a.Members() {
		if m.Name == "b" && m.FoundBy != "seed" {
			t.Fatalf("b, a configured seed of a, found by %q", m.FoundBy)
		}
	}
}

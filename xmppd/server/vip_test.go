package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"xedge/discovery"
	"xedge/discovery/vip"
	"xedge/netcfg"
	"xedge/xmppd/config"
)

func TestFirewallSpecFromConfig(t *testing.T) {
	c := config.Defaults()
	c.C2S, c.C2STLS, c.ClusterAddr = "0.0.0.0:5222", ":5223", "127.0.0.1:7400"
	c.DNS.Listen = "0.0.0.0:53"
	c.VIP.FirewallClusterNets = "10.1.2.3/24"
	s, err := firewallSpec(&c)
	if err != nil {
		t.Fatal(err)
	}
	got := func(ps []netcfg.Port) string {
		var out []string
		for _, p := range ps {
			out = append(out, p.String())
		}
		return strings.Join(out, " ")
	}
	if g := got(s.Open); g != "5222/tcp 5223/tcp 53/udp 53/tcp" {
		t.Fatalf("open %s", g)
	}
	if g := got(s.Cluster); g != "7400/tcp 7401/tcp 7401/udp" {
		t.Fatalf("cluster %s", g)
	}
	if len(s.ClusterSubnets) != 1 || s.ClusterSubnets[0].String() != "10.1.2.0/24" || s.RatePerSource != 20 || !s.DropOther {
		t.Fatalf("spec %+v", s)
	}
	// Without subnets the cluster address's interface names it (loopback here).
	c.VIP.FirewallClusterNets = ""
	if s, err = firewallSpec(&c); err != nil || len(s.ClusterSubnets) != 1 || s.ClusterSubnets[0].String() != "127.0.0.0/8" {
		t.Fatalf("derived subnets %v %v", s.ClusterSubnets, err)
	}
	c.ClusterAddr = "0.0.0.0:7400"
	if _, err := firewallSpec(&c); err == nil || !strings.Contains(err.Error(), "firewall-cluster-subnets") {
		t.Fatalf("unspecified cluster address: %v", err)
	}
	c.VIP.FirewallOpen = "5222,x"
	if _, err := firewallSpec(&c); err == nil {
		t.Fatal("bad port list accepted")
	}
}

// The VIP holder n1's row vanishes (the store's ephemeral timeout: n1 died, or
// is only silent under load) while the gossip has it alive: its last row stands
// for it, so no peer takes its VIP as an orphan (under load that put the VIP on
// two nodes and moved it back and forth). Once the gossip suspects it or
// declares it failed, or the grace is over, the spare n3 stands in at once —
// not the in-service n2, which took the VIP as an orphan and kept it when the
// rows went first (the spare never stood in: TestVIPSpare's failure).
func TestVIPViewRowsVanishingBeforeTheGossip(t *testing.T) {
	const pool = "10.0.0.100/24"
	policy := vip.Policy{VIPs: []string{pool}, Preempt: true, Quorum: true}
	n1 := vipRow{Healthy: true, InService: true, Priority: 100, Preemptible: true, Holds: []string{pool}}
	n2 := vipRow{Healthy: true, InService: true, Priority: 100, Preemptible: true}
	spare := vip.Node{Name: "n3", Healthy: true, Priority: 100}
	members := func(n1 discovery.Status) []discovery.Member {
		return []discovery.Member{{Name: "n1", Status: n1}, {Name: "n2", Status: discovery.StatusAlive}, {Name: "n3", Status: discovery.StatusAlive}}
	}
	both := []peerVIPRow{{"n1", n1}, {"n2", n2}}
	t0 := time.Now()
	// fresh: the maps of a node that saw every member up at t0.
	fresh := func() (map[string]bool, map[string]seenRow) {
		known, seen := map[string]bool{}, map[string]seenRow{}
		v := buildVIPView(spare, both, members(discovery.StatusAlive), known, seen, t0, nil)
		if p := policy.Assign(v); p.Holder[pool] != "n1" || p.StandIn {
			t.Fatalf("all up: holder %q stand-in %v, want n1 without stand-in", p.Holder[pool], p.StandIn)
		}
		return known, seen
	}
	plan := func(known map[string]bool, seen map[string]seenRow, st discovery.Status, after time.Duration) vip.Plan {
		return policy.Assign(buildVIPView(spare, both[1:], members(st), known, seen, t0.Add(after), nil))
	}
	for _, st := range []discovery.Status{discovery.StatusSuspect, discovery.StatusFailed} {
		known, seen := fresh()
		if p := plan(known, seen, discovery.StatusAlive, 500*time.Millisecond); p.Holder[pool] != "n1" || p.StandIn {
			t.Errorf("n1 alive, its row gone 0.5 s: holder %q stand-in %v, want n1 (its last row) without stand-in", p.Holder[pool], p.StandIn)
		}
		if p := plan(known, seen, st, time.Second); p.Holder[pool] != "n3" || !p.StandIn {
			t.Errorf("n1 %v after its row went: holder %q stand-in %v, want the spare n3 standing in", st, p.Holder[pool], p.StandIn)
		}
		// n1 restarted: a live member again, but it stands for itself only once it
		// publishes its row (until then the spare keeps standing in).
		if p := plan(known, seen, discovery.StatusAlive, 2*time.Second); p.Holder[pool] != "n3" || !p.StandIn {
			t.Errorf("restarted n1 without a row yet: holder %q stand-in %v, want the spare n3 standing in", p.Holder[pool], p.StandIn)
		}
		back := []peerVIPRow{{"n1", vipRow{Healthy: true, InService: true, Priority: 100}}, {"n2", n2}}
		if p := policy.Assign(buildVIPView(spare, back, members(discovery.StatusAlive), known, seen, t0.Add(3*time.Second), nil)); p.StandIn {
			t.Errorf("every member back with its row: still standing in (holder %q)", p.Holder[pool])
		}
	}
	// The gossip never stops answering for n1: the spare stands in after the grace.
	known, seen := fresh()
	if p := plan(known, seen, discovery.StatusAlive, rowGrace+time.Second); p.Holder[pool] != "n3" || !p.StandIn {
		t.Errorf("n1 alive, its row gone for longer than the grace: holder %q stand-in %v, want the spare n3", p.Holder[pool], p.StandIn)
	}
	// A witness publishes no VIP row: the membership alone makes it visible.
	known, seen = fresh()
	w := append(members(discovery.StatusAlive), discovery.Member{Name: "w", Status: discovery.StatusAlive})
	if v := buildVIPView(spare, both, w, known, seen, t0, nil); v.Visible != 4 || v.Known != 4 {
		t.Errorf("with a witness: known %d visible %d, want 4 and 4", v.Known, v.Visible)
	}
}

// A false node loss heals: n1 was cut off from the store (its peers' rows
// vanished here, no quorum) while n2 took its VIP over. The peers' rows come
// back one at a time: with n3's alone n1 has quorum again and the VIP looks
// orphaned, but n1 must not take it back before n2 published its row — which
// says n2 holds it — even while the gossip has n2 failed for a moment (it
// flaps under load). Survivors are not held back: one that kept quorum, and
// one that lost it for a moment after it had taken a vanished member's VIP.
func TestVIPRejoinWaitsForLiveMembersRows(t *testing.T) {
	const pool = "10.0.0.100/24"
	policy := vip.Policy{VIPs: []string{pool}, Preempt: true, Quorum: true}
	self := vip.Node{Name: "n1", Healthy: true, InService: true, Priority: 100, Preemptible: true}
	idle := vipRow{Healthy: true, InService: true, Priority: 100, Preemptible: true}
	holder := vipRow{Healthy: true, InService: true, Priority: 100, Preemptible: true, Holds: []string{pool}}
	alive := []discovery.Member{{Name: "n1", Status: discovery.StatusAlive}, {Name: "n2", Status: discovery.StatusAlive}, {Name: "n3", Status: discovery.StatusAlive}}
	flapped := []discovery.Member{alive[0], {Name: "n2", Status: discovery.StatusFailed}, alive[2]}
	t0 := time.Now()
	// node is one node's view over time.
	type node struct {
		known map[string]bool
		seen  map[string]seenRow
		r     rejoinSettle
	}
	newNode := func() *node { return &node{known: map[string]bool{}, seen: map[string]seenRow{}} }
	// step returns the holder the node plans, the one it would plan without
	// the wait, and whom it waits for.
	step := func(n *node, self vip.Node, rows []peerVIPRow, members []discovery.Member, at time.Duration) (string, string, []string) {
		v := buildVIPView(self, rows, members, n.known, n.seen, t0.Add(at), nil)
		unheld := policy.Assign(v).Holder[pool]
		w := n.r.wait(v, policy.Quorum, members, t0.Add(at))
		if len(w) > 0 {
			v.Nodes[0].Healthy = false
		}
		return policy.Assign(v).Holder[pool], unheld, w
	}
	for _, gossip := range [][]discovery.Member{alive, flapped} {
		n := newNode()
		if _, _, w := step(n, self, []peerVIPRow{{"n2", idle}, {"n3", idle}}, alive, 0); len(w) != 0 {
			t.Fatalf("all up from the start: waiting for %v", w)
		}
		// Cut off: no rows for longer than the grace; no quorum.
		if h, _, _ := step(n, self, nil, alive, rowGrace+time.Second); h != "" {
			t.Fatalf("cut off: holder %q, want none (no quorum)", h)
		}
		// Healed: n3's row first.
		h, unheld, w := step(n, self, []peerVIPRow{{"n3", idle}}, gossip, rowGrace+2*time.Second)
		if h == "n1" || len(w) != 2 || w[1] != "n2" {
			t.Fatalf("quorum regained with n3's row only (n2 %s in the gossip): holder %q, waiting for %v; want n1 not taking it, waiting for n2", gossip[1].Status, h, w)
		}
		if gossip[1].Status == discovery.StatusAlive && unheld != "n1" {
			t.Fatalf("without the wait n1 would plan %q: the case no longer shows the problem", unheld)
		}
		// n2's first row is a copy from before it took the VIP: n1 still
		// waits (a moment after regaining quorum), and takes nothing.
		if h, _, w := step(n, self, []peerVIPRow{{"n2", idle}, {"n3", idle}}, alive, rowGrace+2500*time.Millisecond); h == "n1" || len(w) == 0 {
			t.Fatalf("n2's stale row first: holder %q waiting %v, want n1 still waiting", h, w)
		}
		// n2's current row: it holds the VIP and keeps it.
		if h, _, w := step(n, self, []peerVIPRow{{"n2", holder}, {"n3", idle}}, alive, rowGrace+3500*time.Millisecond); h != "n2" || len(w) != 0 {
			t.Fatalf("n2's row back: holder %q waiting %v, want n2 kept", h, w)
		}
	}
	// Had n2 stayed silent (cut off itself), n1 acts after the grace.
	n := newNode()
	step(n, self, []peerVIPRow{{"n2", holder}, {"n3", idle}}, alive, 0)
	step(n, self, nil, alive, rowGrace+time.Second)
	if _, _, w := step(n, self, []peerVIPRow{{"n3", idle}}, alive, rowGrace+2*time.Second); len(w) != 2 || w[1] != "n2" {
		t.Fatalf("waiting %v, want n2", w)
	}
	if _, _, w := step(n, self, []peerVIPRow{{"n3", idle}}, alive, 2*rowGrace+3*time.Second); len(w) != 0 {
		t.Fatalf("after the grace: still waiting for %v", w)
	}
	// A survivor n2 took the VIP of n1 (cut off); then n3's row blinks (load):
	// n2 loses quorum and regains it with n3's row, and does not wait for n1,
	// which had vanished while n2 still had quorum.
	s2 := vip.Node{Name: "n2", Healthy: true, InService: true, Priority: 100, Preemptible: true}
	n = newNode()
	step(n, s2, []peerVIPRow{{"n1", holder}, {"n3", idle}}, alive, 0)
	if h, _, w := step(n, s2, []peerVIPRow{{"n3", idle}}, alive, rowGrace+time.Second); h != "n2" || len(w) != 0 {
		t.Fatalf("n1 gone for longer than the grace: survivor plans %q, waits for %v; want n2 taking over at once", h, w)
	}
	if h, _, _ := step(n, s2, nil, alive, 2*rowGrace+2*time.Second); h != "" {
		t.Fatalf("n3's row gone too: holder %q, want none (no quorum)", h)
	}
	if h, _, w := step(n, s2, []peerVIPRow{{"n3", idle}}, alive, 2*rowGrace+3*time.Second); h != "n2" || len(w) != 0 {
		t.Fatalf("n3 back: survivor plans %q, waits for %v; want n2 at once", h, w)
	}
}

// Every health input is observed each round: a change of the c2s check used to
// short-circuit the storage and script checks (a || chain), delaying a storage
// loss seen in the same round by one check interval.
func TestVIPHealthObservesEveryCheckEachRound(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tracks := []vip.Track{
		{Name: "c2s", Rise: 1, Fall: 1, InitFail: true},
		{Name: "storage", Weight: -50, Rise: 1, Fall: 1},
		{Name: "script", Weight: -20, Rise: 1, Fall: 1, InitFail: true},
	}
	ran := map[string]int{}
	check := func(name string, err error) vipCheck {
		return vipCheck{name, func(context.Context) error { ran[name]++; return err }}
	}
	f := &vipFeature{health: vip.NewHealth(100, tracks, t0)}
	f.checks = []vipCheck{check("c2s", nil), check("storage", errors.New("storage degraded-ram")), check("script", nil)}
	if !f.observe(context.Background(), t0.Add(time.Second)) {
		t.Fatal("no change reported although every check changed")
	}
	for _, n := range []string{"c2s", "storage", "script"} {
		if ran[n] != 1 {
			t.Errorf("check %s ran %d times in one round, want 1", n, ran[n])
		}
	}
	// c2s and the script up, storage down: the base priority less storage's weight.
	if p, ok := f.health.Effective(); !ok || p != 50 {
		t.Errorf("effective priority %d healthy %v after one round, want 50 true", p, ok)
	}
}

// A VIP holder that stops sending adverts (vip.Adverts: silent past its dead
// interval) loses its VIP to a survivor at once, while the gossip still has
// it alive and its row is still there (the cluster's failure detection takes
// seconds more); quorum holds (2 of 3 visible). A silent node that holds
// nothing changes nothing. A holder silent by mistake that announces its VIP
// again is back in the view, and of the two claimants the best-ranked one (n1)
// keeps the VIP: the survivor gives it back.
func TestVIPViewSilentHolderTakenOver(t *testing.T) {
	const pool = "10.0.0.100/24"
	policy := vip.Policy{VIPs: []string{pool}, Preempt: true, Quorum: true}
	holder := vipRow{Healthy: true, InService: true, Priority: 100, Preemptible: true, Holds: []string{pool}}
	idle := vipRow{Healthy: true, InService: true, Priority: 100, Preemptible: true}
	self := vip.Node{Name: "n2", Healthy: true, InService: true, Priority: 100, Preemptible: true}
	alive := []discovery.Member{{Name: "n1", Status: discovery.StatusAlive}, {Name: "n2", Status: discovery.StatusAlive}, {Name: "n3", Status: discovery.StatusAlive}}
	rows := []peerVIPRow{{"n1", holder}, {"n3", idle}}
	t0 := time.Now()
	known, seen := map[string]bool{}, map[string]seenRow{}
	silentSet := func(names ...string) func(string) bool {
		return func(n string) bool {
			for _, x := range names {
				if x == n {
					return true
				}
			}
			return false
		}
	}
	if p := policy.Assign(buildVIPView(self, rows, alive, known, seen, t0, silentSet())); p.Holder[pool] != "n1" {
		t.Fatalf("all heard: holder %q, want n1", p.Holder[pool])
	}
	v := buildVIPView(self, rows, alive, known, seen, t0.Add(time.Second), silentSet("n1"))
	p := policy.Assign(v)
	if p.Holder[pool] != "n2" || !p.HasQuorum {
		t.Fatalf("n1 silent: holder %q quorum %v (view %+v), want n2 with quorum", p.Holder[pool], p.HasQuorum, v)
	}
	// Its row vanished too, the gossip still says alive: the stand-in row
	// does not keep a silent holder either.
	if p := policy.Assign(buildVIPView(self, rows[1:], alive, known, seen, t0.Add(1500*time.Millisecond), silentSet("n1"))); p.Holder[pool] != "n2" {
		t.Fatalf("n1 silent, its row gone: holder %q, want n2", p.Holder[pool])
	}
	// A silent node holding nothing is no reason to move anything.
	known, seen = map[string]bool{}, map[string]seenRow{}
	if p := policy.Assign(buildVIPView(self, rows, alive, known, seen, t0, silentSet("n3"))); p.Holder[pool] != "n1" || !p.HasQuorum {
		t.Fatalf("idle n3 silent: holder %q quorum %v, want n1", p.Holder[pool], p.HasQuorum)
	}
	// n1 was only slow: it announces again while n2 holds the VIP too.
	self.Holds = []string{pool}
	if p := policy.Assign(buildVIPView(self, rows, alive, known, seen, t0.Add(2*time.Second), silentSet())); p.Holder[pool] != "n1" {
		t.Fatalf("n1 heard again while both hold the VIP: holder %q, want n1 (best-ranked claimant keeps it)", p.Holder[pool])
	}
}

// silentHolder runs under f.mu: step calls it through buildVIPView while it
// holds the lock. It took f.mu itself, so the VIP loop of every node that saw
// a peer holding a VIP stopped for good (xmppctl vip timed out; bench/vipfailover's
// TestVIPSpare, TestVIPPool, TestVIPPartition and TestVIPStorageLoss failed).
func TestVIPSilentHolderUnderStepLock(t *testing.T) {
	t0 := time.Now()
	f := &vipFeature{s: &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))},
		adverts: vip.NewAdverts(4), silent: map[string]bool{}}
	f.adverts.Heard("n1", 200*time.Millisecond, 1, net.HardwareAddr{2, 0, 0, 0, 0, 1}, t0)
	done := make(chan bool, 1)
	go func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		done <- f.silentHolder("n1", t0.Add(2*time.Second))
	}()
	select {
	case silent := <-done:
		if !silent {
			t.Fatal("n1 unheard for 2 s (dead interval 0.8 s) is not silent")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("silentHolder blocks when called with f.mu held, as step calls it")
	}
}

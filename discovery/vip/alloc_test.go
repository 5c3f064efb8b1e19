package vip

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func nd(name string, prio int, holds ...string) Node {
	return Node{Name: name, Healthy: true, InService: true, Priority: prio, Preemptible: true, Holds: holds}
}

func holders(p Plan, pool []string) string {
	var b []string
	for _, v := range pool {
		b = append(b, v+"="+p.Holder[v])
	}
	return strings.Join(b, " ")
}

func withHolds(n Node, holds ...string) Node { n.Holds = holds; return n }

func TestAssignTable(t *testing.T) {
	one := []string{"a"}
	four := []string{"a", "b", "c", "d"}
	spare := nd("n3", 100)
	spare.InService = false
	sick := nd("n2", 200, "a")
	sick.Healthy = false
	young := nd("n2", 200)
	young.Preemptible = false
	cases := []struct {
		name    string
		pol     Policy
		view    View
		want    string
		quorum  bool
		reasonA string
	}{
		{"keepalived: highest priority takes the orphan", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{nd("n1", 100), nd("n2", 200)}}, "a=n2", true, "taken over"},
		{"preempt: higher priority takes it from a lower holder", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{nd("n1", 100, "a"), nd("n2", 200)}}, "a=n2", true, "preempted from n1: priority 200 > 100"},
		{"nopreempt: the holder keeps it", Policy{VIPs: one},
			View{Nodes: []Node{nd("n1", 100, "a"), nd("n2", 200)}}, "a=n1", true, "kept"},
		{"preempt delay: not yet preemptible keeps hands off", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{nd("n1", 100, "a"), young}}, "a=n1", true, "kept"},
		{"preempt delay does not stop taking an orphan", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{young, nd("n1", 100)}}, "a=n2", true, "taken over"},
		{"equal priority: name breaks the tie", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{nd("n2", 100), nd("n1", 100)}}, "a=n1", true, ""},
		{"equal priority never preempts", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{nd("n2", 100, "a"), nd("n1", 100)}}, "a=n2", true, "kept"},
		{"unhealthy holder loses it", Policy{VIPs: one},
			View{Nodes: []Node{nd("n1", 100), sick}}, "a=n1", true, "taken over"},
		{"spare holds nothing while others serve", Policy{VIPs: four, Preempt: true},
			View{Nodes: []Node{nd("n1", 100), nd("n2", 100), spare}}, "a=n1 b=n2 c=n1 d=n2", true, ""},
		{"spare only: nothing held", Policy{VIPs: one},
			View{Nodes: []Node{spare}}, "a=", true, "unheld"},
		{"a member failed: the spare stands in for it", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{nd("n2", 100), spare}, Known: 3}, "a=n3", true, "taken over: no eligible holder; spare n3 stands in"},
		{"a member failed: the spare keeps what it took", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{nd("n2", 100), withHolds(spare, "a")}, Known: 3}, "a=n3", true, "kept"},
		{"the failed member is back: the spare gives it back", Policy{VIPs: one, Preempt: true},
			View{Nodes: []Node{nd("n1", 100), nd("n2", 100), withHolds(spare, "a")}, Known: 3}, "a=n1", true, "taken over: no eligible holder; n1"},
		{"pool spread evenly", Policy{VIPs: four, Preempt: true},
			View{Nodes: []Node{nd("n1", 100), nd("n2", 100), nd("n3", 100), nd("n4", 100)}}, "a=n1 b=n2 c=n3 d=n4", true, ""},
		{"rebalance after a node returns (preempt)", Policy{VIPs: four, Preempt: true},
			View{Nodes: []Node{nd("n1", 100, "a", "b"), nd("n2", 100, "c", "d"), nd("n3", 100)}}, "a=n1 b=n1 c=n2 d=n3", true, ""},
		{"no rebalance with nopreempt", Policy{VIPs: four},
			View{Nodes: []Node{nd("n1", 100, "a", "b"), nd("n2", 100, "c", "d"), nd("n3", 100)}}, "a=n1 b=n1 c=n2 d=n2", true, ""},
		{"duplicate claim: the better-ranked keeps it", Policy{VIPs: one},
			View{Nodes: []Node{nd("n1", 100, "a"), nd("n2", 150, "a")}}, "a=n2", true, "kept"},
		{"minority withdraws", Policy{VIPs: four, Quorum: true},
			View{Nodes: []Node{nd("n1", 100, "a", "b")}, Known: 3}, "a= b= c= d=", false, "withdrawn: no quorum: 1 of 3"},
		{"half is not a quorum", Policy{VIPs: one, Quorum: true},
			View{Nodes: []Node{nd("n1", 100), nd("n2", 100)}, Known: 4}, "a=", false, "withdrawn"},
		{"majority keeps serving", Policy{VIPs: one, Quorum: true},
			View{Nodes: []Node{nd("n1", 100), nd("n2", 100)}, Known: 3}, "a=n1", true, ""},
		{"a live witness without VIP state counts for quorum", Policy{VIPs: one, Quorum: true},
			View{Nodes: []Node{nd("n2", 100)}, Known: 3, Visible: 2}, "a=n2", true, "taken over"},
		{"quorum off: two-node survivor serves", Policy{VIPs: one},
			View{Nodes: []Node{nd("n2", 100)}, Known: 2}, "a=n2", true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.pol.Assign(c.view)
			if got := holders(p, c.pol.VIPs); got != c.want {
				t.Fatalf("holders %s, want %s (reasons %v)", got, c.want, p.Reason)
			}
			if p.HasQuorum != c.quorum {
				t.Fatalf("quorum %v", p.HasQuorum)
			}
			if !strings.Contains(p.Reason["a"], c.reasonA) {
				t.Fatalf("reason for a %q, want it to contain %q", p.Reason["a"], c.reasonA)
			}
		})
	}
}

// randomView builds a view of up to 6 nodes with random health, service, priority and
// holdings (possibly conflicting).
func randomView(r *rand.Rand, pool []string) View {
	n := 1 + r.IntN(6)
	var v View
	for i := 0; i < n; i++ {
		node := Node{Name: fmt.Sprintf("n%d", i), Healthy: r.IntN(5) > 0, InService: r.IntN(6) > 0,
			Priority: 100 + 50*r.IntN(3), Preemptible: r.IntN(4) > 0}
		for _, vip := range pool {
			if r.IntN(3) == 0 {
				node.Holds = append(node.Holds, vip)
			}
		}
		v.Nodes = append(v.Nodes, node)
	}
	v.Known = n + r.IntN(3)
	return v
}

// TestAssignProperties: for random views, every VIP has at most one holder, which is
// eligible; with quorum and an eligible node every VIP is held; the plan does not
// depend on node order; a view that already reflects the plan is a fixed point (no
// movement without a change); no eligible node holds more than ceil(k/n)+... when
// preempting with every node preemptible, loads differ by at most one.
func TestAssignProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pool := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}
	for iter := 0; iter < 3000; iter++ {
		pol := Policy{VIPs: pool[:1+r.IntN(len(pool))], Preempt: r.IntN(2) == 0, Quorum: r.IntN(2) == 0}
		v := randomView(r, pol.VIPs)
		p := pol.Assign(v)
		elig := map[string]Node{}
		standIn := v.Known > len(v.Nodes)
		if p.StandIn != standIn {
			t.Fatalf("iter %d: stand-in %v with %d known and %d live", iter, p.StandIn, v.Known, len(v.Nodes))
		}
		for _, n := range v.Nodes {
			if n.Healthy && (n.InService || standIn) {
				elig[n.Name] = n
			}
		}
		for _, vip := range pol.VIPs {
			h, ok := p.Holder[vip]
			if !ok {
				t.Fatalf("iter %d: %s missing from plan", iter, vip)
			}
			if h != "" {
				if _, ok := elig[h]; !ok {
					t.Fatalf("iter %d: %s held by ineligible %s", iter, vip, h)
				}
			} else if p.HasQuorum && len(elig) > 0 {
				t.Fatalf("iter %d: %s unheld with eligible nodes", iter, vip)
			}
		}
		// Order independence.
		sh := View{Nodes: slices.Clone(v.Nodes), Known: v.Known}
		r.Shuffle(len(sh.Nodes), func(i, j int) { sh.Nodes[i], sh.Nodes[j] = sh.Nodes[j], sh.Nodes[i] })
		if a, b := holders(p, pol.VIPs), holders(pol.Assign(sh), pol.VIPs); a != b {
			t.Fatalf("iter %d: order changes the plan: %s vs %s", iter, a, b)
		}
		// Fixed point: apply the plan to the view, assign again: nothing moves.
		applied := View{Known: v.Known}
		for _, n := range v.Nodes {
			n.Holds = p.For(n.Name, pol.VIPs)
			applied.Nodes = append(applied.Nodes, n)
		}
		if a, b := holders(p, pol.VIPs), holders(pol.Assign(applied), pol.VIPs); a != b {
			t.Fatalf("iter %d: not a fixed point: %s then %s", iter, a, b)
		}
		// Balance when preempting and everyone is preemptible.
		if pol.Preempt && p.HasQuorum && len(elig) > 0 {
			all := true
			for _, n := range elig {
				all = all && n.Preemptible
			}
			if all {
				lo, hi := 1<<30, 0
				for name := range elig {
					c := len(p.For(name, pol.VIPs))
					lo, hi = min(lo, c), max(hi, c)
				}
				if hi-lo > 1 {
					t.Fatalf("iter %d: unbalanced %d..%d: %s", iter, lo, hi, holders(p, pol.VIPs))
				}
			}
		}
	}
}

// TestAssignMinimalMovementOnFailure: in a settled pool, when a node fails only its
// VIPs move (preempt on or off, equal or different priorities).
func TestAssignMinimalMovementOnFailure(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	pool := []string{"a", "b", "c", "d", "e", "f", "g"}
	for iter := 0; iter < 1000; iter++ {
		pol := Policy{VIPs: pool[:1+r.IntN(len(pool))], Preempt: r.IntN(2) == 0}
		var v View
		n := 2 + r.IntN(5)
		for i := 0; i < n; i++ {
			v.Nodes = append(v.Nodes, nd(fmt.Sprintf("n%d", i), 100+10*r.IntN(2)))
		}
		// Settle.
		p := pol.Assign(v)
		for i := range v.Nodes {
			v.Nodes[i].Holds = p.For(v.Nodes[i].Name, pol.VIPs)
		}
		dead := r.IntN(n)
		deadName := v.Nodes[dead].Name
		after := View{Nodes: slices.Delete(slices.Clone(v.Nodes), dead, dead+1)}
		p2 := pol.Assign(after)
		for _, vip := range pol.VIPs {
			if p.Holder[vip] != deadName && p2.Holder[vip] != p.Holder[vip] {
				t.Fatalf("iter %d (%+v): %s moved from live %s to %s when %s failed", iter, pol, vip, p.Holder[vip], p2.Holder[vip], deadName)
			}
		}
	}
}

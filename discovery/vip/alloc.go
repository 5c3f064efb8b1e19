package vip

import (
	"fmt"
	"slices"
	"sort"
)

// Node is one live member of the cluster view as the allocator sees it. A node
// publishes these fields about itself (membership tags or a node-owned table) so
// every peer sees the same values.
type Node struct {
	Name string `json:"name"`
	// Healthy is false while a fault track (weight 0) is down: the node holds no VIP.
	Healthy bool `json:"healthy"`
	// InService is SLB's "inservice": a spare (false) is a member that holds no VIP.
	InService bool `json:"in_service"`
	// Priority is the effective priority: configured priority plus track weights
	// (keepalived: 1..254, higher wins).
	Priority int `json:"priority"`
	// Preemptible is true once the node has been healthy and in service for the
	// preempt delay: only then may VIPs be taken from other holders for it. Orphaned
	// VIPs go to any eligible node at once.
	Preemptible bool `json:"preemptible"`
	// Holds lists the VIPs the node announces now.
	Holds []string `json:"holds,omitempty"`
}

func (n Node) eligible() bool { return n.Healthy && n.InService }

// View is one node's picture of the cluster at one moment.
type View struct {
	// Nodes are the live members (every role, spares and witnesses included).
	Nodes []Node
	// Known is the number of members the cluster knows (live plus failed, not those
	// that left gracefully); 0 means len(Nodes). A view with no more than half of the
	// known members has no quorum.
	Known int
	// Visible is the number of live members, counting those that publish no VIP
	// state (a witness without VIPs); 0 or less than len(Nodes) means len(Nodes).
	Visible int
}

// Policy is the VIP configuration shared by every node.
type Policy struct {
	VIPs    []string // the pool, in a fixed order (the same on every node)
	Preempt bool     // false = keepalived's nopreempt: a VIP stays where it is while its holder is eligible
	// Quorum: a view with no more than half of the known members holds no VIP. Turn
	// it off only for two-node sites without a witness (each side then keeps serving
	// in a split, at the price of duplicate VIPs on a real partition).
	Quorum bool
}

// Plan is the outcome of Assign: the holder of each VIP ("" = nobody) and why.
type Plan struct {
	Holder    map[string]string `json:"holder"`
	Reason    map[string]string `json:"reason"`
	HasQuorum bool              `json:"quorum"`
	// StandIn: a member has failed (known but not live), so healthy spares are
	// eligible and take orphaned VIPs first (SLB's spare standing in for a failed
	// node); once every known member is live again they give them back.
	StandIn bool   `json:"stand_in,omitempty"`
	Note    string `json:"note,omitempty"`
}

// Eligible tells whether the plan lets n hold VIPs: healthy and in service, or a
// healthy spare while a member has failed.
func (p Plan) Eligible(n Node) bool { return n.Healthy && (n.InService || p.StandIn) }

// For returns the VIPs the plan gives node, in pool order.
func (p Plan) For(node string, pool []string) []string {
	var out []string
	for _, v := range pool {
		if p.Holder[v] == node && node != "" {
			out = append(out, v)
		}
	}
	return out
}

// ranked orders nodes by priority (higher first), then name.
func ranked(nodes []Node) []Node {
	out := slices.Clone(nodes)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Priority != out[j].Priority {
			return out[i].Priority > out[j].Priority
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// maxMoves bounds the rebalancing loop (it terminates on its own; this is a guard).
const maxMoves = 10000

// Assign computes the plan for a view. It is deterministic: the same view (in any
// node order) gives the same plan.
//
//  1. Quorum: with Policy.Quorum, a view of no more than half the known members
//     assigns nothing.
//  2. Keep: a VIP stays with its current holder while the holder is healthy and in
//     service (several claimants: the best-ranked keeps it). While a known member
//     has failed (Known > visible), healthy spares count as in service.
//  3. Orphans: a VIP with no eligible holder goes to a standing-in spare if there
//     is one, else to the eligible node holding the fewest VIPs (ties: higher
//     priority, then name).
//  4. Preempt (only with Policy.Preempt, only towards preemptible nodes): move one
//     VIP at a time from the most loaded node to the least loaded while they differ
//     by more than one, and from a lower-priority node to a higher-priority one that
//     holds fewer. Equal priorities never move a VIP between equally loaded nodes.
func (p Policy) Assign(v View) Plan {
	plan := Plan{Holder: map[string]string{}, Reason: map[string]string{}, HasQuorum: true}
	for _, vip := range p.VIPs {
		plan.Holder[vip] = ""
	}
	visible := max(v.Visible, len(v.Nodes))
	known := max(v.Known, visible)
	plan.StandIn = known > visible
	if p.Quorum && 2*visible <= known && known > 0 {
		plan.HasQuorum = false
		plan.Note = fmt.Sprintf("no quorum: %d of %d known members visible", visible, known)
		for _, vip := range p.VIPs {
			plan.Reason[vip] = "withdrawn: " + plan.Note
		}
		return plan
	}
	var elig []Node
	for _, n := range ranked(v.Nodes) {
		if plan.Eligible(n) && n.Name != "" {
			elig = append(elig, n)
		}
	}
	if len(elig) == 0 {
		for _, vip := range p.VIPs {
			plan.Reason[vip] = "unheld: no healthy in-service node"
		}
		plan.Note = "no healthy in-service node"
		return plan
	}
	held := map[string]int{}
	// 2. Keep.
	for _, vip := range p.VIPs {
		for _, n := range elig { // best rank first
			if slices.Contains(n.Holds, vip) {
				plan.Holder[vip] = n.Name
				plan.Reason[vip] = "kept by its holder"
				held[n.Name]++
				break
			}
		}
	}
	// least returns the eligible node with the fewest VIPs (ties: best rank) among
	// those ok accepts.
	least := func(ok func(Node) bool) (Node, bool) {
		var best Node
		found := false
		for _, n := range elig {
			if !ok(n) {
				continue
			}
			if !found || held[n.Name] < held[best.Name] {
				best, found = n, true
			}
		}
		return best, found
	}
	// 3. Orphans.
	for _, vip := range p.VIPs {
		if plan.Holder[vip] != "" {
			continue
		}
		if n, ok := least(func(n Node) bool { return !n.InService }); ok {
			plan.Holder[vip] = n.Name
			plan.Reason[vip] = fmt.Sprintf("taken over: no eligible holder; spare %s stands in for a failed member", n.Name)
			held[n.Name]++
			continue
		}
		n, _ := least(func(Node) bool { return true })
		plan.Holder[vip] = n.Name
		plan.Reason[vip] = fmt.Sprintf("taken over: no eligible holder; %s holds fewest (priority %d)", n.Name, n.Priority)
		held[n.Name]++
	}
	if !p.Preempt {
		return plan
	}
	// 4. Preempt.
	lastHeld := func(node string) string {
		for i := len(p.VIPs) - 1; i >= 0; i-- {
			if plan.Holder[p.VIPs[i]] == node {
				return p.VIPs[i]
			}
		}
		return ""
	}
	move := func(from, to Node, why string) {
		vip := lastHeld(from.Name)
		plan.Holder[vip] = to.Name
		plan.Reason[vip] = fmt.Sprintf("preempted from %s: %s", from.Name, why)
		held[from.Name]--
		held[to.Name]++
	}
	for i := 0; i < maxMoves; i++ {
		// Balance: most loaded (ties: worst rank) vs least loaded preemptible.
		var most Node
		for j := len(elig) - 1; j >= 0; j-- {
			if n := elig[j]; most.Name == "" || held[n.Name] > held[most.Name] {
				most = n
			}
		}
		low, ok := least(func(n Node) bool { return n.Preemptible })
		if ok && held[most.Name]-held[low.Name] > 1 {
			move(most, low, fmt.Sprintf("balance (%d vs %d VIPs)", held[most.Name], held[low.Name]))
			continue
		}
		// Priority: a preemptible node of higher priority holding fewer than a holder.
		moved := false
		for _, hi := range elig {
			if !hi.Preemptible {
				continue
			}
			for j := len(elig) - 1; j >= 0 && !moved; j-- {
				lo := elig[j]
				if lo.Priority < hi.Priority && held[lo.Name] > held[hi.Name] {
					move(lo, hi, fmt.Sprintf("priority %d > %d", hi.Priority, lo.Priority))
					moved = true
				}
			}
			if moved {
				break
			}
		}
		if !moved {
			break
		}
	}
	return plan
}

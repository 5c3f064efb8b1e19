package discovery

import (
	"fmt"
	"strings"
)

// Action is what the bootstrap rule tells a node without a cluster to do.
type Action int

const (
	// Wait: keep discovering (the window is open, fewer than expect nodes are
	// seen, or a lower-named node is due to bootstrap).
	Wait Action = iota
	// Join the cluster whose members are in Decision.Join.
	Join
	// Bootstrap a new cluster: this node is the lowest-named candidate.
	Bootstrap
)

func (a Action) String() string {
	switch a {
	case Join:
		return "join"
	case Bootstrap:
		return "bootstrap"
	}
	return "wait"
}

// Decision is the outcome of Decide.
type Decision struct {
	Action Action
	Join   []string // cluster addresses to join (Action Join)
	Reason string   // for the log
}

// Decide applies the bootstrap rule for the local node self, given what gossip
// shows (members, including self) and whether the discovery window has closed:
//
//  1. If any other alive member is in a cluster (Tags.Cluster member), join
//     the cluster addresses of those members. Otherwise, if any is
//     bootstrapping one, join the lowest-named of them: that is the one every
//     other announcer backs off to (Agent.AutoJoin), so a higher-named
//     announcer seen in passing is never a target. This needs no window: an
//     existing cluster is joined at once.
//  2. Otherwise, before the window has closed, or while fewer than expect
//     alive nodes are seen (expect <= 1: no minimum), wait.
//  3. Otherwise the lowest-named alive candidate bootstraps: data nodes
//     (role node) are the candidates; witnesses only when no data node is
//     alive. Everybody else waits for it to announce bootstrapping and then
//     joins it (rule 1).
//
// A node that announced "bootstrapping" re-checks after a settle time (see
// Agent.AutoJoin): if a lower-named node announced it too, it joins that one,
// so nodes that started at the same moment end in one cluster.
func Decide(self string, members []Member, windowClosed bool, expect int) Decision {
	alive := 0
	lowestNode, lowestAny := "", ""
	for _, m := range members {
		if m.Status != StatusAlive {
			continue
		}
		alive++
		if lowestAny == "" || m.Name < lowestAny {
			lowestAny = m.Name
		}
		if m.Tags.Role != RoleWitness && (lowestNode == "" || m.Name < lowestNode) {
			lowestNode = m.Name
		}
	}
	if addrs, names := joinTargets(self, members, ""); len(addrs) > 0 {
		return Decision{Action: Join, Join: addrs, Reason: "found cluster members " + strings.Join(names, ",")}
	}
	if !windowClosed {
		return Decision{Action: Wait, Reason: "discovery window open"}
	}
	if expect > 1 && alive < expect {
		return Decision{Action: Wait, Reason: fmt.Sprintf("%d of %d expected nodes seen (bootstrap-expect)", alive, expect)}
	}
	lowest := lowestNode
	if lowest == "" {
		lowest = lowestAny
	}
	if lowest == self {
		return Decision{Action: Bootstrap, Reason: fmt.Sprintf("no cluster found; lowest-named of %d alive node(s)", alive)}
	}
	return Decision{Action: Wait, Reason: "no cluster found; waiting for " + lowest + " (lowest-named) to bootstrap"}
}

// joinTargets returns the cluster addresses (and names) a node without a
// cluster joins, given what gossip shows: every alive member other than self
// that is in a cluster; if there is none, the lowest-named alive member
// announcing a bootstrap (only among names lower than below, if below is set).
// Nil: nothing to join.
func joinTargets(self string, members []Member, below string) (addrs, names []string) {
	var boot *Member
	for i := range members {
		m := &members[i]
		if m.Name == self || m.Status != StatusAlive || m.Tags.ClusterAddr == "" {
			continue
		}
		switch m.Tags.Cluster {
		case ClusterMember:
			addrs = append(addrs, m.Tags.ClusterAddr)
			names = append(names, m.Name)
		case ClusterBootstrapping:
			if (below == "" || m.Name < below) && (boot == nil || m.Name < boot.Name) {
				boot = m
			}
		}
	}
	if len(addrs) == 0 && boot != nil {
		return []string{boot.Tags.ClusterAddr}, []string{boot.Name}
	}
	return addrs, names
}

package discovery

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AutoJoinOptions tunes Agent.AutoJoin.
type AutoJoinOptions struct {
	Window time.Duration // discover this long (and until the first scan pass ends) before anyone bootstraps
	Expect int           // bootstrap only once this many nodes are alive (<= 1: no minimum)
	Settle time.Duration // after announcing "bootstrapping", wait this long for a lower-named announcer (default 10 gossip rounds, at least 500 ms)
}

// AutoJoin decides, for a node that has no cluster to rejoin, whether it joins
// an existing cluster (the Decision's Join addresses) or bootstraps a new one,
// by the rule of Decide. It returns when the decision is Join or Bootstrap, or
// with an error when ctx ends first (the error says what it saw). A node that
// decides to bootstrap has announced Tags.Cluster = bootstrapping.
func (a *Agent) AutoJoin(ctx context.Context, o AutoJoinOptions) (Decision, error) {
	if o.Settle <= 0 {
		o.Settle = max(500*time.Millisecond, 10*a.cfg.GossipInterval)
	}
	self := a.cfg.NodeName
	start := a.Started()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	lastReason := ""
	for {
		scanned := false
		select {
		case <-a.ScanDone():
			scanned = true
		default:
		}
		windowClosed := time.Since(start) >= o.Window && scanned
		d := Decide(self, a.Members(), windowClosed, o.Expect)
		switch d.Action {
		case Join:
			a.log.Info("auto-join: joining the cluster", "reason", d.Reason, "cluster_addrs", d.Join)
			return d, nil
		case Bootstrap:
			if wk := a.WrongKeyPeers(); len(wk) > 0 && a.alone() {
				// Every peer it found refuses this node's key: bootstrapping
				// would make a second cluster beside them. (A node that also
				// sees peers with its own key ignores a stray wrong-key box.)
				return Decision{}, fmt.Errorf("discovery: auto-join: wrong cluster key: %s refused this node's gossip key, so it does not bootstrap a cluster of its own (give every node the same --cluster-key-file)",
					strings.Join(wk, ", "))
			}
			if err := a.UpdateTags(func(t *Tags) { t.Cluster = ClusterBootstrapping }); err != nil {
				a.log.Warn("auto-join: cannot announce bootstrapping", "err", err)
			}
			a.log.Info("auto-join: announcing bootstrap, settling", "reason", d.Reason, "settle", o.Settle)
			select {
			case <-ctx.Done():
				return Decision{}, fmt.Errorf("discovery: auto-join: %w", ctx.Err())
			case <-time.After(o.Settle):
			}
			if j := lowerClaims(self, a.Members()); len(j) > 0 {
				_ = a.UpdateTags(func(t *Tags) { t.Cluster = ClusterNone })
				d = Decision{Action: Join, Join: j, Reason: "a lower-named node or an existing cluster claimed the bootstrap first"}
				a.log.Info("auto-join: backing off, joining", "reason", d.Reason, "cluster_addrs", j)
				return d, nil
			}
			a.log.Info("auto-join: bootstrapping a new cluster", "reason", d.Reason)
			return d, nil
		}
		if d.Reason != lastReason {
			lastReason = d.Reason
			a.log.Info("auto-join: waiting", "reason", d.Reason)
		}
		select {
		case <-ctx.Done():
			return Decision{}, fmt.Errorf("discovery: auto-join gave up (%s; members seen: %s): %w", lastReason, memberSummary(a.Members()), ctx.Err())
		case <-t.C:
		}
	}
}

// lowerClaims returns what a node that announced a bootstrap joins instead:
// the members of an existing cluster, or else the lowest-named alive member
// that announces a bootstrap too and is named lower than self.
func lowerClaims(self string, ms []Member) []string {
	addrs, _ := joinTargets(self, ms, self)
	return addrs
}

func memberSummary(ms []Member) string {
	s := ""
	for i, m := range ms {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %s %s", m.Name, m.Addr, m.Status)
		if m.Tags.Cluster != "" {
			s += " " + m.Tags.Cluster
		}
	}
	return s
}

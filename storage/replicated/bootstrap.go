package replicated

import (
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// electAtOnce makes a node that has just bootstrapped a one-voter cluster stand
// for election now rather than after a whole heartbeat timeout: raft starts
// every node as a follower that waits HeartbeatTimeout (up to twice that) for a
// leader that cannot exist yet, which was 2.5–5 s of every PXE box's boot with
// the lab's timing.
//
// raft's ReloadConfig with a shorter heartbeat timeout fires the follower's
// timer at once; having never heard from a leader, the follower becomes a
// candidate and, as the only voter, wins. The configured timeouts are put back
// straight away: the fired timer checks the time since the last leader contact
// (none), not the timeout in force, so the election does not wait for them, and
// the node keeps the cluster's timing for everything after. The shorter value
// is LeaderLeaseTimeout, the least raft accepts with this lease.
func electAtOnce(r *raft.Raft, lease time.Duration, log *slog.Logger) {
	orig := r.ReloadableConfig()
	if lease >= orig.HeartbeatTimeout {
		return // nothing shorter is allowed: raft's own timer it is
	}
	fast := orig
	fast.HeartbeatTimeout = lease
	fast.ElectionTimeout = lease
	if err := r.ReloadConfig(fast); err != nil {
		log.Warn("first election at once: raft refused the short timeout; waiting for the heartbeat timeout", "err", err)
		return
	}
	if err := r.ReloadConfig(orig); err != nil {
		// The short timeouts stay; say so, since they make elections eager.
		log.Warn("first election at once: could not restore raft's timeouts", "err", err)
	}
}

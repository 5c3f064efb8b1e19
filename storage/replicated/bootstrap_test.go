package replicated

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"xedge/storage"
)

// TestBootstrapElectsAtOnce: a node that bootstraps a one-voter cluster leads
// without first waiting out its heartbeat timeout (raft's follower timer, here
// 60–120 s; the wait bound below is a fraction of it), and keeps the configured
// timeouts afterwards.
func TestBootstrapElectsAtOnce(t *testing.T) {
	const hb = 60 * time.Second
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.HeartbeatTimeout = hb
		cfg.ElectionTimeout = hb
	})
	s := c.nodes[0].s
	waitFor(t, "the bootstrapping node to lead", 5*time.Second, func() bool {
		return s.raft.State() == raft.Leader
	})
	rc := s.raft.ReloadableConfig()
	if rc.HeartbeatTimeout != hb || rc.ElectionTimeout != hb {
		t.Fatalf("raft timeouts after the first election: heartbeat %v, election %v; want %v each", rc.HeartbeatTimeout, rc.ElectionTimeout, hb)
	}
	mustDeclare(t, s, "t", storage.Disc)
	mustApply(t, s, storage.Put("t", "k", []byte("v")))
}

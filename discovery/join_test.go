package discovery

import (
	"testing"
	"time"
)

// TestJoinIsIdempotent: joining a pool this node is already in, the same seed
// twice, or a seed that is this node itself changes nothing and is no error: the
// membership stays one entry per node, all alive.
func TestJoinIsIdempotent(t *testing.T) {
	n1 := startAgent(t, "j1", "127.0.4.1", testKey, nil, nil)
	seed := n1.cfg.AdvertiseAddr.String()
	n2 := startAgent(t, "j2", "127.0.4.2", testKey, []string{seed}, nil)
	for _, a := range []*testNode{n1, n2} {
		waitFor(t, 5*time.Second, a.name+" sees 2 alive", func() bool { return aliveCount(a.Agent) == 2 })
	}
	self := n2.cfg.AdvertiseAddr.String()
	for _, addrs := range [][]string{{seed}, {seed, seed}, {self}, {self, seed}} {
		if _, err := n2.Join(addrs, "seed"); err != nil {
			t.Fatalf("join %v again: %v", addrs, err)
		}
	}
	if _, err := n1.Join([]string{n2.cfg.AdvertiseAddr.String()}, "seed"); err != nil {
		t.Fatalf("join back from the seed: %v", err)
	}
	for _, a := range []*testNode{n1, n2} {
		ms := a.Members()
		if len(ms) != 2 || aliveCount(a.Agent) != 2 {
			t.Fatalf("%s after repeated joins: %+v", a.name, ms)
		}
	}
}

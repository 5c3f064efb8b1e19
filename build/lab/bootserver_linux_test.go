package lab

import (
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestTCGTimingLetsABootstrapElectAtOnce: the lab's raft lease is shorter than its
// heartbeat timeout, which is what lets a node bootstrapping a one-voter cluster
// (node1 of every PXE cold boot) stand for election at once instead of waiting
// one heartbeat timeout (storage/replicated electAtOnce returns early otherwise).
func TestTCGTimingLetsABootstrapElectAtOnce(t *testing.T) {
	var cfg map[string]string
	if err := yaml.Unmarshal([]byte(TCGTiming), &cfg); err != nil {
		t.Fatal(err)
	}
	dur := func(k string) time.Duration {
		d, err := time.ParseDuration(cfg[k])
		if err != nil {
			t.Fatalf("TCGTiming %s: %v", k, err)
		}
		return d
	}
	hb, lease := dur("raft-heartbeat-timeout"), dur("raft-lease-timeout")
	if lease >= hb {
		t.Fatalf("raft-lease-timeout %s >= raft-heartbeat-timeout %s: a bootstrapping node waits a whole heartbeat timeout for its first election", lease, hb)
	}
	if el := dur("raft-election-timeout"); lease > el {
		t.Fatalf("raft-lease-timeout %s > raft-election-timeout %s", lease, el)
	}
}

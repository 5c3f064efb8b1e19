package replicated

import (
	"context"
	"sync"
	"testing"
	"time"
)

func rowsOf(s *Store, table, key string) map[string]string {
	out := map[string]string{}
	for _, r := range s.Ephemeral(table).Get(key) {
		out[r.Node] = string(r.Value)
	}
	return out
}

// Ephemeral rows are node-owned and streamed: every node sees every live
// node's rows; when a node dies its rows disappear everywhere and exactly one
// survivor (the leader) is told to do the cleanup. (A restart under a new
// incarnation: TestEphemeralRowsOfAnOldIncarnationDropped.)
func TestEphemeralRowsStreamAndExpire(t *testing.T) {
	// 50 ms keepalives, but a generous silence limit: a loaded test machine
	// must not make live nodes look dead.
	c := newCluster(t, 3, func(cfg *Config) { cfg.EphemeralTimeout = 1500 * time.Millisecond })
	c.waitVoters(3, 10*time.Second)
	type drop struct {
		observer, node string
		responsible    bool
		rows           int
	}
	var mu sync.Mutex
	var drops []drop
	for _, nd := range c.nodes {
		obs := nd.name
		nd.s.OnEphemeralDrop(func(node string, _ uint64, rows int, responsible bool) {
			mu.Lock()
			drops = append(drops, drop{obs, node, responsible, rows})
			mu.Unlock()
		})
	}
	for _, nd := range c.nodes {
		nd.s.Ephemeral("sessions").Put("alice@example.org", []byte("on "+nd.name))
	}
	for _, nd := range c.nodes {
		waitFor(t, nd.name+" to see every node's row", 5*time.Second, func() bool {
			return len(rowsOf(nd.s, "sessions", "alice@example.org")) == 3
		})
	}
	c.nodes[1].s.Ephemeral("sessions").Delete("alice@example.org")
	waitFor(t, "delete to stream", 5*time.Second, func() bool {
		_, ok := rowsOf(c.nodes[0].s, "sessions", "alice@example.org")["n2"]
		return !ok
	})
	c.nodes[1].s.Ephemeral("sessions").Put("alice@example.org", []byte("back on n2"))

	// Kill a non-leader node: its row disappears on the survivors.
	l := c.waitLeader()
	var victim *testNode
	for _, nd := range c.nodes {
		if nd != l {
			victim = nd
		}
	}
	waitFor(t, "victim's row everywhere", 5*time.Second, func() bool {
		return rowsOf(l.s, "sessions", "alice@example.org")[victim.name] != ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := victim.s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	victim.s = nil
	for _, nd := range c.nodes {
		if nd.s == nil {
			continue
		}
		waitFor(t, nd.name+" to drop the dead node's rows", 5*time.Second, func() bool {
			_, ok := rowsOf(nd.s, "sessions", "alice@example.org")[victim.name]
			return !ok
		})
	}
	mu.Lock()
	responsible := 0
	for _, d := range drops {
		if d.node == victim.name && d.responsible {
			responsible++
			if d.observer != l.name {
				t.Errorf("cleanup assigned to %s, not the leader %s", d.observer, l.name)
			}
		}
	}
	mu.Unlock()
	if responsible != 1 {
		t.Fatalf("%d survivors told to clean up after %s, want 1 (%+v)", responsible, victim.name, drops)
	}
	if infos := l.s.Tables(); len(infos) == 0 || infos[len(infos)-1].Kind != "ephemeral" {
		t.Fatalf("ephemeral table missing from Tables(): %+v", infos)
	}
}

// A node that restarts before its peers find it silent comes back under a new
// incarnation: its first full copy makes every peer drop the old incarnation's
// rows at once (not after the silence timeout, here longer than the test),
// reporting that incarnation gone, with exactly one peer responsible for the
// cleanup; the new incarnation's rows take their place.
func TestEphemeralRowsOfAnOldIncarnationDropped(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.EphemeralTimeout = time.Minute })
	c.waitVoters(3, 10*time.Second)
	l := c.waitLeader()
	nd := c.follower(l)
	nd.s.Ephemeral("sessions").Put("bob@example.org/old", []byte("old"))
	var peers []*testNode
	for _, p := range c.nodes {
		if p != nd {
			peers = append(peers, p)
		}
	}
	// nd's rows of key on p, by incarnation.
	rowsAt := func(p *testNode, key string) map[uint64]string {
		out := map[uint64]string{}
		for _, r := range p.s.Ephemeral("sessions").Get(key) {
			if r.Node == nd.name {
				out[r.Incarnation] = string(r.Value)
			}
		}
		return out
	}
	var oldInc uint64
	for _, p := range peers {
		waitFor(t, p.name+" to see the row", 5*time.Second, func() bool {
			for inc := range rowsAt(p, "bob@example.org/old") {
				oldInc = inc
				return true
			}
			return false
		})
	}
	type drop struct {
		observer    string
		inc         uint64
		responsible bool
	}
	var mu sync.Mutex
	var drops []drop
	for _, p := range peers {
		obs := p.name
		p.s.OnEphemeralDrop(func(node string, inc uint64, _ int, responsible bool) {
			if node == nd.name {
				mu.Lock()
				drops = append(drops, drop{obs, inc, responsible})
				mu.Unlock()
			}
		})
	}
	restarted := time.Now()
	c.restartNode(nd, nil)
	nd.s.Ephemeral("sessions").Put("bob@example.org/new", []byte("new"))
	for _, p := range peers {
		waitFor(t, p.name+" to drop the old incarnation's row and hold the new one's", 5*time.Second, func() bool {
			if len(rowsAt(p, "bob@example.org/old")) != 0 {
				return false
			}
			for inc, v := range rowsAt(p, "bob@example.org/new") {
				return inc > oldInc && v == "new"
			}
			return false
		})
	}
	if d := time.Since(restarted); d > 30*time.Second {
		t.Fatalf("old rows dropped %v after the restart: by the silence timeout, not the new incarnation", d)
	}
	mu.Lock()
	defer mu.Unlock()
	responsible := 0
	for _, d := range drops {
		if d.inc != oldInc {
			t.Errorf("%s was told incarnation %d of %s is gone, want %d", d.observer, d.inc, nd.name, oldInc)
		}
		if d.responsible {
			responsible++
		}
	}
	if len(drops) != len(peers) || responsible != 1 {
		t.Fatalf("drops %+v: want one per peer, exactly one responsible", drops)
	}
}

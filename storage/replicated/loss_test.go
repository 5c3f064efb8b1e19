package replicated

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xedge/storage"
)

// loadWriter applies puts from every node in turn until stopped and counts errors:
// the "clients notice nothing" probe.
type loadWriter struct {
	wg     sync.WaitGroup
	stop   chan struct{}
	ok     atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	errs   []error
}

func startWriter(t *testing.T, c *cluster, table string) *loadWriter {
	w := &loadWriter{stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for i := 0; i < 100000; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			nd := c.nodes[i%len(c.nodes)]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := nd.s.Apply(ctx, storage.Put(table, fmt.Sprintf("w%06d", i), []byte(nd.name)))
			cancel()
			if err != nil {
				w.failed.Add(1)
				w.mu.Lock()
				w.errs = append(w.errs, fmt.Errorf("%s: %w", nd.name, err))
				w.mu.Unlock()
			} else {
				w.ok.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *loadWriter) finish(t *testing.T) {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		t.Errorf("%d of %d writes failed during the failure, first: %v", len(w.errs), w.ok.Load()+w.failed.Load(), w.errs[0])
	}
	t.Logf("writer: %d writes succeeded through the failure", w.ok.Load())
}

func (c *cluster) node(name string) *testNode {
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	return nil
}

// Rule 1 and 2 of DESIGN decision 5 on the leader: its storage is lost, so it
// goes RAM-only, steps down first, is demoted to nonvoter, and clients notice
// nothing; storage returns, it re-persists into a new generation and is
// promoted again.
func TestStorageLossOnLeaderThenReturn(t *testing.T) {
	c := newCluster(t, 3)
	c.waitVoters(3, 10*time.Second)
	mustDeclare(t, c.nodes[0].s, "roster", storage.Disc)
	w := startWriter(t, c, "roster")
	time.Sleep(100 * time.Millisecond)

	l := c.waitLeader()
	gen := l.s.Status().Generation
	lost := time.Now()
	l.dev.down.Store(true)
	waitFor(t, "old leader to step down and be demoted", 5*time.Second, func() bool {
		nl := c.leader()
		return nl != nil && nl != l && c.suffrage()[l.name] == "nonvoter"
	})
	t.Logf("storage loss on leader %s: stepped down and demoted in %v", l.name, time.Since(lost).Round(time.Millisecond))
	waitFor(t, "2 voters after demotion", 5*time.Second, func() bool { return c.voters() == 2 })
	waitFor(t, "demotion to reach the old leader", 5*time.Second, func() bool { return l.s.Status().Role == "nonvoter" })
	st := l.s.Status()
	if st.Mode != "ram-only" || st.Role != "nonvoter" || !strings.Contains(st.Detail, "storage lost since") {
		t.Fatalf("status of the node without storage: %+v", st)
	}
	if !markerExists(l.dir) {
		t.Fatal("no RAM-only marker written")
	}
	// It still serves reads and forwards writes.
	mustApply(t, l.s, storage.Put("roster", "while-lost", []byte("x")))
	if _, ok := get(t, l.s, "roster", "while-lost"); !ok {
		t.Fatal("read-your-writes on the RAM-only node")
	}
	time.Sleep(200 * time.Millisecond)

	back := time.Now()
	l.dev.down.Store(false)
	waitFor(t, "re-persist and promotion", 10*time.Second, func() bool {
		st := l.s.Status()
		return c.voters() == 3 && st.Mode == "durable" && st.Role == "voter"
	})
	t.Logf("storage back on %s: re-persisted and promoted in %v", l.name, time.Since(back).Round(time.Millisecond))
	st = l.s.Status()
	if st.Generation <= gen || st.Role != "voter" || markerExists(l.dir) {
		t.Fatalf("after return: %+v (generation before loss %d), marker %v", st, gen, markerExists(l.dir))
	}
	w.finish(t)
	// The re-persisted generation holds the node's state: reopen the device.
	var want int
	tb := mustTable(t, l.s, "roster")
	want, _ = tb.Count("")
	if want < 10 {
		t.Fatalf("only %d rows written", want)
	}
	st2, err := openStores(l.dev, false, true, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := st2.LastIndex(); last == 0 {
		t.Fatal("re-persisted generation is empty")
	}
}

// A follower's storage loss: it is demoted, its reads stay current.
func TestStorageLossOnFollower(t *testing.T) {
	c := newCluster(t, 3)
	c.waitVoters(3, 10*time.Second)
	mustDeclare(t, c.nodes[0].s, "t", storage.Disc)
	l := c.waitLeader()
	var f *testNode
	for _, nd := range c.nodes {
		if nd != l {
			f = nd
		}
	}
	f.dev.down.Store(true)
	// No write: the idle probe notices the loss by itself.
	waitFor(t, "follower demoted", 5*time.Second, func() bool { return c.suffrage()[f.name] == "nonvoter" })
	if nl := c.leader(); nl != nil && nl != l {
		// Not caused by the loss (a follower's loss never transfers
		// leadership), but elections happen on a loaded test machine.
		t.Logf("leadership moved from %s during the test", l.name)
		if nl == f {
			t.Fatal("the node without storage became leader")
		}
		l = nl
	}
	mustApply(t, l.s, storage.Put("t", "b", []byte("2")))
	waitFor(t, "RAM-only follower to replicate", 5*time.Second, func() bool { _, ok := get(t, f.s, "t", "b"); return ok })
	f.dev.down.Store(false)
	waitFor(t, "follower promoted again", 10*time.Second, func() bool { return c.suffrage()[f.name] == "voter" })
}

// Every node loses storage at once: the cluster enters a visible degraded-ram
// mode and keeps committing in RAM. Every write acknowledged before, during and
// after the outage is read back on every node once storage is back, and again
// after a full-cluster restart from the devices (so the RAM-committed writes were
// re-persisted, not only kept in memory).
func TestAllStorageLostDegradedRAM(t *testing.T) {
	c := newCluster(t, 3)
	c.waitVoters(3, 10*time.Second)
	mustDeclare(t, c.nodes[0].s, "t", storage.Disc)

	// A writer that remembers which keys were acknowledged.
	var (
		ackMu sync.Mutex
		acked []string
		nerr  int
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			nd := c.nodes[i%len(c.nodes)]
			key := fmt.Sprintf("w%06d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := nd.s.Apply(ctx, storage.Put("t", key, []byte(nd.name)))
			cancel()
			ackMu.Lock()
			if err == nil {
				acked = append(acked, key)
			} else {
				nerr++
			}
			ackMu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	ackedNow := func() int { ackMu.Lock(); defer ackMu.Unlock(); return len(acked) }
	waitFor(t, "writes before the loss", 5*time.Second, func() bool { return ackedNow() >= 20 })
	before := ackedNow()

	for _, nd := range c.nodes {
		nd.dev.down.Store(true)
	}
	waitFor(t, "degraded-ram on every node", 5*time.Second, func() bool {
		for _, nd := range c.nodes {
			if nd.s.Status().Mode != "degraded-ram" {
				return false
			}
		}
		return true
	})
	// A node that noticed the loss first may have been demoted meanwhile; with
	// no storage anywhere autopilot fills the voter set back up from RAM nodes.
	waitFor(t, "3 voters in degraded mode", 5*time.Second, func() bool { return c.voters() == 3 })
	waitFor(t, "loss window stated", 5*time.Second, func() bool {
		st := c.nodes[1].s.Status()
		return strings.Contains(st.Detail, "writes are committed in RAM only") && strings.Contains(st.Detail, "2 of 3 voters")
	})
	mustApply(t, c.nodes[2].s, storage.Put("t", "degraded", []byte("ok")))
	during := ackedNow()
	waitFor(t, "writes acknowledged in degraded-ram", 5*time.Second, func() bool { return ackedNow() >= during+20 })
	for _, nd := range c.nodes { // the degraded write reached every replica
		waitFor(t, nd.name+" has the degraded write", 5*time.Second, func() bool { v, ok := get(t, nd.s, "t", "degraded"); return ok && v == "ok" })
	}
	for _, nd := range c.nodes {
		nd.dev.down.Store(false)
	}
	waitFor(t, "durable again everywhere", 10*time.Second, func() bool {
		for _, nd := range c.nodes {
			if nd.s.Status().Mode != "durable" {
				return false
			}
		}
		return c.voters() == 3
	})
	after := ackedNow()
	waitFor(t, "writes after the return", 5*time.Second, func() bool { return ackedNow() >= after+20 })
	close(stop)
	<-done
	ackMu.Lock()
	keys := append([]string{"degraded"}, acked...)
	failed := nerr
	ackMu.Unlock()
	if failed > 0 {
		t.Errorf("%d writes failed through the outage (degraded-ram must keep committing)", failed)
	}
	t.Logf("acknowledged: %d before the loss, %d by its end, %d in all", before, after, len(keys)-1)

	readBack := func(when string) {
		t.Helper()
		for _, nd := range c.nodes {
			waitFor(t, fmt.Sprintf("%s: %s has every acknowledged write", when, nd.name), 5*time.Second, func() bool {
				_, ok := get(t, nd.s, "t", keys[len(keys)-1])
				return ok
			})
			for _, k := range keys {
				if _, ok := get(t, nd.s, "t", k); !ok {
					t.Fatalf("%s: %s lost acknowledged write %s", when, nd.name, k)
				}
			}
		}
	}
	readBack("storage back")
	c.restartAll()
	readBack("after a full-cluster restart")
}

// With the read-only option, a cluster without storage refuses writes with
// storage.ErrUnavailable (xmppd answers <wait/>) and accepts them again later.
func TestAllStorageLostReadOnly(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.ReadOnlyOnLoss = true })
	c.waitVoters(3, 10*time.Second)
	mustDeclare(t, c.nodes[0].s, "t", storage.Disc)
	mustApply(t, c.nodes[1].s, storage.Put("t", "before", []byte("1")))
	for _, nd := range c.nodes {
		nd.dev.down.Store(true)
	}
	// The first write after the loss is what detects it (it may still commit).
	_ = c.nodes[0].s.Apply(context.Background(), storage.Put("t", "detect", []byte("1")))
	waitFor(t, "read-only on every node", 5*time.Second, func() bool {
		for _, nd := range c.nodes {
			if nd.s.Status().Mode != "read-only" {
				return false
			}
		}
		return true
	})
	for _, nd := range c.nodes {
		err := nd.s.Apply(context.Background(), storage.Put("t", "refused", []byte("1")))
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("%s: write in read-only mode: %v", nd.name, err)
		}
		if v, ok := get(t, nd.s, "t", "before"); !ok || v != "1" {
			t.Fatalf("%s: reads must keep working in read-only mode", nd.name)
		}
	}
	for _, nd := range c.nodes {
		nd.dev.down.Store(false)
	}
	waitFor(t, "writes accepted again", 10*time.Second, func() bool {
		return c.nodes[2].s.Apply(context.Background(), storage.Put("t", "after", []byte("1"))) == nil
	})
}

// A node that ran RAM-only and restarts never rejoins under its old raft ID:
// it wipes its device state and joins as a fresh member; the old ID is removed.
func TestRAMOnlyRestartRejoinsUnderFreshID(t *testing.T) {
	c := newCluster(t, 3)
	c.waitVoters(3, 10*time.Second)
	mustDeclare(t, c.nodes[0].s, "t", storage.Disc)
	l := c.waitLeader()
	var f *testNode
	for _, nd := range c.nodes {
		if nd != l {
			f = nd
		}
	}
	oldID := f.s.ID()
	f.dev.down.Store(true)
	mustApply(t, l.s, storage.Put("t", "a", []byte("1")))
	waitFor(t, "follower RAM-only", 5*time.Second, func() bool { return markerExists(f.dir) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	f.s = nil
	mustApply(t, l.s, storage.Put("t", "b", []byte("2")))
	f.dev.down.Store(false)
	c.start(f)
	if f.s.ID() == oldID {
		t.Fatalf("restarted under the old raft ID %s", oldID)
	}
	waitFor(t, "fresh incarnation joined and promoted", 10*time.Second, func() bool {
		f2 := l.s.raft.GetConfiguration()
		if f2.Error() != nil {
			return false
		}
		seenNew := false
		for _, srv := range f2.Configuration().Servers {
			if string(srv.ID) == oldID {
				return false
			}
			seenNew = seenNew || string(srv.ID) == f.s.ID()
		}
		return seenNew && c.voters() == 3
	})
	waitFor(t, "fresh member caught up", 5*time.Second, func() bool { _, ok := get(t, f.s, "t", "b"); return ok })
	if markerExists(f.dir) {
		t.Fatal("marker left after a durable start")
	}
}

// A full-cluster restart from the devices keeps every acknowledged write.
func TestDurableRestartKeepsData(t *testing.T) {
	c := newCluster(t, 3)
	c.waitVoters(3, 10*time.Second)
	mustDeclare(t, c.nodes[0].s, "t", storage.Disc)
	for i := 0; i < 50; i++ {
		mustApply(t, c.nodes[i%3].s, storage.Put("t", fmt.Sprintf("k%02d", i), []byte("v")))
	}
	ids := map[string]string{}
	for _, nd := range c.nodes {
		ids[nd.name] = nd.s.ID()
		nd.cfg.ClusterAddr = nd.s.Addr() // same address after restart
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := nd.s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		nd.s = nil
	}
	for _, nd := range c.nodes {
		c.start(nd)
		if nd.s.ID() != ids[nd.name] {
			t.Fatalf("durable restart changed the ID of %s", nd.name)
		}
	}
	waitFor(t, "leader after restart", 10*time.Second, func() bool { return c.leader() != nil })
	for _, nd := range c.nodes {
		waitFor(t, nd.name+" to replay", 5*time.Second, func() bool {
			tb, err := nd.s.Durable("t")
			if err != nil {
				return false
			}
			n, _ := tb.Count("k")
			return n == 50
		})
	}
	mustApply(t, c.nodes[1].s, storage.Put("t", "after", []byte("v")))
}

// A node whose device does not answer at start runs RAM-only under a fresh ID,
// joins as a nonvoter, and becomes a durable voter once the device answers.
func TestDeviceUnreadableAtStart(t *testing.T) {
	c := newCluster(t, 2)
	c.waitVoters(2, 10*time.Second)
	dev := newLossDev(8 << 20)
	dev.down.Store(true)
	nd := c.add(func(cfg *Config) { cfg.Device = dev })
	nd.dev = dev
	waitFor(t, "RAM-only nonvoter", 10*time.Second, func() bool {
		return c.suffrage()[nd.name] == "nonvoter" && nd.s.Status().Mode == "ram-only"
	})
	if !markerExists(nd.dir) {
		t.Fatal("no RAM-only marker for a node that started without storage")
	}
	dev.down.Store(false)
	waitFor(t, "durable voter once the device answers", 10*time.Second, func() bool {
		return c.suffrage()[nd.name] == "voter" && nd.s.Status().Mode == "durable"
	})
	if markerExists(nd.dir) {
		t.Fatal("marker left after re-persist")
	}
}

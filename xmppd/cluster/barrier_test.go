package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xedge/xmppd/cluster/clustertest"
)

// busPair returns buses "a" and "b" (not started) that reach each other.
func busPair(t *testing.T) (a, b *Bus) {
	ta, tb := clustertest.New(t), clustertest.New(t)
	addrs := map[string]string{"a": ta.Addr(), "b": tb.Addr()}
	return newBus(t, "a", 1, ta, addrs), newBus(t, "b", 1, tb, addrs)
}

func queuedFor(b *Bus, node string) int {
	for _, ps := range b.Stats() {
		if ps.Node == node {
			return ps.Queued
		}
	}
	return 0
}

// A message whose handler called HoldAck is not acknowledged before the
// barrier returned: if the receiver is declared dead meanwhile, the sender's
// onFail runs (the router routes the stanza again) instead of the message
// counting as delivered.
func TestBarrierHoldsAck(t *testing.T) {
	ta, tb := clustertest.New(t), clustertest.New(t)
	addrs := map[string]string{"a": ta.Addr(), "b": tb.Addr()}
	a := newBus(t, "a", 1, ta, addrs)
	b := newBus(t, "b", 1, tb, addrs)
	release := make(chan struct{})
	var barriers atomic.Int32
	b.SetBarrier(func(ctx context.Context) error {
		barriers.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	handled := make(chan string, 10)
	b.Handle("held", func(ctx context.Context, _ Peer, m *Message) ([]byte, error) {
		HoldAck(ctx)
		handled <- m.To
		return nil, nil
	})
	for _, x := range []*Bus{a, b} {
		if err := x.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	failed := make(chan error, 1)
	a.Send("b", &Message{Kind: "held", To: "x"}, func(_ *Message, err error) { failed <- err })
	select {
	case <-handled:
	case <-time.After(5 * time.Second):
		t.Fatal("not handled")
	}
	time.Sleep(100 * time.Millisecond)
	if q := queuedFor(a, "b"); q != 1 {
		t.Fatalf("acknowledged before the barrier returned: queued %d, want 1", q)
	}
	a.NodeDown("b")
	select {
	case err := <-failed:
		if err != ErrPeerGone {
			t.Fatalf("onFail: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a held message of a node declared dead did not fail")
	}
	close(release)
}

// One barrier covers a batch: many held messages cost few barriers, and all
// are acknowledged once it returns.
func TestBarrierBatches(t *testing.T) {
	ta, tb := clustertest.New(t), clustertest.New(t)
	addrs := map[string]string{"a": ta.Addr(), "b": tb.Addr()}
	a := newBus(t, "a", 1, ta, addrs)
	b := newBus(t, "b", 1, tb, addrs)
	var barriers atomic.Int32
	b.SetBarrier(func(ctx context.Context) error {
		barriers.Add(1)
		time.Sleep(5 * time.Millisecond) // a round trip to a replica
		return nil
	})
	var mu sync.Mutex
	n := 0
	b.Handle("held", func(ctx context.Context, _ Peer, m *Message) ([]byte, error) {
		if m.To == "sm" {
			HoldAck(ctx)
		}
		mu.Lock()
		n++
		mu.Unlock()
		return nil, nil
	})
	for _, x := range []*Bus{a, b} {
		if err := x.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	const total = 900 // below the test buses' QueueMax
	for i := range total {
		to := "plain"
		if i%2 == 0 {
			to = "sm"
		}
		a.Send("b", &Message{Kind: "held", To: to}, func(_ *Message, err error) { t.Errorf("failed: %v", err) })
	}
	deadline := time.Now().Add(10 * time.Second)
	for queuedFor(a, "b") > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if q := queuedFor(a, "b"); q > 0 {
		t.Fatalf("%d messages never acknowledged", q)
	}
	if c := barriers.Load(); c == 0 || c > total/10 {
		t.Fatalf("%d barriers for %d held messages: want at least one and batching", c, total/2)
	}
	t.Logf("%d barriers for %d held messages", barriers.Load(), total/2)
	// Without HoldAck no barrier runs.
	before := barriers.Load()
	a.Send("b", &Message{Kind: "held", To: "plain"}, nil)
	for queuedFor(a, "b") > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if barriers.Load() != before {
		t.Fatal("a barrier ran for a message that did not hold its ack")
	}
}

// A barrier that fails does not let the held message be acknowledged: it is
// retried, and the acknowledgement goes out once it holds. Before, the
// message was acknowledged after the first failure: a node its peers had
// declared lost (no peer to confirm its sessions' state) told the sender a
// stanza was safe that only it held, and the stanza was lost with it.
func TestBarrierFailureHoldsAck(t *testing.T) {
	a, b := busPair(t)
	var failing atomic.Bool
	failing.Store(true)
	var barriers atomic.Int32
	b.SetBarrier(func(context.Context) error {
		barriers.Add(1)
		if failing.Load() {
			return errors.New("no peer confirmed")
		}
		return nil
	})
	handled := make(chan struct{}, 1)
	b.Handle("held", func(ctx context.Context, _ Peer, _ *Message) ([]byte, error) {
		HoldAck(ctx)
		handled <- struct{}{}
		return nil, nil
	})
	for _, x := range []*Bus{a, b} {
		if err := x.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	a.Send("b", &Message{Kind: "held"}, nil)
	select {
	case <-handled:
	case <-time.After(5 * time.Second):
		t.Fatal("not handled")
	}
	// Bounded by round trips of the barrier: at least two attempts failed.
	for deadline := time.Now().Add(5 * time.Second); barriers.Load() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the failed barrier was not retried (%d attempts)", barriers.Load())
		}
	}
	if q := queuedFor(a, "b"); q != 1 {
		t.Fatalf("acknowledged although the barrier failed: queued %d, want 1", q)
	}
	failing.Store(false)
	for deadline := time.Now().Add(5 * time.Second); queuedFor(a, "b") > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not acknowledged after the barrier held again")
		}
	}
}

// Messages a node declared gone had not acknowledged fail, except those the
// held function says are held here (a stanza in this node's copy of its
// session): their onFail does not run.
func TestNodeDownSparesHeldMessages(t *testing.T) {
	a, b := busPair(t)
	b.SetBarrier(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }) // never acknowledges
	b.Handle("held", func(ctx context.Context, _ Peer, _ *Message) ([]byte, error) {
		HoldAck(ctx)
		return nil, nil
	})
	a.SetHeld(func(node string, m *Message) bool { return node == "b" && m.To == "in-a-copy" })
	for _, x := range []*Bus{a, b} {
		if err := x.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var failed []string
	for _, to := range []string{"in-a-copy", "nowhere"} {
		a.Send("b", &Message{Kind: "held", To: to}, func(m *Message, _ error) {
			mu.Lock()
			failed = append(failed, m.To)
			mu.Unlock()
		})
	}
	for deadline := time.Now().Add(5 * time.Second); queuedFor(a, "b") != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("queued %d, want 2 unacknowledged", queuedFor(a, "b"))
		}
	}
	a.NodeDown("b") // runs the onFails of what it fails before it returns
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != 1 || failed[0] != "nowhere" {
		t.Fatalf("failed: %v, want only the message not held", failed)
	}
}

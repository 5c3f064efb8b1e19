package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"xedge/xmppd/cluster/clustertest"
)

// A node that declared a live peer down (a false node loss) and sends to it
// again later — same incarnations on both sides — must get its new messages
// handled: the receiver must not take them for duplicates of the old link's.
func TestBusSendAfterFalseNodeDownIsDelivered(t *testing.T) {
	_, a, _, c := hbPair(t, 0, 0)
	old := bodies("old", 20)
	sendAll(a, "b", old)
	c.wait(t, old)
	a.NodeDown("b")
	fresh := bodies("new", 5)
	sendAll(a, "b", fresh)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := a.Call(ctx, "b", &Message{Kind: "x", Body: []byte("call")}); err != nil || string(r) != "call" {
		t.Fatalf("call after NodeDown: %q %v", r, err)
	}
	c.wait(t, fresh)
}

// hbBus is a bus with short heartbeats (hb < 0: none, as an older node).
func hbBus(t *testing.T, node string, tr *clustertest.Transport, addrs map[string]string, hb time.Duration) *Bus {
	b := New(Config{Node: node, Incarnation: 1, Transport: tr, QueueMax: 1000, Heartbeat: hb, HeartbeatTimeout: 6 * hb,
		Resolve: func(n string) (string, bool) { a, ok := addrs[n]; return a, ok }})
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}

// hbPair starts bus a (heartbeat hbA) sending to bus b (hbB), whose
// handler of kind "x" is the returned counter; ta is a's transport.
func hbPair(t *testing.T, hbA, hbB time.Duration) (ta *clustertest.Transport, a, b *Bus, c *counter) {
	ta, tb := clustertest.New(t), clustertest.New(t)
	addrs := map[string]string{"a": ta.Addr(), "b": tb.Addr()}
	a = hbBus(t, "a", ta, addrs, hbA)
	b = hbBus(t, "b", tb, addrs, hbB)
	c = &counter{}
	b.Handle("x", c.handle)
	for _, x := range []*Bus{a, b} {
		if err := x.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return ta, a, b, c
}

// counter counts the messages of kind "x" handled by body.
type counter struct {
	mu   sync.Mutex
	seen map[string]int
}

func (c *counter) handle(_ context.Context, _ Peer, m *Message) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[string]int{}
	}
	c.seen[string(m.Body)]++
	return m.Body, nil
}

// wait waits (bounded: a stalled link without heartbeats would hold its
// messages for TCP's many minutes) until every body was handled once.
func (c *counter) wait(t *testing.T, bodies []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		var missing []string
		for _, b := range bodies {
			switch n := c.seen[b]; {
			case n == 0:
				missing = append(missing, b)
			case n > 1:
				c.mu.Unlock()
				t.Fatalf("message %s handled %d times", b, n)
			}
		}
		c.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages not handled (first %s)", len(missing), len(bodies), missing[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func bodies(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprint(prefix, i))
	}
	return out
}

func sendAll(b *Bus, to string, bs []string) {
	for _, x := range bs {
		b.Send(to, &Message{Kind: "x", Body: []byte(x)}, nil)
	}
}

// A link whose packets are dropped both ways (a cut healed behind it, a
// firewall that lost its state) is detected by the silence of the receiver's
// keepalives, closed and redialed; what was not acknowledged is written again
// on the new link and handled once. Without heartbeats the queue sits on the
// dead connection until TCP gives up.
func TestBusBlackholedLinkIsRedialed(t *testing.T) {
	ta, a, _, c := hbPair(t, 50*time.Millisecond, 50*time.Millisecond)
	before := bodies("before", 20)
	sendAll(a, "b", before)
	c.wait(t, before)
	if n := ta.Blackhole(true, true); n < 1 {
		t.Fatalf("%d links from a, want at least 1", n)
	}
	after := bodies("after", 20)
	sendAll(a, "b", after)
	c.wait(t, after)
	st := a.Stats()
	if len(st) != 1 || st[0].Stalls < 1 {
		t.Fatalf("stats %+v: want the stalled link counted", st)
	}
	// The new link carries calls too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := a.Call(ctx, "b", &Message{Kind: "x", Body: []byte("call")}); err != nil || string(r) != "call" {
		t.Fatalf("call on the new link: %q %v", r, err)
	}
}

// When only what the sender writes is dropped (the receiver's keepalives
// still arrive), the receiver notices the silence and closes its side; the
// sender sees the close and redials.
func TestBusReceiverClosesSilentStream(t *testing.T) {
	ta, a, b, c := hbPair(t, 50*time.Millisecond, 50*time.Millisecond)
	before := bodies("before", 5)
	sendAll(a, "b", before)
	c.wait(t, before)
	ta.Blackhole(true, false)
	after := bodies("after", 5)
	sendAll(a, "b", after)
	c.wait(t, after)
	if b.Stalls() < 1 {
		t.Fatal("the receiver did not count a stalled stream")
	}
}

// A call whose reply was lost with a stalled link is written again on the
// next one: the receiver, which handled it, sends the reply it kept instead
// of running the handler twice.
func TestBusCallReplyLostWithLinkIsResent(t *testing.T) {
	ta, a, _, c := hbPair(t, 50*time.Millisecond, 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := a.Call(ctx, "b", &Message{Kind: "x", Body: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	ta.Blackhole(false, true) // b's acknowledgements and replies are lost
	r, err := a.Call(ctx, "b", &Message{Kind: "x", Body: []byte("second")})
	if err != nil || string(r) != "second" {
		t.Fatalf("call across the stall: %q %v", r, err)
	}
	c.wait(t, []string{"first", "second"})
}

// A node without heartbeats (an older version) is not cut off for being
// silent, and its receiver's keepalives do not disturb it.
func TestBusWithoutHeartbeatsIsNotClosedWhenIdle(t *testing.T) {
	_, a, b, c := hbPair(t, -1, 20*time.Millisecond)
	sendAll(a, "b", []string{"one"})
	c.wait(t, []string{"one"})
	// Idle for many of b's timeouts, counted by b's keepalive ticks.
	time.Sleep(10 * 6 * 20 * time.Millisecond)
	sendAll(a, "b", []string{"two"})
	c.wait(t, []string{"two"})
	if b.Stalls() != 0 || a.Stalls() != 0 {
		t.Fatalf("stalls: a %d, b %d; want none", a.Stalls(), b.Stalls())
	}
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
	"xedge/xmppd/cluster/clustertest"
)

func newBus(t *testing.T, node string, inc uint64, tr *clustertest.Transport, addrs map[string]string) *Bus {
	b := New(Config{Node: node, Incarnation: inc, Transport: tr, QueueMax: 1000,
		Resolve: func(n string) (string, bool) { a, ok := addrs[n]; return a, ok }})
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b
}

func TestBusOrderedAckedAndCall(t *testing.T) {
	ta, tb := clustertest.New(t), clustertest.New(t)
	addrs := map[string]string{"a": ta.Addr(), "b": tb.Addr()}
	a := newBus(t, "a", 1, ta, addrs)
	b := newBus(t, "b", 1, tb, addrs)
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	b.Handle("x", func(_ context.Context, from Peer, m *Message) ([]byte, error) {
		mu.Lock()
		got = append(got, m.To+"/"+string(m.Body))
		if len(got) == 1000 {
			close(done)
		}
		mu.Unlock()
		if from.Node != "a" {
			t.Errorf("from %v", from)
		}
		return nil, nil
	})
	b.Handle("echo", func(_ context.Context, _ Peer, m *Message) ([]byte, error) {
		if string(m.Body) == "fail" {
			return nil, errors.New("asked to fail")
		}
		return append([]byte("re:"), m.Body...), nil
	})
	for _, x := range []*Bus{a, b} {
		if err := x.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		a.Send("b", &Message{Kind: "x", To: "t", Body: []byte(fmt.Sprint(i))}, func(m *Message, err error) {
			t.Errorf("message %s failed: %v", m.Body, err)
		})
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("messages not delivered")
	}
	mu.Lock()
	for i, g := range got {
		if g != fmt.Sprintf("t/%d", i) {
			t.Fatalf("message %d is %q: out of order", i, g)
		}
	}
	mu.Unlock()
	// Acknowledgements are coalesced: the queue (at QueueMax) empties shortly
	// after the last message was handled.
	for deadline := time.Now().Add(5 * time.Second); queuedFor(a, "b") > 0 && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := a.Call(ctx, "b", &Message{Kind: "echo", Body: []byte("hi")})
	if err != nil || string(r) != "re:hi" {
		t.Fatalf("call: %q %v", r, err)
	}
	if _, err := a.Call(ctx, "b", &Message{Kind: "echo", Body: []byte("fail")}); err == nil {
		t.Fatal("call: want the handler's error")
	}
	if _, err := a.Call(ctx, "b", &Message{Kind: "nope"}); err == nil {
		t.Fatal("call of an unknown kind: want an error")
	}
	// Everything acknowledged: nothing queued.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := a.Stats()
		if len(st) == 1 && st[0].Queued == 0 && st[0].Connected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not drained: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A message to a peer that never acknowledges fails exactly once when the
// peer is declared down; an unknown node fails at once; a full queue too.
func TestBusFailsUnackedOnNodeDown(t *testing.T) {
	ta := clustertest.New(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens: connects fail, messages stay queued
	addrs := map[string]string{"a": ta.Addr(), "d": deadAddr}
	a := newBus(t, "a", 1, ta, addrs)
	a.Start(context.Background())
	var mu sync.Mutex
	fails := map[string]int{}
	for i := range 5 {
		a.Send("d", &Message{Kind: "x", Body: []byte(fmt.Sprint(i))}, func(m *Message, err error) {
			if !errors.Is(err, ErrPeerGone) {
				t.Errorf("err %v", err)
			}
			mu.Lock()
			fails[string(m.Body)]++
			mu.Unlock()
		})
	}
	time.Sleep(100 * time.Millisecond)
	a.NodeDown("d")
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	if len(fails) != 5 {
		t.Errorf("failed %d of 5: %v", len(fails), fails)
	}
	for k, n := range fails {
		if n != 1 {
			t.Errorf("message %s failed %d times", k, n)
		}
	}
	mu.Unlock()
	ch := make(chan error, 1)
	a.Send("nobody", &Message{Kind: "x"}, func(_ *Message, err error) { ch <- err })
	if err := <-ch; !errors.Is(err, ErrNoPeer) {
		t.Errorf("unknown node: %v", err)
	}
	var full int
	var fmu sync.Mutex
	for range 1001 {
		a.Send("d", &Message{Kind: "x"}, func(_ *Message, err error) {
			if errors.Is(err, ErrQueueFull) {
				fmu.Lock()
				full++
				fmu.Unlock()
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	fmu.Lock()
	if full != 1 {
		t.Errorf("queue full failures: %d, want 1", full)
	}
	fmu.Unlock()
}

// A connection that breaks is re-established and the unacknowledged
// messages are resent; the receiver handles each exactly once.
func TestBusReconnectResendsOnce(t *testing.T) {
	ta, tb := clustertest.New(t), clustertest.New(t)
	addrs := map[string]string{"a": ta.Addr(), "b": tb.Addr()}
	a := newBus(t, "a", 1, ta, addrs)
	b := newBus(t, "b", 1, tb, addrs)
	var mu sync.Mutex
	seen := map[string]int{}
	b.Handle("x", func(_ context.Context, _ Peer, m *Message) ([]byte, error) {
		mu.Lock()
		seen[string(m.Body)]++
		mu.Unlock()
		return nil, nil
	})
	a.Start(context.Background())
	b.Start(context.Background())
	for i := range 200 {
		a.Send("b", &Message{Kind: "x", Body: []byte(fmt.Sprint(i))}, nil)
		if i == 100 {
			// break every inbound connection of b
			b.mu.Lock()
			for c := range b.inConns {
				c.Close()
			}
			b.mu.Unlock()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 200 {
		t.Fatalf("delivered %d of 200", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("message %s handled %d times", k, n)
		}
	}
}

func TestClockMonotonicAndObserve(t *testing.T) {
	fixed := time.Unix(100, 0)
	c := NewClock("n1", func() time.Time { return fixed })
	a := c.Now()
	b := c.Now()
	if !a.Less(b) {
		t.Fatalf("%v !< %v with a stopped wall clock", a, b)
	}
	// A remote stamp far ahead (another node's clock): later stamps here are after it.
	remote := Stamp{Wall: fixed.UnixNano() + int64(time.Hour), Logical: 7, Node: "n2"}
	c.Observe(remote)
	if d := c.Now(); !remote.Less(d) {
		t.Fatalf("%v !< %v after Observe", remote, d)
	}
	// The tie-break is the node name, never a counter of its own.
	x, y := Stamp{Wall: 5, Node: "a"}, Stamp{Wall: 5, Node: "b"}
	if !x.Less(y) || y.Less(x) {
		t.Fatal("node tie-break")
	}
	p, err := ParseStamp(remote.String())
	if err != nil || p != remote {
		t.Fatalf("parse %v %v", p, err)
	}
}

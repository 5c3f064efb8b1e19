//go:build integration

package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"xedge/storage/replicated"
)

// Integration tests of the bus over the real cluster transport (the
// replicated store's TLS mux on loopback) with packets dropped by the
// kernel's firewall: iptables rules on loopback that match only ports this
// test owns (its two listeners, and the port of the one connection it
// blackholes), deleted in t.Cleanup.

// iptables adds (-I) or deletes (-D) an INPUT rule dropping loopback TCP
// with the given port option (--sport/--dport PORT).
func iptables(t *testing.T, op, dir string, port int) {
	t.Helper()
	args := []string{op, "INPUT", "-i", "lo", "-p", "tcp", dir, strconv.Itoa(port), "-j", "DROP"}
	if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %v: %v: %s", args, err, out)
	}
}

// drop drops loopback TCP to and from port until the returned heal (also run
// at the test's end, once).
func drop(t *testing.T, port int) (heal func()) {
	iptables(t, "-I", "--dport", port)
	iptables(t, "-I", "--sport", port)
	var once sync.Once
	heal = func() {
		once.Do(func() {
			iptables(t, "-D", "--dport", port)
			iptables(t, "-D", "--sport", port)
		})
	}
	t.Cleanup(heal)
	return heal
}

func realBus(t *testing.T, node string, key []byte, addrs map[string]string) (*Bus, int) {
	t.Helper()
	st, err := replicated.New(replicated.Config{NodeName: node, ClusterAddr: "127.0.0.1:0", ClusterKey: key})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Stop(context.Background()) })
	addrs[node] = st.Addr()
	_, p, _ := net.SplitHostPort(st.Addr())
	port, _ := strconv.Atoi(p)
	b := New(Config{Node: node, Incarnation: 1, Transport: st,
		Resolve: func(n string) (string, bool) { a, ok := addrs[n]; return a, ok }})
	t.Cleanup(func() { b.Stop(context.Background()) })
	return b, port
}

// TestBusStallDetectedOverRealTCP: with the production settings (keepalives
// every 200 ms, a link silent for 1 s is stalled), (1) the established bus
// connection between two nodes starts dropping every packet (a firewall or
// NAT that lost its state; new connections pass): the sender closes it,
// redials at once and writes again what was not acknowledged — every message
// is handled exactly once and a call is answered, where TCP alone would hold
// them for its retransmission timeout (many minutes); (2) the receiver's
// cluster port is cut for 3 s while messages keep coming, then healed: all of
// them are handled once, in order, soon after the heal (no TCP
// retransmission backoff to wait out).
func TestBusStallDetectedOverRealTCP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to add iptables rules (CI runs as root)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("iptables not found (build/setup.sh installs it): %v", err)
	}
	key := []byte("stall-integration-test-cluster-key")
	addrs := map[string]string{}
	var mu sync.Mutex
	var order []string
	got := map[string]int{}
	a, _ := realBus(t, "a", key, addrs)
	b, bport := realBus(t, "b", key, addrs)
	b.Handle("x", func(_ context.Context, _ Peer, m *Message) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		got[string(m.Body)]++
		order = append(order, string(m.Body))
		return m.Body, nil
	})
	for _, x := range []*Bus{a, b} {
		if err := x.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// waitAll waits (bounded) until every body was handled, once.
	waitAll := func(bodies []string) time.Time {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			n := 0
			for _, x := range bodies {
				switch got[x] {
				case 0:
				case 1:
					n++
				default:
					mu.Unlock()
					t.Fatalf("message %s handled %d times", x, got[x])
				}
			}
			mu.Unlock()
			if n == len(bodies) {
				return time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d messages handled within 30 s", n, len(bodies))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	send := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			x := fmt.Sprint(prefix, i)
			out = append(out, x)
			a.Send("b", &Message{Kind: "x", Body: []byte(x)}, func(m *Message, err error) {
				t.Errorf("message %s failed: %v", m.Body, err)
			})
		}
		return out
	}
	waitAll(send("warm", 50))

	// (1) The established connection blackholed, new ones pass.
	// The one stream from a (a stream superseded after a stall on a loaded
	// machine leaves b's set when its reader ends).
	var conns []net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b.mu.Lock()
		conns = conns[:0]
		for c := range b.inConns {
			conns = append(conns, c)
		}
		b.mu.Unlock()
		if len(conns) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b has %d inbound bus streams, want 1", len(conns))
		}
	}
	_, p, _ := net.SplitHostPort(conns[0].RemoteAddr().String())
	aport, _ := strconv.Atoi(p)
	drop(t, aport)
	t0 := time.Now()
	stalled := send("stalled", 50)
	done := waitAll(stalled)
	t.Logf("blackholed connection: all 50 messages handled %.2f s after the drop (redialed; a's links stalled %d)", done.Sub(t0).Seconds(), a.Stalls())
	if a.Stalls() < 1 {
		t.Errorf("a counted no stalled link")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r, err := a.Call(ctx, "b", &Message{Kind: "x", Body: []byte("call")}); err != nil || string(r) != "call" {
		t.Fatalf("call after the redial: %q %v", r, err)
	}

	// (2) b's cluster port cut for 3 s under a message every 20 ms.
	heal := drop(t, bport)
	var cut []string
	for i := range 150 {
		cut = append(cut, send(fmt.Sprint("cut", i, "-"), 1)...)
		if i == 149 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	heal()
	t1 := time.Now()
	done = waitAll(cut)
	t.Logf("3 s cut of b's cluster port: all 150 messages handled %.2f s after the heal", done.Sub(t1).Seconds())
	mu.Lock()
	defer mu.Unlock()
	// In order: the queue is written again from its first unacknowledged
	// message, and the receiver skips what it handled.
	idx := map[string]int{}
	for i, x := range order {
		idx[x] = i
	}
	for i := 1; i < len(cut); i++ {
		if idx[cut[i]] < idx[cut[i-1]] {
			t.Fatalf("%s handled before %s", cut[i], cut[i-1])
		}
	}
}

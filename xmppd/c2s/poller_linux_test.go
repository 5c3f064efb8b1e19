package c2s

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

func waitParked(t *testing.T, e *env, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d parked streams", n), func() bool { p, _ := e.srv.poller.stats(); return p == n })
}

func (e *env) conns() int {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	return len(e.srv.conns)
}

// Many idle streams wait without a goroutine each; input, keepalives, a client
// that drops, a stream the server closes and the server's stop all reach parked
// streams.
func TestPollerManyParkedStreams(t *testing.T) {
	const n = 40
	e := start(t, func(c *Config) { c.ParkAfter = 10 * time.Millisecond; c.Keepalive = 300 * time.Millisecond })
	if e.srv.poller == nil {
		t.Fatal("no poller on Linux")
	}
	before := runtime.NumGoroutine()
	cs := make([]*testenv.Raw, n)
	for i := range cs {
		cs[i] = e.login(t, "alice", fmt.Sprintf("r%d", i))
	}
	waitParked(t, e, n)
	// No reader goroutine per parked stream (keepalive writers come and go).
	waitFor(t, fmt.Sprintf("fewer than %d goroutines with %d parked streams", before+n/4, n),
		func() bool { return runtime.NumGoroutine() <= before+n/4 })

	// Input wakes each stream; it answers and parks again.
	for i, c := range cs {
		c.Send(fmt.Sprintf("<iq type='get' id='p%d'><ping xmlns='urn:xmpp:ping'/></iq>", i))
	}
	for i, c := range cs {
		c.Expect(fmt.Sprintf("id='p%d'", i), 10*time.Second)
	}
	// Messages between parked streams.
	cs[0].Send("<message to='alice@localhost/r1' id='m1'><body>hi</body></message>")
	cs[1].Expect("id='m1'", 10*time.Second)
	waitParked(t, e, n)

	// Keepalives go out while parked, and the stream stays parked.
	cs[2].Expect(" ", 5*time.Second)

	// The client drops its connection: the parked stream ends.
	cs[3].Drop()
	waitParked(t, e, n-1)
	waitFor(t, "the dropped connection forgotten", func() bool { return e.conns() == n-1 })

	// The server closes a parked stream: a new session with the same resource
	// replaces it with <conflict/>.
	dup := e.login(t, "alice", "r4")
	got := cs[4].Expect("</stream:stream>", 10*time.Second)
	if !strings.Contains(got, "conflict") {
		t.Fatalf("replaced stream ended with %q", got)
	}
	if !cs[4].Closed(5 * time.Second) {
		t.Fatal("the replaced stream's connection stayed open")
	}
	// (n-2 of the first streams and dup remain.)
	waitFor(t, "the replaced connection forgotten", func() bool { return e.conns() == n-1 })

	// Stop reaches every parked stream.
	waitParked(t, e, n-1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range append(cs, dup) {
		if i == 3 || i == 4 {
			continue
		}
		if got := c.Expect("</stream:stream>", 5*time.Second); !strings.Contains(got, "system-shutdown") {
			t.Fatalf("stream %d ended with %q", i, got)
		}
	}
	if p, _ := e.srv.poller.stats(); p != 0 || e.conns() != 0 {
		t.Fatalf("after stop: %d parked, %d connections", p, e.conns())
	}
}

// A stream parked before authentication still meets the authentication deadline.
func TestPollerAuthTimeout(t *testing.T) {
	e := start(t, func(c *Config) { c.ParkAfter = 10 * time.Millisecond; c.AuthTimeout = 400 * time.Millisecond })
	c := testenv.Dial(t, e.addr)
	c.StartTLS("localhost")
	got := c.Expect("</stream:stream>", 10*time.Second)
	if !strings.Contains(got, "connection-timeout") {
		t.Fatalf("unauthenticated stream ended with %q", got)
	}
	if _, parks := e.srv.poller.stats(); parks == 0 {
		t.Fatal("the stream was not parked")
	}
}

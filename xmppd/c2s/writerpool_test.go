package c2s

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"xedge/xmppd/internal/testenv"
)

// A fan-out to idle sessions runs their writers on the pool's parked goroutines:
// once the first round's writers have all parked, a second round starts a new
// goroutine only for copies that found every parked writer busy.
func TestWriterPoolReusesParkedWriters(t *testing.T) {
	e := start(t, nil)
	// Parked writers never time out here, so "all parked" is a state the test
	// can wait for: every goroutine the pool started is parked.
	e.srv.writers = newWriterPool(1<<20, time.Hour, e.srv.baseCtx.Done())
	const n = 12
	cs := make([]*testenv.Raw, n)
	for i := range cs {
		cs[i] = e.login(t, "alice", fmt.Sprintf("r%d", i))
	}
	round := func(k int) {
		for i := 1; i < n; i++ {
			cs[0].Send(fmt.Sprintf("<message to='alice@localhost/r%d' id='k%d-%d'><body>x</body></message>", i, k, i))
		}
		for i := 1; i < n; i++ {
			cs[i].Expect(fmt.Sprintf("id='k%d-%d'", k, i), 10*time.Second)
		}
	}
	round(1)
	p := e.srv.writers
	// A writer reused within round 1 serves several copies, so how many park
	// depends on timing; what holds is that all of them do.
	waitFor(t, "every started writer to park", func() bool { return int64(p.parked.Load()) == p.started.Load() })
	parked := int64(p.parked.Load())
	if parked == 0 {
		t.Fatal("no writer parked after the first fan-out")
	}
	before := p.started.Load()
	round(2)
	// The first `parked` copies each find a parked writer waiting; only the
	// rest can start goroutines.
	want := max(0, int64(n-1)-parked)
	if got := p.started.Load() - before; got > want {
		t.Fatalf("second fan-out started %d writer goroutines with %d parked; want at most %d", got, parked, want)
	}
}

// Parked writers exit after the idle timeout: a burst leaves no goroutines.
func TestWriterPoolParkedWritersExitWhenIdle(t *testing.T) {
	e := start(t, nil)
	e.srv.writers = newWriterPool(64, 200*time.Millisecond, e.srv.baseCtx.Done())
	alice := e.login(t, "alice", "a")
	bob := e.login(t, "bob", "b")
	for i := range 5 {
		alice.Send(fmt.Sprintf("<message to='bob@localhost/b' id='m%d'><body>x</body></message>", i))
		bob.Expect(fmt.Sprintf("id='m%d'", i), 10*time.Second)
	}
	p := e.srv.writers
	if p.started.Load() == 0 {
		t.Fatal("no writer ran on the pool")
	}
	waitFor(t, "parked writers to exit after the idle timeout", func() bool { return p.parked.Load() == 0 })
}

// A writer blocked on a client that does not read holds only its own goroutine:
// with at most one parked writer, the others' messages still go out.
func TestWriterPoolStuckClientBlocksOnlyItself(t *testing.T) {
	e := start(t, func(c *Config) { c.SendQueue = 100000 })
	e.srv.writers = newWriterPool(1, time.Minute, e.srv.baseCtx.Done())
	alice := e.login(t, "alice", "a")
	stuck := e.login(t, "bob", "stuck") // never reads
	_ = stuck
	bob := e.login(t, "bob", "b")
	big := make([]byte, 16000)
	for i := range big {
		big[i] = 'z'
	}
	// Fill the stuck client's socket buffers until its writer blocks in write.
	for i := 0; i < 200; i++ {
		alice.Send("<message to='bob@localhost/stuck'><body>" + string(big) + "</body></message>")
	}
	for i := 0; i < 20; i++ {
		alice.Send(fmt.Sprintf("<message to='bob@localhost/b' id='m%d'><body>%d</body></message>", i, i))
		bob.Expect(fmt.Sprintf("id='m%d'", i), 10*time.Second)
	}
}

// The batch writer never waits on a client: a session whose socket is full is
// handed to a writer of its own (its spilled bytes and everything queued after
// them), the others' messages keep going out meanwhile, and once the slow client
// reads it gets every stanza whole (TLS records never cut) and in order.
func TestBatchWriterHandsSlowClientToItsOwnWriter(t *testing.T) {
	e := start(t, func(c *Config) { c.SendQueue = 100000 })
	alice := e.login(t, "alice", "a")
	slow := e.login(t, "bob", "slow") // reads nothing until the end
	bob := e.login(t, "bob", "b")
	if e.srv.writers.maxBatchers < 1 {
		t.Fatal("no batch writers")
	}
	big := strings.Repeat("z", 16000)
	const n = 150
	for i := range n {
		alice.Send(fmt.Sprintf("<message to='bob@localhost/slow' id='s%d'><body>%s</body></message>", i, big))
		if i%10 == 0 { // the other session is served while the slow one's socket is full
			alice.Send(fmt.Sprintf("<message to='bob@localhost/b' id='m%d'><body>x</body></message>", i))
			bob.Expect(fmt.Sprintf("id='m%d'", i), 10*time.Second)
		}
	}
	if e.srv.writers.handedOn.Load() == 0 {
		t.Fatal("2.4 MB to a client that does not read: the batch writer never handed it on")
	}
	for i := range n {
		slow.Expect(fmt.Sprintf("id='s%d'", i), 20*time.Second)
	}
}

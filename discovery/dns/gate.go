package dns

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Gate admits a node into DNS only once its client port has accepted a TCP
// connection since it (re)appeared alive: a restarted node is gossiped alive
// before its listeners are up, and a client sent there would be refused. The
// check is one connect per appearance, made in the background; while it is
// pending the node is left out. It is safe for concurrent use.
type Gate struct {
	// Timeout bounds one connect (default 1s).
	Timeout time.Duration
	// Notify is called after a node was admitted (to republish at once).
	Notify func()
	// Dial connects (tests); default a TCP dial with Timeout.
	Dial func(ctx context.Context, addr string) (net.Conn, error)

	mu sync.Mutex
	m  map[string]*gateEntry
}

type gateEntry struct {
	addr     netip.AddrPort
	ok       bool
	inflight bool
	last     time.Time
}

// Admit reports whether node name at addr (its client address) may be
// published. alive false forgets the node, so its next appearance is checked
// again.
func (g *Gate) Admit(name string, addr netip.AddrPort, alive bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]*gateEntry{}
	}
	e := g.m[name]
	if !alive || !addr.IsValid() || addr.Port() == 0 {
		delete(g.m, name)
		return false
	}
	if e == nil || e.addr != addr {
		e = &gateEntry{addr: addr}
		g.m[name] = e
	}
	if e.ok {
		return true
	}
	if !e.inflight && time.Since(e.last) >= 200*time.Millisecond {
		e.inflight, e.last = true, time.Now()
		go g.probe(name, e)
	}
	return false
}

// Forget drops every node not in names.
func (g *Gate) Forget(keep map[string]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for n := range g.m {
		if !keep[n] {
			delete(g.m, n)
		}
	}
}

func (g *Gate) probe(name string, e *gateEntry) {
	to := g.Timeout
	if to <= 0 {
		to = time.Second
	}
	dial := g.Dial
	if dial == nil {
		d := net.Dialer{Timeout: to}
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), to)
	c, err := dial(ctx, e.addr.String())
	cancel()
	if err == nil {
		c.Close()
	}
	g.mu.Lock()
	e.inflight = false
	e.ok = err == nil
	still := g.m[name] == e
	g.mu.Unlock()
	if err == nil && still && g.Notify != nil {
		g.Notify()
	}
}

// Package clustertest has helpers for unit tests of the cluster bus and its
// users: a plain-TCP loopback Transport (the real one is the replicated
// store's TLS mux, whose key check the integration tests cover).
//
// It must not be imported by non-test code.
package clustertest

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Transport is a cluster.Transport over plain TCP on 127.0.0.1.
type Transport struct {
	ln    net.Listener
	mu    sync.Mutex
	fn    func(net.Conn)
	conns []*Conn // dialed since the last Blackhole
	all   []net.Conn
}

// New listens on a free loopback port; the listener closes at the test's end.
func New(t testing.TB) *Transport {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &Transport{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tr.mu.Lock()
				fn := tr.fn
				tr.mu.Unlock()
				if fn != nil {
					fn(c)
				}
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for _, c := range tr.all {
			c.Close()
		}
	})
	return tr
}

// Addr is the listener's address.
func (tr *Transport) Addr() string { return tr.ln.Addr().String() }

// HandleStream implements cluster.Transport.
func (tr *Transport) HandleStream(_ byte, fn func(net.Conn)) error {
	tr.mu.Lock()
	tr.fn = fn
	tr.mu.Unlock()
	return nil
}

// DialStream implements cluster.Transport. The connection can be made a
// blackhole later (Blackhole).
func (tr *Transport) DialStream(ctx context.Context, addr string, _ byte) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	bc := &Conn{Conn: c, closed: make(chan struct{})}
	tr.mu.Lock()
	tr.conns = append(tr.conns, bc)
	tr.all = append(tr.all, c)
	tr.mu.Unlock()
	return bc, nil
}

// Blackhole makes every connection dialed so far drop what goes through it,
// as a network that drops packets does (a cut cable, a firewall that lost
// its connection state): nothing fails and nothing arrives. out drops what
// this side writes, in what the other side writes. Connections dialed later
// work.
func (tr *Transport) Blackhole(out, in bool) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, c := range tr.conns {
		if out {
			c.dropOut.Store(true)
		}
		if in {
			c.dropIn.Store(true)
		}
	}
	n := len(tr.conns)
	tr.conns = nil
	return n
}

// Conn is a dialed connection that Blackhole can silence.
type Conn struct {
	net.Conn
	dropOut, dropIn atomic.Bool
	once            sync.Once
	closed          chan struct{}
}

// Write discards b once the connection drops what this side writes.
func (c *Conn) Write(b []byte) (int, error) {
	if c.dropOut.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// Read never returns data once the connection drops what the other side
// writes (nor its end of stream): it waits for Close.
func (c *Conn) Read(b []byte) (int, error) {
	if !c.dropIn.Load() {
		n, err := c.Conn.Read(b)
		if !c.dropIn.Load() {
			return n, err
		}
	}
	<-c.closed
	return 0, net.ErrClosed
}

// Close closes the connection (silently, if it drops what this side writes:
// the other side sees nothing).
func (c *Conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	if c.dropOut.Load() {
		// The close (FIN) is dropped too: the other side's socket stays
		// open until it gives up by itself. Ours closes at the test's end.
		return nil
	}
	return c.Conn.Close()
}

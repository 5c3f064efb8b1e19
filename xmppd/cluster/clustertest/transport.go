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
	"testing"
)

// Transport is a cluster.Transport over plain TCP on 127.0.0.1.
type Transport struct {
	ln net.Listener
	mu sync.Mutex
	fn func(net.Conn)
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
	t.Cleanup(func() { ln.Close() })
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

// DialStream implements cluster.Transport.
func (tr *Transport) DialStream(ctx context.Context, addr string, _ byte) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

//go:build integration

package server_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xedge/bench/loadgen"
	"xedge/bench/workload"
	"xedge/xmppd/internal/testenv"
)

// A reconnect wave: every client of a SIGKILLed node logs in again on the
// survivors at once (STARTTLS + SCRAM, as clients do) and each is admitted at
// its first attempt: no failed login, every session back (the 5,000-session
// figure is `make bench-cluster`; this is the same wave at CI size).
func TestClusterReconnectWave(t *testing.T) {
	const n = 300
	nodes, _ := testenv.StartCluster(t, testenv.ClusterOptions{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	target := &workload.Target{Name: "xmppd", Addr: nodes[0].Addr(), Domain: nodes[0].Domain, Log: quiet}
	if err := workload.Register(ctx, target, "w", n); err != nil {
		t.Fatal(err)
	}
	opts := func(addr string) loadgen.Options {
		return loadgen.Options{Addr: addr, Domain: nodes[0].Domain, StartTLS: true, Resource: "wave", Timeout: 30 * time.Second}
	}
	var mu sync.Mutex
	conns := make([]*loadgen.Conn, n)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Abort()
			}
		}
	})
	// Every user on node3 (a login retried there is not part of the figure).
	if err := workload.Parallel(ctx, n, 50, func(ctx context.Context, i int) error {
		u, p := workload.User("w", i)
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			var c *loadgen.Conn
			if c, err = loadgen.Login(ctx, opts(nodes[2].Addr()), u, p); err == nil {
				mu.Lock()
				conns[i] = c
				mu.Unlock()
				return nil
			}
		}
		return err
	}); err != nil {
		t.Fatalf("logins on node3: %v", err)
	}
	waitCtl(t, nodes[2], strconv.Itoa(n)+"\n", "connected_users_number")

	nodes[2].Kill()
	killed := time.Now()
	for _, c := range conns {
		c.Abort()
	}
	var failed atomic.Int64
	var firstErr atomic.Value
	err := workload.Parallel(ctx, n, n, func(ctx context.Context, i int) error {
		u, p := workload.User("w", i)
		addr := nodes[i%2].Addr()
		for attempt := 0; attempt < 5; attempt++ {
			c, err := loadgen.Login(ctx, opts(addr), u, p)
			if err == nil {
				mu.Lock()
				conns[i] = c
				mu.Unlock()
				return nil
			}
			failed.Add(1)
			firstErr.CompareAndSwap(nil, u+": "+err.Error())
			time.Sleep(500 * time.Millisecond)
		}
		return nil
	})
	took := time.Since(killed)
	if err != nil {
		t.Fatal(err)
	}
	if f := failed.Load(); f != 0 {
		t.Errorf("%d failed login attempts in the wave (first: %v)", f, firstErr.Load())
	}
	back := 0
	for _, nd := range nodes[:2] {
		o, e, code := nd.Ctl("connected_users_number")
		v, perr := strconv.Atoi(strings.TrimSpace(o))
		if code != 0 || perr != nil {
			t.Fatalf("connected_users_number on %s: %d %q %s", nd.Name, code, o, e)
		}
		back += v
	}
	if back != n {
		t.Errorf("%d of %d sessions back on the survivors", back, n)
	}
	t.Logf("%d STARTTLS sessions of the killed node back on the survivors %v after the kill, %d failed attempts", back, took.Round(time.Millisecond), failed.Load())
}

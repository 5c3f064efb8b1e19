package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"xedge/storage"
	"xedge/storage/replicated"
	"xedge/xmppd/config"
	"xedge/xmppd/internal/testenv"
)

func parse(t *testing.T, args ...string) *config.Config {
	t.Helper()
	c, _, err := config.Parse("xmppd", args)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A single node on a file device: storage/local built in Start, data kept across
// a restart, and nothing usable before Start.
func TestLazyStoreLocalDevice(t *testing.T) {
	dir := t.TempDir()
	cfg := parse(t, "--data", dir, "--storage", "file:"+filepath.Join(dir, "img")+"?size=1048576")
	ctx := context.Background()
	st, err := newStore(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(ctx, storage.Put("t", "k", nil)); err == nil {
		t.Fatal("Apply before Start succeeded")
	}
	st.Ephemeral("x").Put("k", nil) // no panic before Start
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Declare(ctx, storage.TableSpec{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(ctx, storage.Put("t", "k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
	if err := st.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	st2, _ := newStore(cfg, slog.New(slog.DiscardHandler))
	if err := st2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer st2.Stop(ctx)
	tab, err := st2.Durable("t")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := tab.Get("k"); !ok || string(v) != "v" {
		t.Fatalf("after restart: %q %v", v, ok)
	}
	if st2.Status().Mode != "durable" {
		t.Fatalf("%+v", st2.Status())
	}
}

// A one-node cluster: bootstraps, is leader and voter, does not leave on stop (it
// is the last voter), and a failed join names the seeds' last error.
func TestLazyStoreClusterOfOne(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	key := "0123456789abcdef-test"
	cfg := parse(t, "--data", dir, "--node-name", "solo", "--cluster-addr", addr, "--cluster-key", key,
		"--storage", "file:"+filepath.Join(dir, "img")+"?size=8388608", "--raft-heartbeat-timeout", "300ms",
		"--raft-election-timeout", "300ms", "--raft-lease-timeout", "150ms", "--raft-report-interval", "50ms")
	logs := &syncWriter{w: new(bytes.Buffer)}
	log := slog.New(slog.NewTextHandler(logs, nil))
	st, err := newStore(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Replica states come with the durable tables (xmppd always has some).
	if err := st.Declare(ctx, storage.TableSpec{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	s := st.Status()
	if s.Leader != "solo" || s.Role != "voter" || s.Mode != "durable" || s.Backend != "raft+blockdev" {
		t.Fatalf("%+v", s)
	}
	if r := replicas(st); len(r) != 1 || !strings.HasPrefix(r["solo"], "voter/durable/leader") {
		t.Fatalf("replicas %v", r)
	}
	// storage.CatchUp reaches the replicated store through the wrapper.
	if _, ok := st.(storage.ReadBarrier); !ok {
		t.Fatal("the clustered store does not pass read barriers on")
	}
	if err := storage.CatchUp(ctx, st); err != nil {
		t.Fatalf("read barrier: %v", err)
	}
	ls := st.(*lazyStore)
	if ok, why := ls.rep.LeaveSafe(); ok || !strings.Contains(why, "0 other voter") {
		t.Fatalf("leaveSafe on the only voter: %v %q", ok, why)
	}
	if err := st.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "stopping without leaving") {
		t.Fatalf("log: %s", logs.String())
	}

	// A node joining a seed where nobody listens fails within join-timeout.
	dir2 := t.TempDir()
	cfg2 := parse(t, "--data", dir2, "--node-name", "lost", "--cluster-addr", "127.0.0.1:1", "--cluster-key", key,
		"--join", addr, "--join-timeout", "1s", "--raft-report-interval", "50ms")
	cfg2.ClusterAddr = freeAddr(t)
	st2, err := newStore(cfg2, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = st2.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot join the cluster") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("join without a seed: %v", err)
	}
	// The cause stays typed through the wiring (no log text is matched).
	var je *replicated.JoinError
	if !errors.As(err, &je) || je.Addr != addr || !errors.Is(err, replicated.ErrUnreachable) {
		t.Fatalf("join without a seed: %T %v, want a *replicated.JoinError for %s that is ErrUnreachable", err, err, addr)
	}
	st2.Stop(ctx)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return testenv.FreeAddr(t, "127.0.0.1")
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

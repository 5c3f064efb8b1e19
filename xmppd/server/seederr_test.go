package server

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSeedErrHandler: a node whose cluster key differs from its seed's fails to
// join, and the start error carries the seeds' last error, even though the log
// level hides warnings. It drives the real replicated store, so a change in how
// storage/replicated reports the cause shows here instead of silently losing it.
func TestSeedErrHandler(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seedAddr := freeAddr(t)
	dir := t.TempDir()
	seedCfg := parse(t, "--data", dir, "--node-name", "seed", "--cluster-addr", seedAddr, "--cluster-key", "0123456789abcdef-right",
		"--storage", "file:"+filepath.Join(dir, "img")+"?size=8388608", "--raft-heartbeat-timeout", "300ms",
		"--raft-election-timeout", "300ms", "--raft-lease-timeout", "150ms", "--raft-report-interval", "50ms")
	seed, err := newStore(seedCfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := seed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer seed.Stop(context.Background())

	dir2 := t.TempDir()
	cfg := parse(t, "--data", dir2, "--node-name", "stranger", "--cluster-addr", freeAddr(t), "--cluster-key", "0123456789abcdef-WRONG",
		"--join", seedAddr, "--join-timeout", "2s", "--raft-report-interval", "50ms")
	var logs syncWriter
	logs.w = new(bytes.Buffer)
	st, err := newStore(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Start(ctx)
	st.Stop(context.Background())
	if err == nil {
		t.Fatal("a node with the wrong cluster key joined")
	}
	msg := err.Error()
	i := strings.Index(msg, "last error from the seeds: ")
	if i < 0 {
		t.Fatalf("start error lacks the seeds' last error (message of storage/replicated changed?): %v", err)
	}
	if cause := strings.TrimSpace(msg[i+len("last error from the seeds: "):]); cause == "" {
		t.Fatalf("empty seed error: %v", err)
	}
	t.Logf("start error: %v", err)
	if strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("a warning passed an error-level handler:\n%s", logs.String())
	}
}

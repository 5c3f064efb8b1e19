package workload

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"xedge/bench/loadgen"
)

// MemoryResult is the idle-session memory measurement.
type MemoryResult struct {
	Sessions        int     `json:"sessions"`
	Users           int     `json:"users"`
	TLS             bool    `json:"tls"`
	BaselineRSS     int64   `json:"baseline_rss_bytes"`
	LoadedRSS       int64   `json:"loaded_rss_bytes"`
	BytesPerSession float64 `json:"bytes_per_session"`
	LoginSeconds    float64 `json:"login_seconds"`
}

// IdleMemory restarts the server (a fresh process, so earlier phases leave no
// heap behind), reads its RSS, logs n sessions in (STARTTLS or plain) spread over
// `users` accounts (one session per account when users >= n) and holds them
// idle; after a settling pause it reads the RSS again. The figure is
// (loaded - baseline) / n.
func IdleMemory(ctx context.Context, t *Target, prefix string, n, users int, tls bool, settle time.Duration) (MemoryResult, error) {
	r := MemoryResult{Sessions: n, Users: min(max(users, 1), n), TLS: tls}
	if t.Restart != nil {
		if err := t.Restart(ctx); err != nil {
			return r, fmt.Errorf("restart: %w", err)
		}
	}
	time.Sleep(settle)
	base, err := t.RSS()
	if err != nil {
		return r, err
	}
	r.BaselineRSS = base
	start := time.Now()
	conns, err := loginAll(ctx, t, prefix, n, users, tls)
	if err != nil {
		if errors.Is(err, loadgen.ErrTLSRequired) {
			return r, fmt.Errorf("%s requires STARTTLS: no plaintext-session figure: %w", t.Name, err)
		}
		return r, err
	}
	defer closeAll(conns)
	r.LoginSeconds = time.Since(start).Seconds()
	runtime.GC() // our own garbage, not the server's: keeps the client lean while we wait
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	loaded, err := t.RSS()
	if err != nil {
		return r, err
	}
	r.LoadedRSS = loaded
	r.BytesPerSession = float64(loaded-base) / float64(n)
	t.Log.Info("idle memory", "server", t.Name, "tls", tls, "sessions", n,
		"kb_per_session", fmt.Sprintf("%.1f", r.BytesPerSession/1024))
	return r, nil
}

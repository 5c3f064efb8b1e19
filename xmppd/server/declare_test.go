package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"xedge/storage"
	"xedge/xmppd/config"
	"xedge/xmppd/internal/memstore"
)

// flakyDeclare is a store whose first Declare calls fail as raft does while a
// leader is lost during a commit.
type flakyDeclare struct {
	*memstore.Store
	fails int
	calls int
}

func (f *flakyDeclare) Declare(ctx context.Context, spec storage.TableSpec) error {
	f.calls++
	if f.calls <= f.fails {
		return fmt.Errorf("%w: leadership lost while committing log", storage.ErrUnavailable)
	}
	return f.Store.Declare(ctx, spec)
}
func (f *flakyDeclare) Start(context.Context) error { return nil }
func (f *flakyDeclare) Stop(context.Context) error  { return nil }

func TestDeclareRetriesWhileRaftSettles(t *testing.T) {
	cfg := config.Defaults()
	cfg.ClusterAddr, cfg.JoinTimeout = "127.0.0.1:7401", 5*time.Second
	f := &flakyDeclare{Store: memstore.New("n1"), fails: 3}
	l := &lazyStore{cfg: &cfg, log: slog.New(slog.DiscardHandler)}
	l.inner.Store(&innerStore{f})
	if err := l.Declare(context.Background(), storage.TableSpec{Name: "vcard"}); err != nil {
		t.Fatalf("Declare: %v (after %d calls)", err, f.calls)
	}
	if f.calls != 4 {
		t.Errorf("Declare called %d times, want 4", f.calls)
	}
	if _, err := l.Durable("vcard"); err != nil {
		t.Errorf("table not declared: %v", err)
	}
}

func TestDeclareGivesUpAtJoinTimeout(t *testing.T) {
	cfg := config.Defaults()
	cfg.ClusterAddr, cfg.JoinTimeout = "127.0.0.1:7401", 300*time.Millisecond
	f := &flakyDeclare{Store: memstore.New("n1"), fails: 1 << 30}
	l := &lazyStore{cfg: &cfg, log: slog.New(slog.DiscardHandler)}
	l.inner.Store(&innerStore{f})
	start := time.Now()
	err := l.Declare(context.Background(), storage.TableSpec{Name: "vcard"})
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Declare = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %v, join timeout 300ms", d)
	}
}

func TestDeclareSingleNodeDoesNotRetry(t *testing.T) {
	cfg := config.Defaults()
	f := &flakyDeclare{Store: memstore.New("n1"), fails: 1}
	l := &lazyStore{cfg: &cfg, log: slog.New(slog.DiscardHandler)}
	l.inner.Store(&innerStore{f})
	if err := l.Declare(context.Background(), storage.TableSpec{Name: "vcard"}); !errors.Is(err, storage.ErrUnavailable) || f.calls != 1 {
		t.Fatalf("Declare = %v after %d calls, want one ErrUnavailable", err, f.calls)
	}
}

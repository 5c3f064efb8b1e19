package migrate

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"xedge/storage"
)

// flakyStore fails its first n Applies with err (a raft election in progress),
// then passes them to the store underneath.
type flakyStore struct {
	storage.Store
	n     int
	err   error
	calls int
}

func (f *flakyStore) Apply(ctx context.Context, ops ...storage.Op) error {
	f.calls++
	if f.calls <= f.n {
		return f.err
	}
	return f.Store.Apply(ctx, ops...)
}

func TestApplyRetryWaitsOutUnavailable(t *testing.T) {
	st := newStore(t)
	if err := st.Declare(context.Background(), storage.TableSpec{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	f := &flakyStore{Store: st, n: 3, err: fmt.Errorf("no leader: %w", storage.ErrUnavailable)}
	if err := applyRetry(context.Background(), f, []storage.Op{storage.Put("t", "k", []byte("v"))}); err != nil {
		t.Fatalf("applyRetry: %v", err)
	}
	if f.calls != 4 {
		t.Errorf("%d applies, want 4 (three unavailable, then the write)", f.calls)
	}
	tb, err := st.Durable("t")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := tb.Get("k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("row after retries: %q %v %v", v, ok, err)
	}

	// Another error is returned at once; a cancelled context ends the wait.
	other := errors.New("disk on fire")
	f = &flakyStore{Store: st, n: 1, err: other}
	if err := applyRetry(context.Background(), f, nil); !errors.Is(err, other) || f.calls != 1 {
		t.Errorf("other error: %v after %d applies", err, f.calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	f = &flakyStore{Store: st, n: 1 << 30, err: storage.ErrUnavailable}
	if err := applyRetry(ctx, f, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled wait: %v", err)
	}
}
